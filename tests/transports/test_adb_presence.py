"""The cheap ADB presence check used for endpoints whose phone is busy in a session."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from wipeagent.clock import Clock
from wipeagent.transports.adb import AdbEndpoint, adb_answers
from wipeagent_sim.android.bench import SimBench


async def test_answers_for_a_phone_and_not_for_an_unplugged_one(tmp_path: Path) -> None:
    clock = Clock(50)
    async with SimBench(profiles=["pixel8-clean"], state_dir=tmp_path, clock=clock) as bench:
        (entry,) = bench.phones
        endpoint = AdbEndpoint(entry.host, entry.port)
        assert await adb_answers(endpoint, clock, timeout_s=5)
        bench.unplug(entry.phone.serial)
        assert not await adb_answers(endpoint, clock, timeout_s=5)
        bench.plug(entry.phone.serial)
        assert await adb_answers(endpoint, clock, timeout_s=5)
        # Nothing was authorised or run on the phone by the check.
        assert entry.phone.pending_authorisations() == 0


async def test_no_answer_from_a_closed_port_or_a_stranger() -> None:
    clock = Clock(50)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    assert not await adb_answers(AdbEndpoint("127.0.0.1", closed_port), clock, timeout_s=5)

    async def stranger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n" + b"x" * 24)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(stranger, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        assert not await adb_answers(AdbEndpoint("127.0.0.1", port), clock, timeout_s=5)


async def test_a_late_answer_is_no_evidence_either_way() -> None:
    """A busy agent (or simulator) answers late: that is neither "there" nor "gone"."""
    clock = Clock(50)
    release = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        assert await adb_answers(AdbEndpoint("127.0.0.1", port), clock, timeout_s=5) is None
        release.set()
