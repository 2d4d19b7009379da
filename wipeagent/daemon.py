"""The Agent: finds phones, runs one DeviceSession per phone, never lets one phone's
failure touch another.

Phones reached over TCP (simulators, network debugging) are supervised per endpoint: the
supervisor probes the endpoint until a phone answers, runs its session, then waits until
that phone has left (or another phone answers) before starting a new one, so a finished
phone left on the bench is never erased twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from wipeagent.clock import Clock
from wipeagent.errors import DeviceError, NotAuthorised
from wipeagent.models import StationInfo
from wipeagent.platforms.base import ErasePolicy, PlatformDriver
from wipeagent.session import (
    Certifier,
    DeviceSession,
    EraseGate,
    Observer,
    SessionEvent,
    SessionResult,
    allow_all,
)
from wipeagent.store import Store

log = logging.getLogger(__name__)

DriverFactory = Callable[[], PlatformDriver]


@dataclass(frozen=True)
class Endpoint:
    """A place a phone can be reached: its bench slot label and how to make a driver."""

    slot: str
    make_driver: DriverFactory


@dataclass
class AgentSettings:
    station: StationInfo
    policy: ErasePolicy
    destination: str = "resale"
    operator: str | None = None
    poll_interval_s: float = 2.0


class Agent:
    """Supervises every endpoint; one asyncio task per phone, no thread per phone."""

    def __init__(
        self,
        *,
        endpoints: Sequence[Endpoint],
        store: Store,
        certifier: Certifier,
        settings: AgentSettings,
        clock: Clock,
        gate: EraseGate = allow_all,
        observer: Observer | None = None,
    ) -> None:
        self.endpoints = list(endpoints)
        self.store = store
        self.certifier = certifier
        self.settings = settings
        self.clock = clock
        self.gate = gate
        self.observer = observer
        self.results: list[SessionResult] = []

    def _emit(self, slot: str, step: str, message: str) -> None:
        if self.observer is not None:
            self.observer(SessionEvent(slot, "", step, message))

    async def _reachable(self, endpoint: Endpoint) -> bool:
        """Does a phone answer (and accept this bench) at this endpoint?"""
        driver = endpoint.make_driver()
        try:
            await driver.connect()
            return True
        except NotAuthorised as exc:
            self._emit(endpoint.slot, "authorise", f"{exc} ({exc.hint})")
            return False
        except DeviceError:
            return False
        finally:
            await driver.close()

    async def run_session(self, endpoint: Endpoint) -> SessionResult:
        """Run one session on whatever phone answers at this endpoint."""
        session = DeviceSession(
            slot=endpoint.slot,
            driver=endpoint.make_driver(),
            store=self.store,
            certifier=self.certifier,
            station=self.settings.station,
            policy=self.settings.policy,
            clock=self.clock,
            gate=self.gate,
            destination=self.settings.destination,
            operator=self.settings.operator,
            observer=self.observer,
        )
        result = await session.run()
        self.results.append(result)
        return result

    async def supervise(self, endpoint: Endpoint, *, once: bool = False) -> None:
        """Run sessions at one endpoint for as long as the agent runs (or one, if once)."""
        poll = self.settings.poll_interval_s
        while True:
            if not await self._reachable(endpoint):
                await self.clock.sleep(poll)
                continue
            try:
                await self.run_session(endpoint)
            except Exception:  # a bug in one session must not stop the others
                log.exception("[%s] session crashed", endpoint.slot)
            if once:
                return
            # A finished phone left on the bench is never processed twice: wait until the
            # endpoint stops answering (the phone was taken away) before starting over.
            while await self._reachable(endpoint):
                await self.clock.sleep(poll)

    async def run(self, *, once: bool = False) -> list[SessionResult]:
        """Supervise every endpoint. With once=True, return after one session each."""
        async with asyncio.TaskGroup() as group:
            for endpoint in self.endpoints:
                group.create_task(self.supervise(endpoint, once=once),
                                  name=f"supervise {endpoint.slot}")
        return self.results
