"""`wipeagent demo --platform --serve`, as a person runs it: the bench runs, every
certificate reaches the platform service, the link one phone's QR code carries is
printed, the service stays up, and opening the link in a browser verifies the
certificate (a link with a changed hash does not); Ctrl-C stops it."""

from __future__ import annotations

import asyncio
import re
import signal
import sqlite3
import sys
from pathlib import Path

from browser import chromium, screenshot

LINK = re.compile(r"^(http://127\.0\.0\.1:\d+/verify\?id=[0-9a-f-]{36}&sha256=([0-9a-f]{64}))$")


async def test_demo_platform_serve(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wipeagent.cli", "demo", "--platform", "--serve", "--speed",
        "50", "--out", str(out), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    assert proc.stdout is not None
    log: list[str] = []
    link = None
    try:
        async with asyncio.timeout(300):
            while link is None:
                line = (await proc.stdout.readline()).decode()
                assert line, "the demo ended early:\n" + "".join(log[-40:])
                log.append(line)
                found = LINK.match(line.strip())
                link = found[1] if found else None
            while "Ctrl-C to stop" not in log[-1]:
                log.append((await proc.stdout.readline()).decode())
        text = "".join(log)
        assert "12/12 phones ended as their profiles expect" in text, text
        # Every certificate reached the platform service over mutual TLS, exactly once.
        issued = sorted((out / "state/certificates").glob("*.jws.json"))
        db = sqlite3.connect(out / "state/platform/platform.sqlite3")
        try:
            held = {cid: bytes(data) for cid, data in
                    db.execute("SELECT certificate_id, data FROM certificates")}
        finally:
            db.close()
        assert len(held) == len(issued) > 0
        assert sorted(held.values()) == sorted(p.read_bytes() for p in issued)
        assert f"delivered {len(issued)}/{len(issued)} certificates to the platform" in text
        # A person opens the link while the service is up.
        digest = LINK.match(link)[2]  # type: ignore[index]
        changed = link.replace(digest, ("0" if digest[0] != "0" else "1") + digest[1:])
        async with chromium(tmp_path, locale="en-US") as context:
            page = await context.new_page()
            await page.set_viewport_size({"width": 390, "height": 844})
            await page.goto(link)
            verdict = page.locator("#verdict[data-state=valid], #verdict[data-state=invalid]")
            await verdict.wait_for(timeout=30_000)
            assert await verdict.get_attribute("data-state") == "valid", \
                await verdict.get_attribute("data-reason")
            # The demo signs with a development PKI, and the page says so.
            assert await page.locator("#development").count() == 1
            assert await page.locator("#outcome").get_attribute("data-outcome") == "erased"
            await screenshot(page, "verify-demo-link-en-390x844")
            await page.goto(changed)
            await verdict.wait_for(timeout=30_000)
            assert await verdict.get_attribute("data-reason") == "not_found"
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)  # Ctrl-C
        async with asyncio.timeout(30):
            code = await proc.wait()
    assert code == 0, "".join(log[-40:])
