"""The Agent's handling of arrivals and departures, with a scripted source and driver."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from test_session import IDENTITY, CountingCertifier, ScriptedDriver

from wipeagent.clock import Clock
from wipeagent.daemon import Agent, AgentSettings
from wipeagent.models import DeviceIdentity, Outcome, StationInfo
from wipeagent.platforms.base import ErasePolicy
from wipeagent.sources import PhoneArrival, PhoneDeparture, SourceEvent
from wipeagent.store import Store


class QueueSource:
    name = "queue"

    def __init__(self) -> None:
        self.queue: asyncio.Queue[SourceEvent] = asyncio.Queue()

    async def events(self) -> AsyncIterator[SourceEvent]:
        while True:
            yield await self.queue.get()


class SlowDiagnose(ScriptedDriver):
    """Blocks in diagnose until released (a phone being unplugged mid-step)."""

    def __init__(self, release: asyncio.Event, entered: asyncio.Event) -> None:
        super().__init__()
        self.release = release
        self.entered = entered

    async def diagnose(self, identity: DeviceIdentity):  # type: ignore[no-untyped-def]
        self.entered.set()
        await self.release.wait()
        return await super().diagnose(identity)


async def test_replug_during_unwind_resumes_not_drops(tmp_path: Path) -> None:
    release, entered = asyncio.Event(), asyncio.Event()
    drivers: list[ScriptedDriver] = []

    def make() -> ScriptedDriver:
        driver = SlowDiagnose(release, entered) if not drivers else ScriptedDriver()
        drivers.append(driver)
        return driver

    async with Store(tmp_path / "j.sqlite3") as store:
        source = QueueSource()
        certifier = CountingCertifier(store)
        agent = Agent(sources=[source], store=store, certifier=certifier,
                      settings=AgentSettings(StationInfo(station_id="st"), ErasePolicy()),
                      clock=Clock(1000))
        runner = asyncio.create_task(agent.run(until=lambda a: len(a.results) >= 1))
        source.queue.put_nowait(PhoneArrival("SER123", "slot-1", make))
        await asyncio.wait_for(entered.wait(), 10)
        # Unplugged and plugged back in at once: the arrival must not be lost.
        source.queue.put_nowait(PhoneDeparture("SER123", "slot-1"))
        source.queue.put_nowait(PhoneArrival("SER123", "slot-1", make))
        results = await asyncio.wait_for(runner, 10)
    assert len(drivers) == 2
    (result,) = results
    assert result.outcome is Outcome.ERASED
    assert result.identity == IDENTITY
    assert len(certifier.issued) == 1
    assert "erase" not in drivers[0].calls  # the first session never got that far


async def test_departure_during_reboot_is_ignored(tmp_path: Path) -> None:
    async with Store(tmp_path / "j.sqlite3") as store:
        source = QueueSource()
        started = asyncio.Event()
        back = asyncio.Event()

        class Rebooting(ScriptedDriver):
            async def await_return(self, expected, plan):  # type: ignore[no-untyped-def]
                started.set()
                await back.wait()
                return await super().await_return(expected, plan)

        driver = Rebooting()
        agent = Agent(sources=[source], store=store, certifier=CountingCertifier(store),
                      settings=AgentSettings(StationInfo(station_id="st"), ErasePolicy()),
                      clock=Clock(1000))
        runner = asyncio.create_task(agent.run(until=lambda a: a.completed >= 1))
        source.queue.put_nowait(PhoneArrival("SER123", "slot-1", lambda: driver))
        await asyncio.wait_for(started.wait(), 10)
        source.queue.put_nowait(PhoneDeparture("SER123", "slot-1"))
        source.queue.put_nowait(PhoneArrival("SER123", "slot-1", ScriptedDriver))
        await asyncio.sleep(0.05)
        back.set()
        (result,) = await asyncio.wait_for(runner, 10)
    assert result.outcome is Outcome.ERASED
    assert agent.completed == 1  # no second session was started for the re-arrival


async def test_a_handed_over_connection_is_used_or_closed(tmp_path: Path) -> None:
    release, entered = asyncio.Event(), asyncio.Event()
    handed = SlowDiagnose(release, entered)
    duplicate = ScriptedDriver()
    made: list[ScriptedDriver] = []

    def make() -> ScriptedDriver:
        made.append(ScriptedDriver())
        return made[-1]

    async with Store(tmp_path / "j.sqlite3") as store:
        source = QueueSource()
        agent = Agent(sources=[source], store=store, certifier=CountingCertifier(store),
                      settings=AgentSettings(StationInfo(station_id="st"), ErasePolicy()),
                      clock=Clock(1000))
        runner = asyncio.create_task(agent.run(until=lambda a: len(a.results) >= 1))
        # The source proved the phone there with a connected driver: the session uses it.
        source.queue.put_nowait(PhoneArrival("SER123", "slot-1", make, driver=handed))
        await asyncio.wait_for(entered.wait(), 10)
        assert agent.driver_for("SER123") is handed
        # A second arrival for the running phone: its connection is closed, not leaked.
        source.queue.put_nowait(PhoneArrival("SER123", "slot-1", make, driver=duplicate))
        for _ in range(100):
            if "close" in duplicate.calls:
                break
            await asyncio.sleep(0.01)
        release.set()
        (result,) = await asyncio.wait_for(runner, 10)
    assert result.outcome is Outcome.ERASED
    assert made == []  # no driver was made: the handed one served the session
    assert duplicate.calls == ["close"]
    assert "identify" in handed.calls and handed.calls[-1] == "close"
    assert agent.driver_for("SER123") is None


async def completed(agent: Agent, count: int) -> None:
    for _ in range(1000):
        if agent.completed >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{agent.completed} sessions completed, expected {count}")


class SlowReturn(ScriptedDriver):
    """Waits in await_return until released (the phone rebooting for its reset)."""

    def __init__(self, release: asyncio.Event, waiting: asyncio.Event) -> None:
        super().__init__()
        self.release = release
        self.waiting = waiting

    async def await_return(self, expected: DeviceIdentity, plan):  # type: ignore[no-untyped-def]
        self.waiting.set()
        await self.release.wait()
        return await super().await_return(expected, plan)


async def test_a_late_arrival_after_the_reset_does_not_process_the_phone_again(
        tmp_path: Path) -> None:
    """The source saw the phone leave for its reset and announces it back only after its
    session ended (certified): the same phone never left the bench, so no second
    session starts (no second erase, no second certificate). A real unplug and re-plug
    afterwards does start one."""
    release, waiting = asyncio.Event(), asyncio.Event()
    drivers: list[ScriptedDriver] = []

    def make() -> ScriptedDriver:
        driver = SlowReturn(release, waiting) if not drivers else ScriptedDriver()
        drivers.append(driver)
        return driver

    async with Store(tmp_path / "j.sqlite3") as store:
        source = QueueSource()
        agent = Agent(sources=[source], store=store, certifier=CountingCertifier(store),
                      settings=AgentSettings(StationInfo(station_id="st"), ErasePolicy()),
                      clock=Clock(1000))
        runner = asyncio.create_task(agent.run())
        source.queue.put_nowait(PhoneArrival("SER123", "slot-1", make))
        await asyncio.wait_for(waiting.wait(), 10)
        source.queue.put_nowait(PhoneDeparture("SER123", "slot-1"))  # the reboot
        await asyncio.sleep(0.05)
        release.set()
        await completed(agent, 1)
        source.queue.put_nowait(PhoneArrival("SER123", "slot-1", make))  # late: same phone
        await asyncio.sleep(0.1)
        assert len(drivers) == 1 and not agent.running
        # Unplugged and plugged in again: a new session (the phone is processed again).
        source.queue.put_nowait(PhoneDeparture("SER123", "slot-1"))
        source.queue.put_nowait(PhoneArrival("SER123", "slot-1", make))
        await completed(agent, 2)
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    assert len(drivers) == 2
    assert agent.results[0].outcome is Outcome.ERASED
