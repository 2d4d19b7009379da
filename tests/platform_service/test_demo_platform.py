"""The demo's platform service, over a journal the way the demo leaves it."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

# The journal-with-certificates helpers of the uplink tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "uplink"))

from uplink_fixtures import Bench, make_bench

from wipeagent.clock import Clock
from wipeagent.platform_service.demo import DemoPlatform
from wipeagent.session import SessionEvent
from wipeagent.store import Store


@pytest.fixture
async def bench(tmp_path: Path) -> AsyncIterator[Bench]:
    store = await Store(tmp_path / "journal.sqlite3").open()
    try:
        yield make_bench(tmp_path, store)
    finally:
        await store.close()


async def test_demo_platform_delivers_all_and_links_to_the_page(bench: Bench) -> None:
    rows = await bench.issue(4)
    async with DemoPlatform(bench.root, bench.clock, station_id="bench-01") as platform:
        report = await platform.deliver(bench.store)
        assert report.summary("the platform service") == (
            "delivered 4/4 certificates to the platform service")
        assert await platform.held() == {r.certificate_id: r.data for r in rows}
        link = platform.link(rows[0])
        assert link.startswith("http://127.0.0.1:") and "/verify?id=" in link
        assert f"sha256={rows[0].sha256}" in link
        async with aiohttp.ClientSession() as http, http.get(link) as response:
            assert response.status == 200 and "verify.js" in await response.text()


async def test_uplink_beside_the_agent_is_woken_by_finished_sessions(bench: Bench) -> None:
    # Real time: the idle poll is 5 s, so delivery within 2 s proves the wake-up.
    async with DemoPlatform(bench.root, Clock(1.0), station_id="bench-01") as platform:
        uplink = platform.uplink(bench.store)
        task = asyncio.create_task(uplink.run())
        try:
            await asyncio.sleep(0.05)  # idle: nothing to send
            (row,) = await bench.issue(1)
            uplink.observe(SessionEvent("slot-1", "s", "done", "erased"))
            held: dict[str, bytes] = {}

            async def poll() -> None:
                while row.certificate_id not in held:
                    held.update(await platform.held())
                    await asyncio.sleep(0.02)
            async with asyncio.timeout(2):  # well before the 5 s idle poll
                await poll()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
