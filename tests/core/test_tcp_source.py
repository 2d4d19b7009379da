"""The TCP endpoint source: arrivals hand their connection over, departures need evidence."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path

import pytest
from test_session import ScriptedDriver

from wipeagent.assemble import Paths, build_agent
from wipeagent.clock import Clock
from wipeagent.session import SessionEvent
from wipeagent.sources import PhoneArrival, PhoneDeparture, SourceEvent
from wipeagent.sources.tcp import Endpoint, TcpEndpointSource
from wipeagent.transports.adb import AdbHostKey
from wipeagent_sim.android.bench import SimBench
from wipeagent_sim.demo import demo_config


class WatchedDriver(ScriptedDriver):
    """A driver whose own-connection verdicts are scripted (PresenceWatch)."""

    def __init__(self, verdicts: list[bool | None]) -> None:
        super().__init__()
        self.verdicts = verdicts
        self.checked = 0
        self.exhausted = asyncio.Event()

    async def answers(self) -> bool | None:
        if self.checked >= len(self.verdicts):
            self.exhausted.set()
            return True
        self.checked += 1
        return self.verdicts[self.checked - 1]


async def collect(source: TcpEndpointSource, until: asyncio.Event) -> list[SourceEvent]:
    """Run the source until `until` is set; every event it produced."""
    seen: list[SourceEvent] = []

    async def consume(stream: AsyncIterator[SourceEvent]) -> None:
        async for event in stream:
            seen.append(event)

    async with aclosing(source.events()) as stream:
        task = asyncio.create_task(consume(stream))
        try:
            await asyncio.wait_for(until.wait(), 30)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    return seen


def watched_source(driver: WatchedDriver) -> TcpEndpointSource:
    source = TcpEndpointSource([Endpoint("slot-1", lambda: driver)], Clock(1000),
                               poll_interval_s=2, probe_interval_s=0.5, departure_probes=3)
    # As the Agent does once it runs a session with the handed-over (connected) driver.
    source.session_driver = lambda key: driver if "connect" in driver.calls else None
    return source


async def test_failed_checks_short_of_the_evidence_are_no_departure() -> None:
    # Never three failures in a row: a busy agent answering late, not a phone gone.
    driver = WatchedDriver([False, True, False, False, True, None, False, True])
    events = await collect(watched_source(driver), driver.exhausted)
    assert [type(e) for e in events] == [PhoneArrival]
    arrival = events[0]
    assert isinstance(arrival, PhoneArrival) and arrival.driver is driver
    assert driver.calls == ["connect"]  # one connect, handed over; never closed by us


async def test_three_failed_checks_in_a_row_are_a_departure() -> None:
    driver = WatchedDriver([True, False, False, False, False, False])
    events = await collect(watched_source(driver), driver.exhausted)
    assert [type(e) for e in events] == [PhoneArrival, PhoneDeparture, PhoneArrival]
    # Back after the departure while its session still runs: announced without a
    # connection (the Agent ignores it; the session has its own).
    again = events[2]
    assert isinstance(again, PhoneArrival) and again.driver is None


@pytest.fixture
def bench_key(tmp_path: Path) -> AdbHostKey:
    """The agent's ADB key, created where build_agent loads it."""
    return AdbHostKey.load_or_create(Paths(tmp_path / "state").adb_key)


async def test_an_arrival_connects_and_signs_once(tmp_path: Path, bench_key: AdbHostKey,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    signer = type(bench_key.signer)
    sign = signer.Sign
    signs = 0
    at_identify: list[int] = []

    def counted(self: object, data: bytes) -> bytes:
        nonlocal signs
        signs += 1
        return sign(self, data)  # type: ignore[no-any-return]

    def observe(event: SessionEvent) -> None:
        if event.step == "identify":
            at_identify.append(signs)

    monkeypatch.setattr(signer, "Sign", counted)
    clock = Clock(20)
    (tmp_path / "sims" / "38211FDH2004NJ").mkdir(parents=True)
    # The phone already trusts this bench (as after "Always allow").
    (tmp_path / "sims" / "38211FDH2004NJ" / "adb_keys").write_bytes(
        bench_key.public_key.rstrip(b"\0") + b"\n")
    async with SimBench(profiles=["pixel8-clean"], state_dir=tmp_path / "sims",
                        clock=clock) as bench:
        (phone,) = bench.phones
        agent, store, _ = await build_agent(demo_config(tmp_path / "state"), clock=clock,
                                            extra_endpoints=[f"{phone.host}:{phone.port}"],
                                            observer=observe)
        try:
            (result,) = await agent.run(until=lambda a: len(a.results) >= 1)
        finally:
            await store.close()
    assert result.outcome.value == "erased"
    # The presence probe's authenticated connection is the session's: one signature
    # before the phone was identified (there were two, probe then session, before).
    assert at_identify == [1]
