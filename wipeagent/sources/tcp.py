"""Phones on fixed TCP endpoints (simulators, phones on network debugging).

A TCP endpoint has no hotplug event, so this source looks; how it looks depends on what it
knows about the endpoint:

- **Nobody there yet**: a bare ADB CNXN every `probe_interval_s` (no key used, nothing runs
  on the phone; `transports.adb.adb_answers`). When something answers, one full connect
  with RSA authentication; that connection is handed to the session in the PhoneArrival
  (`PhoneArrival.driver`), so an arrival connects and signs once, not twice.
- **A session runs there**: no second connection. The session's own driver says whether
  the phone still answers (`PresenceWatch.answers`: a command just went through, or a
  keep-alive echo on its connection); a phone in its erase reboot is watched by the
  session itself.
- **A finished phone left on the bench**: a bare CNXN every `poll_interval_s`.

A departure needs evidence: `departure_probes` failed checks in a row, a poll interval
apart, where a failed check is a refused or reset connection, or one closed without an ADB
answer — never a late answer: on a busy agent (or a compressed bench clock) answers come
late from phones that are there. The watchers start spread over the probe
interval, so a bench of endpoints is not probed in one burst.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from wipeagent.clock import Clock
from wipeagent.errors import DeviceError, NotAuthorised
from wipeagent.platforms.base import PlatformDriver, PresenceWatch
from wipeagent.sources import (
    DriverFactory,
    PhoneArrival,
    PhoneDeparture,
    PhoneNotice,
    SourceEvent,
)
from wipeagent.transports.adb import AdbEndpoint, adb_answers


@dataclass(frozen=True)
class Endpoint:
    """A fixed place a phone can be reached (a TCP address): slot label + driver factory."""

    slot: str
    make_driver: DriverFactory
    # host, port: lets the source look for a phone with a bare CNXN (no authentication).
    address: tuple[str, int] | None = None


class TcpEndpointSource:
    """Phones on fixed TCP endpoints (simulators, network debugging), found by looking.

    `session_driver(key)` (set by whoever runs the sessions: assemble.build_agent) gives
    the driver of the session running for an endpoint, or None; the source watches a busy
    phone through it.
    """

    name = "tcp"

    def __init__(self, endpoints: Sequence[Endpoint], clock: Clock, poll_interval_s: float,
                 *, connect_timeout_s: float = 5.0, probe_interval_s: float = 0.5,
                 departure_probes: int = 3) -> None:
        self.endpoints = list(endpoints)
        self.clock = clock
        self.poll_interval_s = poll_interval_s
        self.connect_timeout_s = connect_timeout_s
        self.probe_interval_s = probe_interval_s
        self.departure_probes = max(1, departure_probes)
        self.session_driver: Callable[[str], PlatformDriver | None] = lambda _key: None

    async def _ping(self, endpoint: Endpoint) -> bool | None:
        """Does an ADB daemon answer there (bare CNXN)? None: no address to ping."""
        if endpoint.address is None:
            return None
        host, port = endpoint.address
        return await adb_answers(AdbEndpoint(host, port), self.clock,
                                 timeout_s=self.connect_timeout_s)

    async def _connect(self, endpoint: Endpoint) -> PlatformDriver | str | None:
        """One authenticated connect: the connected driver (to hand to the session), a
        notice text when the phone answers but will not talk to us, or None."""
        driver = endpoint.make_driver()
        try:
            await driver.connect()
        except NotAuthorised as exc:
            await driver.close()
            return f"{exc} ({exc.hint})"
        except DeviceError:
            await driver.close()
            return None
        except BaseException:
            await driver.close()
            raise
        return driver

    async def _check(self, endpoint: Endpoint, present: bool) -> bool | None:
        """One presence check of an endpoint with a phone on it (see the module doc)."""
        driver = self.session_driver(endpoint.slot)
        if driver is not None:
            return await driver.answers() if isinstance(driver, PresenceWatch) else None
        return await self._ping(endpoint) if present else None

    async def _watch(self, endpoint: Endpoint, queue: asyncio.Queue[SourceEvent],
                     delay_s: float) -> None:
        await self.clock.sleep(delay_s)
        present = False
        first = True
        failures = 0
        while True:
            busy = self.session_driver(endpoint.slot) is not None
            if not present and not busy:
                # Look for a phone: a bare CNXN, then one authenticated connect.
                found: PlatformDriver | str | None = None
                # Connect once something answered (or nothing can be pinged: no address).
                if endpoint.address is None or await self._ping(endpoint):
                    found = await self._connect(endpoint)
                if isinstance(found, str):
                    await queue.put(PhoneNotice(endpoint.slot, found))
                elif found is not None:
                    present, failures = True, 0
                    # Answering at the first look: it was there when the agent started.
                    await queue.put(PhoneArrival(endpoint.slot, endpoint.slot,
                                                 endpoint.make_driver,
                                                 present_at_start=first, driver=found))
                first = False
                # Without an address every look is a full connect: not at the fast pace.
                fast = found is None and endpoint.address is not None
                await self.clock.sleep(self.probe_interval_s if fast else self.poll_interval_s)
                continue
            first = False
            verdict = await self._check(endpoint, present)
            if verdict is True:
                failures = 0
                if not present:
                    # Back after a departure while its session still runs (the Agent
                    # ignores this arrival while the session does; it has its connection).
                    present = True
                    await queue.put(PhoneArrival(endpoint.slot, endpoint.slot,
                                                 endpoint.make_driver))
            elif verdict is False and present:
                failures += 1
                if failures >= self.departure_probes:
                    present, failures = False, 0
                    await queue.put(PhoneDeparture(endpoint.slot, endpoint.slot))
            await self.clock.sleep(self.poll_interval_s)

    async def events(self) -> AsyncIterator[SourceEvent]:
        queue: asyncio.Queue[SourceEvent] = asyncio.Queue()
        count = max(1, len(self.endpoints))
        try:
            async with asyncio.TaskGroup() as group:
                for index, endpoint in enumerate(self.endpoints):
                    delay = self.probe_interval_s * index / count
                    group.create_task(self._watch(endpoint, queue, delay),
                                      name=f"watch {endpoint.slot}")
                while True:
                    yield await queue.get()
        finally:
            # Arrivals nobody took: their connections are closed, not leaked.
            while not queue.empty():
                event = queue.get_nowait()
                if isinstance(event, PhoneArrival) and event.driver is not None:
                    with contextlib.suppress(Exception):
                        await event.driver.close()
