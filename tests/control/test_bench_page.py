"""The bench page end to end: a simulated bench of 12 phones, the real agent, the page
served by the agent, and Debian's chromium driven by Playwright (tests/browser.py)."""

from __future__ import annotations

import asyncio
import io
import re
from pathlib import Path
from typing import Any

import pytest
from browser import chromium, page_errors, screenshot, untranslated
from browser import tile as _tile
from browser import wait_for as _wait

from wipeagent.control.page import BenchPage
from wipeagent.i18n import translator
from wipeagent.i18n.messages import NEEDS

PROFILES = ["pixel8-clean", "unencrypted", "rooted", "android9", "locked", "samsung-frp",
            "bad-hang", "bad-disconnect", "bad-metachar", "bad-utf8", "bad-checksum",
            "bad-malformed"]
WAITING = ("pixel8-clean", "unencrypted", "rooted", "android9")


@pytest.mark.timeout(900)
async def test_bench_page_end_to_end(control_bench: Any, tmp_path: Path) -> None:
    # A slower bench clock than the other control tests: twelve phones, a browser and the
    # agent share two loaded cores, and timeouts shrink with the clock's speed.
    async with control_bench(PROFILES, start=False, speed=10) as h:
        h.start(completed=10_000)  # faulty phones fail again and again; never stop for them
        page_server = BenchPage(h.server, h.config, listen="127.0.0.1:0")
        await page_server.start()
        try:
            async with chromium(tmp_path) as context:
                page = await context.new_page()
                errors = page_errors(page)
                await page.goto(page_server.url)
                # Every phone gets a tile.
                await _wait(page, "n => document.querySelectorAll('.tile').length >= n", 12)
                # The locked phone shows what to do about it, in words.
                locked = h.slots["locked"]
                instruction = NEEDS["remove_lock_screen"]
                await _wait(page, "([sel, text]) => { const t = document.querySelector(sel);"
                                  " return t && t.textContent.includes(text); }",
                            [_tile(locked), instruction[:40]])
                # The phones that wait for a technician stand out and are counted.
                await _wait(page, "n => document.querySelectorAll('.tile.needs_you').length >= n",
                            len(WAITING) + 1)
                waiting = [h.slots[p] for p in WAITING]
                for slot in waiting:
                    await _wait(page, "s => document.querySelector(s)?.dataset.state === "
                                      "'needs_you'", _tile(slot))
                await _wait(page, "() => /\\(4\\)/.test(document.querySelector('#confirm-all')"
                                  ".textContent)")
                await screenshot(page, "bench-en-waiting")

                # Confirm all: nobody is signed in, so the page asks first.
                await page.click("#confirm-all")
                await page.fill("#operator", "j.smith")
                await page.fill("#secret", h.pin)
                await page.click("form.signin button[type=submit]")
                await page.wait_for_selector(".operator .who")
                # "Identify" the Pixel while it waits: its screen lights (the simulated
                # phone counts `input keyevent KEYCODE_WAKEUP`) and its tile flashes.
                pixel = h.slots["pixel8-clean"]
                await page.click(f'.need-item[data-slot="{pixel}"] .identify-btn')
                await page.wait_for_selector(_tile(pixel) + ".identify")
                await _wait(page, "() => document.querySelector('#toast').textContent"
                                  ".includes('lit its screen')")
                pixel_phone = next(e.phone for e in h.sim.phones if e.profile == "pixel8-clean")
                assert pixel_phone.counters.screen_wakeups == 1
                await page.click("#confirm-all")
                # The three software erases finish erased; the Nokia asks for its reset.
                for profile in ("pixel8-clean", "unencrypted", "rooted"):
                    await _wait(page, "s => document.querySelector(s)?.dataset.state === "
                                      "'erased'", _tile(h.slots[profile]), timeout_s=300)
                android9 = h.slots["android9"]
                await _wait(page, "s => document.querySelector(s)?.dataset.state === "
                                  "'needs_you'", _tile(android9))
                await page.click(_tile(android9))
                await page.wait_for_selector(".detail .manual li button")
                await page.click(".detail .manual li button")  # step 1 done
                await _wait(page, "() => document.querySelectorAll("
                                  "'.detail .manual li.done').length === 1")
                await screenshot(page, "bench-en-manual-reset")
                nokia = next(e for e in h.sim.phones if e.profile == "android9")
                await nokia.phone.perform_manual_factory_reset()
                nokia.phone.enable_usb_debugging()
                async with h.clock.timeout(900):
                    while not nokia.phone.accept_pending_authorisation():
                        await h.clock.sleep(1)
                await _wait(page, "s => ['erased'].includes(document.querySelector(s)?.dataset"
                                  ".state)", _tile(android9), timeout_s=300)
                for profile in ("pixel8-clean", "unencrypted", "rooted"):
                    entry = next(e for e in h.sim.phones if e.profile == profile)
                    assert entry.phone.counters.power_cycles >= 1
                for profile in ("locked", "samsung-frp"):
                    entry = next(e for e in h.sim.phones if e.profile == profile)
                    assert entry.phone.counters.power_cycles == 0

                # A phone erased with exceptions names them (from their codes).
                await page.click(_tile(h.slots["rooted"]))
                await page.wait_for_selector(".detail h3")
                assert await page.locator(".detail h3").inner_text() == "Exceptions"
                assert await page.locator(".detail ul li").count() >= 1
                await page.click(".detail .close")
                # A finished phone links to its PDF certificate, which opens.
                await page.click(_tile(h.slots["pixel8-clean"]))
                link = page.locator(".detail a.pdf")
                await link.wait_for()
                href = await link.get_attribute("href")
                assert href is not None and href.endswith("lang=en")
                async with context.expect_page() as opened:
                    await link.click()
                viewer = await opened.value
                await viewer.wait_for_load_state()
                assert re.search(r"/certificates/[0-9a-f-]{36}\.pdf", viewer.url)
                response = await context.request.get(page_server.url.rstrip("/") + href)
                assert response.status == 200
                assert response.headers["content-type"] == "application/pdf"
                assert (await response.body()).startswith(b"%PDF-")
                await viewer.close()
                await page.click(".detail .close")

                # The counts at the top add up.
                counts = await page.evaluate("() => Object.fromEntries([...document."
                                             "querySelectorAll('.count')].map(c => "
                                             "[c.dataset.state, +c.querySelector('.n')"
                                             ".textContent]))")
                await screenshot(page, "bench-en-done")
                assert counts["erased"] >= 4 and sum(counts.values()) == 12, counts

                # Chinese: the operator picks it; nothing left in English.
                await page.select_option("#lang", "zh-CN")
                zh = translator("zh-CN")
                await _wait(page, "t => document.querySelector('#sign-out')?.textContent === t",
                            zh("Sign out"))
                await page.click(_tile(locked))
                await page.wait_for_selector(".detail")
                leftovers = await untranslated(page)
                await screenshot(page, "bench-zh-done")
                assert leftovers == [], leftovers
                assert await page.locator(_tile(locked)).inner_text() != ""
                assert zh(instruction)[:10] in await page.locator(_tile(locked)).inner_text()
                assert errors == []
        finally:
            await page_server.close()
            await asyncio.sleep(0)


@pytest.mark.timeout(600)
async def test_demo_serves_the_bench_page_while_its_phones_run(tmp_path: Path) -> None:
    """`wipeagent demo` (scripts/demo) prints the page's address; the demo's twelve
    phones appear on it while they run."""
    from rich.console import Console

    from wipeagent_sim.demo import run_demo

    urls: asyncio.Queue[str] = asyncio.Queue()
    buffer = io.StringIO()
    demo = asyncio.create_task(run_demo(
        tmp_path / "out", speed=5, console=Console(file=buffer, width=200),
        page="127.0.0.1:0", on_page=urls.put_nowait))
    try:
        url = await asyncio.wait_for(urls.get(), 120)
        async with chromium(tmp_path) as context:
            page = await context.new_page()
            await page.goto(url)
            await _wait(page, "n => document.querySelectorAll('.tile').length >= n", 12)
            # While they run: something is still working.
            await _wait(page, "() => +document.querySelector('.count.working .n')"
                              ".textContent > 0")
            await screenshot(page, "demo-running")
        assert await asyncio.wait_for(demo, 400) == 0, buffer.getvalue()
    finally:
        demo.cancel()
        await asyncio.gather(demo, return_exceptions=True)
    assert f"bench page: {url}" in buffer.getvalue()
