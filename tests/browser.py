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


async def wait_for(page: Any, predicate: str, arg: Any = None, timeout_s: float = 120) -> None:
    """page.wait_for_function; on a timeout, a "failure" screenshot of what it showed."""
    try:
        await page.wait_for_function(predicate, arg=arg, timeout=timeout_s * 1000)
    except Exception:
        await screenshot(page, "failure")  # what the page showed when the wait gave up
        raise


def tile(slot: str) -> str:
    """The CSS selector of a slot's tile on the bench page."""
    return f'.tile[data-slot="{slot}"]'


# Words that stay as they are in Chinese too (names of things, units).
KEEP = {"IMEI", "PDF", "USB", "ID", "IMEI/SN", "SIM", "API"}


async def untranslated(page: Any) -> list[str]:
    """Visible words in Latin letters outside `.raw` (phone / operator / slot data)."""
    words: list[str] = await page.evaluate("""() => {
        const out = [];
        const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
        for (let n = walker.nextNode(); n; n = walker.nextNode()) {
            const el = n.parentElement;
            if (!el || el.closest('.raw') || el.closest('.hidden')) continue;
            if (getComputedStyle(el).display === 'none') continue;
            out.push(...(n.textContent.match(/[A-Za-z][A-Za-z'-]+/g) || []));
        }
        for (const el of document.querySelectorAll('[placeholder],[aria-label],[title]')) {
            if (el.closest('.raw')) continue;
            for (const a of ['placeholder', 'aria-label', 'title']) {
                const v = el.getAttribute(a);
                if (v && !el.closest('.tile')) out.push(...(v.match(/[A-Za-z][A-Za-z'-]+/g) || []));
            }
        }
        return out;
    }""")
    return sorted({w for w in words if w not in KEEP})


def page_errors(page: Any) -> list[str]:
    """The page's errors from now on, to assert empty: uncaught exceptions, and console
    errors (a Content-Security-Policy refusal of an inline style or a foreign script is
    a console error, not a page error)."""
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    return errors
