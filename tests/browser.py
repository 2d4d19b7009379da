"""A real browser for the page tests: Debian's chromium (/usr/bin/chromium, installed by
`scripts/setup --test`) driven by Playwright as a driver only (no browser download).

    async with chromium(tmp_path) as context:
        page = await context.new_page()

Each context has a fresh --user-data-dir under the test's tmp_path. Screenshots go to
artifacts/screenshots/ (gitignored): `await screenshot(page, "bench-en")`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# Chromium on a machine without a network: no background connections, no GPU, no QUIC.
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"
VIEWPORT = {"width": 1920, "height": 1080}


def need_chromium() -> None:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (scripts/setup --test installs it)")


@asynccontextmanager
async def chromium(tmp_path: Path, *, locale: str = "en-US") -> AsyncIterator[Any]:
    """A persistent Chromium context with a fresh profile directory, 1920x1080."""
    need_chromium()
    from playwright.async_api import async_playwright

    async with async_playwright() as driver:
        context = await driver.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), args=ARGS,
            headless=True, viewport=VIEWPORT, locale=locale, timeout=60_000)
        try:
            yield context
        finally:
            await context.close()


async def screenshot(page: Any, name: str) -> Path:
    """Save a full-viewport PNG as a test artifact; returns its path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path))
    return path
