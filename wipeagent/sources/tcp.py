"""Phones on fixed TCP endpoints (simulators, phones on network debugging)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from wipeagent.clock import Clock
from wipeagent.errors import DeviceError, NotAuthorised
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
    # host, port: lets the source check a busy endpoint with a bare TCP connect.
    address: tuple[str, int] | None = None


class TcpEndpointSource:
    """Phones on fixed TCP endpoints (simulators, network debugging), found by polling.

    An endpoint arrives when a connection (with authentication) succeeds and departs when
    it stops answering. Polling is the only way to notice a TCP phone; USB and usbmuxd
    sources are event driven.
    """

    name = "tcp"

    def __init__(self, endpoints: Sequence[Endpoint], clock: Clock, poll_interval_s: float,
                 *, connect_timeout_s: float = 5.0) -> None:
        self.endpoints = list(endpoints)
        self.clock = clock
        self.poll_interval_s = poll_interval_s
        self.connect_timeout_s = connect_timeout_s
        # Set by whoever runs the sessions (assemble.build_agent): is a session running
        # for this key? A busy endpoint is only checked for presence with a bare CNXN
        # (transports.adb.adb_answers): a full ADB handshake with RSA auth every poll was
        # most of the CPU a big simulated bench used (docs/benchmarks.md).
        self.busy: Callable[[str], bool] = lambda _key: False

    async def _answers(self, endpoint: Endpoint) -> bool | str:
        """True if a phone answers, or a notice text if it answers but will not talk."""
        if endpoint.address is not None and self.busy(endpoint.slot):
            host, port = endpoint.address
            return await adb_answers(AdbEndpoint(host, port), self.clock,
                                     timeout_s=self.connect_timeout_s)
        driver = endpoint.make_driver()
        try:
            await driver.connect()
            return True
        except NotAuthorised as exc:
            return f"{exc} ({exc.hint})"
        except DeviceError:
            return False
        finally:
            await driver.close()

    async def events(self) -> AsyncIterator[SourceEvent]:
        present: set[str] = set()
        queue: asyncio.Queue[SourceEvent] = asyncio.Queue()

        async def watch(endpoint: Endpoint) -> None:
            first = True
            while True:
                answer = await self._answers(endpoint)
                here = answer is True
                if here and endpoint.slot not in present:
                    present.add(endpoint.slot)
                    # Answering at the first poll: it was there when the agent started.
                    await queue.put(PhoneArrival(endpoint.slot, endpoint.slot,
                                                 endpoint.make_driver,
                                                 present_at_start=first))
                elif not here and endpoint.slot in present:
                    present.discard(endpoint.slot)
                    await queue.put(PhoneDeparture(endpoint.slot, endpoint.slot))
                first = False
                if isinstance(answer, str):
                    await queue.put(PhoneNotice(endpoint.slot, answer))
                await self.clock.sleep(self.poll_interval_s)

        async with asyncio.TaskGroup() as group:
            for endpoint in self.endpoints:
                group.create_task(watch(endpoint), name=f"watch {endpoint.slot}")
            while True:
                yield await queue.get()
