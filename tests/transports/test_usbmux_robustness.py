"""A misbehaving usbmuxd or a failing phone source ends at most what it concerns: never
the agent, never another phone's session; and stopping never hangs on a reconnect loop.

Nothing is mocked but a scripted phone source: the usbmuxd is the simulator's, the
Android phone is the simulator's behind its fake adbd, the agent is the real Agent."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path

from wipeagent.assemble import Paths, android_settings, android_tcp_endpoint, build_agent
from wipeagent.clock import Clock
from wipeagent.models import Outcome
from wipeagent.platforms.ios.driver import IosDriver
from wipeagent.sources import PhoneArrival, PhoneDeparture, SourceEvent
from wipeagent.sources.usbmux import UsbmuxSource, make_usbmux_source
from wipeagent.transports.adb import AdbHostKey
from wipeagent.transports.ios import UsbmuxAddress
from wipeagent_sim.android.bench import SimBench
from wipeagent_sim.demo import demo_config
from wipeagent_sim.ios import SimIosBench

SPEED = 100.0
BAD_DEVICE_IDS: list[object] = ["7", [1, 2], {"a": 1}, True, 3.5, b"\x01"]


async def test_wait_for_never_swallows_a_cancellation() -> None:
    """The one Clock's wait_for: a cancellation arriving as the awaited thing completes
    is delivered (Python 3.11's asyncio.wait_for returned the result instead)."""
    clock = Clock(SPEED)
    loop = asyncio.get_running_loop()
    for _ in range(20):
        inner: asyncio.Future[int] = loop.create_future()
        task = asyncio.create_task(clock.wait_for(inner, 100))
        await asyncio.sleep(0)  # the task now waits on `inner`
        inner.set_result(1)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            continue
        raise AssertionError("Clock.wait_for swallowed the cancellation")


async def _next(events: AsyncIterator[SourceEvent], clock: Clock) -> SourceEvent:
    return await clock.wait_for(anext(events), 200)


async def test_malformed_detached_messages_are_ignored(tmp_path: Path) -> None:
    async with SimIosBench(["clean"], clock=Clock(SPEED)) as bench:
        clock = bench.clock
        address = UsbmuxAddress.parse(bench.address)
        source = UsbmuxSource(address, lambda u: IosDriver(u, address, tmp_path, clock), clock)
        events = source.events()
        try:
            udid = bench.phones[0].udid
            first = await _next(events, clock)
            assert isinstance(first, PhoneArrival)
            for bad in BAD_DEVICE_IDS:
                bench.usbmuxd.broadcast({"MessageType": "Detached", "DeviceID": bad})
            bench.usbmuxd.broadcast({"MessageType": "Detached"})
            bench.usbmuxd.broadcast({"MessageType": "Detached", "DeviceID": 10_000})
            # The source is alive and still follows the real phone.
            bench.unplug(udid)
            gone = await _next(events, clock)
            assert isinstance(gone, PhoneDeparture) and gone.key == first.key
        finally:
            await events.aclose()  # type: ignore[attr-defined]


async def test_a_malformed_detached_ends_no_other_session(tmp_path: Path) -> None:
    """The reported case: an Android phone mid-session on one slot, usbmuxd sends a
    Detached whose DeviceID is not an integer. The agent keeps running, the Android
    session ends erased, and the iPhone's session on usbmuxd carries on too."""
    clock = Clock(SPEED)
    async with SimBench(profiles=["pixel8-clean"], state_dir=tmp_path / "sims",
                        clock=clock) as android, SimIosBench(["clean"], clock=clock) as ios:
        (entry,) = android.phones
        config = demo_config(tmp_path / "state", usbmuxd=ios.address)
        config = config.model_copy(update={"ios": config.ios.model_copy(
            update={"reboot_timeout_s": 300})})
        agent, store, _ = await build_agent(config, clock=clock,
                                            extra_endpoints=[f"{entry.host}:{entry.port}"])
        agent.sources = [*agent.sources, make_usbmux_source(config, clock, config.state_path)]

        async def misbehave() -> None:
            # While the Android phone is away for its reset (its session waiting for it),
            # usbmuxd sends garbage Detached messages.
            while entry.phone.online:
                await clock.sleep(0.5)
            for bad in BAD_DEVICE_IDS:
                ios.usbmuxd.broadcast({"MessageType": "Detached", "DeviceID": bad})

        chaos = asyncio.create_task(misbehave())
        try:
            results = await asyncio.wait_for(agent.run(until=lambda a: a.completed >= 2), 120)
        finally:
            chaos.cancel()
            await store.close()
        assert chaos.done() and not chaos.cancelled()
        assert entry.phone.counters.factory_resets == 1
        outcomes = sorted(r.outcome for r in results)
        assert outcomes == [Outcome.ERASED, Outcome.ERASED], [r.reasons for r in results]


class FlakySource:
    """A source that raises an unexpected exception after its first arrival, then works."""

    name = "flaky"

    def __init__(self, arrivals: list[PhoneArrival]) -> None:
        self.arrivals = arrivals
        self.starts = 0

    async def events(self) -> AsyncIterator[SourceEvent]:
        self.starts += 1
        if self.starts == 1:
            yield self.arrivals[0]
            raise TypeError("a bug in the source")
        for arrival in self.arrivals[1:]:
            yield arrival
        await asyncio.Event().wait()


async def test_a_failing_source_is_restarted_and_stops_nothing(tmp_path: Path) -> None:
    clock = Clock(SPEED)
    async with SimBench(profiles=["pixel8-clean", "unencrypted"], state_dir=tmp_path / "sims",
                        clock=clock) as android:
        config = demo_config(tmp_path / "state")
        agent, store, _ = await build_agent(config, clock=clock)
        key = AdbHostKey.load_or_create(Paths(config.state_path).adb_key)
        arrivals = []
        for entry in android.phones:
            endpoint = android_tcp_endpoint(f"{entry.host}:{entry.port}", key, clock,
                                            android_settings(config))
            arrivals.append(PhoneArrival(key=endpoint.slot, slot=endpoint.slot,
                                         make_driver=endpoint.make_driver))
        flaky = FlakySource(arrivals)
        agent.sources = [flaky]
        try:
            results = await asyncio.wait_for(agent.run(until=lambda a: a.completed >= 2), 120)
        finally:
            await store.close()
        assert flaky.starts == 2
        assert {r.outcome for r in results} == {Outcome.ERASED}, [r.reasons for r in results]


async def test_stopping_never_hangs_in_the_reconnect_loop(tmp_path: Path) -> None:
    """The source is stopped at random moments of its connect / list / listen / back-off
    cycle, with usbmuxd there and not there: every stop ends it."""
    rng = random.Random(9)
    clock = Clock(SPEED)

    async def consume(source: UsbmuxSource) -> None:
        async for _event in source.events():
            pass

    async def stop_at_random(address: UsbmuxAddress, rounds: int) -> None:
        for _ in range(rounds):
            source = UsbmuxSource(address, lambda u: IosDriver(u, address, tmp_path, clock),
                                  clock, max_backoff_s=0.5)
            task = asyncio.create_task(consume(source))
            await asyncio.sleep(rng.uniform(0, 0.03))
            task.cancel()
            done, _ = await asyncio.wait([task], timeout=10)
            assert done, "the usbmuxd source did not stop"

    missing = UsbmuxAddress(path=str(tmp_path / "absent.sock"))
    await stop_at_random(missing, 15)
    sock = str(tmp_path / "usbmuxd.sock")
    async with SimIosBench(["clean"], clock=clock, socket_path=sock):
        await stop_at_random(UsbmuxAddress(path=sock), 30)
