"""The agent process killed (SIGKILL) in the middle of an upload, then restarted."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from uplink_fixtures import SPEED, Bench, eventually

from wipeagent.uplink.client import UplinkSettings, deliver_all
from wipeagent.uplink.receiver import Faults

CHILD = Path(__file__).with_name("uplink_child.py")


async def test_killed_mid_upload_then_restarted(bench: Bench) -> None:
    await bench.issue(3)
    faults = Faults(delays=[1e6])  # the first request is stored, then never answered
    async with bench.receiver(faults=faults) as receiver:
        root = bench.root
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(CHILD), str(bench.store.path), receiver.url,
            str(root / "server-tls" / "platform-ca.pem"),
            str(root / "dev-pki" / "uplink" / "uplink.pem"),
            str(root / "dev-pki" / "uplink" / "uplink.key"), str(SPEED),
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            await eventually(lambda: len(receiver.created) == 1, 30)
        finally:
            proc.kill()  # SIGKILL: no clean-up, no last words
            await proc.wait()
        assert proc.returncode == -9
        # The journal is intact and still has all three in the outbox.
        assert await bench.store.run(
            lambda db: db.execute("PRAGMA integrity_check").fetchone()[0]) == "ok"
        report = await deliver_all(bench.store, url=receiver.url, ssl_context=bench.client_ssl,
                                   clock=bench.clock,
                                   settings=UplinkSettings(url=receiver.url, timeout_s=20,
                                                           backoff_initial_s=1))
        assert report.finished and report.delivered == 3
        held = receiver.held()
        for row in await bench.store.certificates():
            assert held[row.certificate_id] == row.data
            assert receiver.created[row.certificate_id] == 1
        assert sum(receiver.duplicates.values()) == 1  # the one in flight, acknowledged again
