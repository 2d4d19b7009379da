"""The demo's reference platform, over a journal the way the demo leaves it."""

from __future__ import annotations

import asyncio

from uplink_fixtures import Bench, eventually

from wipeagent.clock import Clock
from wipeagent.session import SessionEvent
from wipeagent.uplink.demo import DemoPlatform


async def test_demo_platform_delivers_all(bench: Bench) -> None:
    rows = await bench.issue(4)
    async with DemoPlatform(bench.root, bench.clock, station_id="bench-01") as platform:
        report = await platform.deliver(bench.store)
        assert report.summary("the reference receiver") == (
            "delivered 4/4 certificates to the reference receiver")
        assert platform.receiver is not None
        assert platform.receiver.held() == {r.certificate_id: r.data for r in rows}


async def test_uplink_beside_the_agent_is_woken_by_finished_sessions(bench: Bench) -> None:
    # Real time: the idle poll is 5 s, so delivery within 2 s proves the wake-up.
    async with DemoPlatform(bench.root, Clock(1.0)) as platform:
        uplink = platform.uplink(bench.store)
        task = asyncio.create_task(uplink.run())
        try:
            await asyncio.sleep(0.05)  # idle: nothing to send
            (row,) = await bench.issue(1)
            uplink.observe(SessionEvent("slot-1", "s", "done", "erased"))
            assert platform.receiver is not None
            receiver = platform.receiver
            # Well before the 5 s idle poll would have found it.
            await eventually(lambda: row.certificate_id in receiver.held(), 2)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
