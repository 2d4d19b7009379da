"""The Agent: consumes phone sources, runs one DeviceSession per phone, never lets one
phone's failure touch another.

- An arrival starts a session for its key unless one is already running (a phone coming
  back from its reset re-arrives while its session waits for it).
- A departure while the session is *not* waiting for a reboot pauses the session: its task
  is cancelled with the journal left resumable, and the phone's next arrival resumes it
  from the journal (session._adopt_unfinished).
- A finished phone that stays plugged in is not processed again until it leaves and comes
  back, because sources only re-announce a key after a departure.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from wipeagent.clock import Clock
from wipeagent.errors import DeviceGone, DeviceTimeout, WipeAgentError
from wipeagent.models import (
    Canary,
    CheckResult,
    DeviceIdentity,
    ErasePlan,
    EraseRecord,
    HandoffItem,
    HandoffPolicy,
    Platform,
    Refusal,
    StationInfo,
)
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
from wipeagent.sources import DeviceSource, PhoneArrival, PhoneNotice, SourceEvent
from wipeagent.steps import JournalStep, SessionStep
from wipeagent.store import Store
from wipeagent.technician import NO_TECHNICIAN, Technician

log = logging.getLogger(__name__)

# Bench seconds before a failed phone source is started again (doubling up to the max).
SOURCE_RESTART_MIN_S = 1.0
SOURCE_RESTART_MAX_S = 60.0


# Session states (last journaled step) from which a phone may be out of the bench's reach.
# Bench seconds after start before unreturned phones are given up on (phones present at
# start are announced first), and between checks for them.
UNRETURNED_GRACE_S = 120.0
UNRETURNED_CHECK_S = 60.0

UNREACHABLE_STATES = (JournalStep.HANDOFF_STARTED, JournalStep.HANDOFF_LAST, JournalStep.HANDOFF,
                      JournalStep.OUTCOME)


@dataclass
class AgentSettings:
    station: StationInfo
    policy: ErasePolicy
    destination: str = "resale"
    operator: str | None = None
    handoff: HandoffPolicy = HandoffPolicy.RESTORE


class _Unreachable:
    """The driver of a session finished without its phone (see
    DeviceSession.finish_unreachable): every question to the phone is DeviceGone."""

    platform = Platform.ANDROID

    def _gone(self) -> DeviceGone:
        return DeviceGone("the phone is no longer reachable")

    async def connect(self) -> None:
        raise self._gone()

    async def identify(self) -> DeviceIdentity:
        raise self._gone()

    async def diagnose(self, identity: DeviceIdentity) -> list[CheckResult]:
        raise self._gone()

    def plan_erase(self, identity: DeviceIdentity, diagnostics: list[CheckResult],
                   policy: ErasePolicy) -> tuple[list[CheckResult], ErasePlan | Refusal]:
        raise self._gone()

    async def plant_canary(self) -> Canary:
        raise self._gone()

    async def start_erase(self, plan: ErasePlan) -> None:
        raise self._gone()

    async def await_return(self, expected: DeviceIdentity, plan: ErasePlan) -> DeviceIdentity:
        raise self._gone()

    async def verify(self, identity: DeviceIdentity, plan: ErasePlan,
                     canary: Canary) -> list[CheckResult]:
        raise self._gone()

    async def hand_off(self, plan: ErasePlan) -> list[HandoffItem]:
        raise self._gone()

    async def finish_hand_off(self) -> HandoffItem | None:
        raise self._gone()

    async def reachable_with_bench_key(self, within_s: float) -> bool:
        raise self._gone()  # nothing to probe with: no verdict either way

    async def wait_until_gone(self, timeout_s: float) -> bool:
        return True

    async def close(self) -> None:
        return None


@dataclass(frozen=True)
class RunningPhone:
    """A phone whose session runs now, as the rest of the agent sees it: a copy made when
    asked, so a reader (the bench state, the service log, the TCP source) never reaches
    into a session."""

    key: str  # the source's key (USB serial, "ios:<UDID>", TCP slot)
    slot: str
    session_id: str
    identity: DeviceIdentity | None  # None until the phone is identified
    # Between starting the erase and the phone's return: its departure is expected.
    expects_departure: bool

    @property
    def serial(self) -> str | None:
        return self.identity.serial if self.identity is not None else None


class RunningPhones(Protocol):
    """The public, typed view of the phones being processed (the Agent provides it)."""

    def phones(self) -> list[RunningPhone]:
        """Every phone with a running session, by slot."""
        ...

    def phone_on(self, slot: str) -> RunningPhone | None:
        """The phone whose session runs on `slot`, if any."""
        ...

    def is_running(self, key: str) -> bool:
        """Whether a session runs for the source key `key`."""
        ...


@dataclass
class _Running:
    session: DeviceSession
    task: asyncio.Task[SessionResult | None]
    slot: str

    def view(self, key: str) -> RunningPhone:
        s = self.session
        return RunningPhone(key, self.slot, s.session_id, s.identity, s.expects_departure)


@dataclass
class Agent:
    """Runs sessions for the phones its sources announce; one asyncio task per phone."""

    sources: Sequence[DeviceSource]
    store: Store
    certifier: Certifier
    settings: AgentSettings
    clock: Clock
    gate: EraseGate = allow_all
    observer: Observer | None = None
    technician: Technician = NO_TECHNICIAN
    # A driver that can probe the phone on a slot without a running session (TCP
    # endpoints), for finish_unreachable; None where there is none (USB, iPhones).
    driver_for_slot: Callable[[str], PlatformDriver | None] | None = None
    results: list[SessionResult] = field(default_factory=list)
    running: dict[str, _Running] = field(default_factory=dict)
    # Sessions cancelled by a departure that have not finished unwinding yet. A phone
    # re-plugged in that gap must wait for them, not be dropped.
    leaving: dict[str, asyncio.Task[SessionResult | None]] = field(default_factory=dict)
    # Sessions that ended in any way (a crashed session has no result but counts here).
    completed: int = 0
    _finished: asyncio.Event = field(default_factory=asyncio.Event)
    _closing: set[asyncio.Task[None]] = field(default_factory=set)
    # Keys whose departure for the erase's reboot was seen (and ignored) while their
    # session ran, until the source announces them back; and keys whose session ended
    # before that announcement came (see handle).
    _away: set[str] = field(default_factory=set)
    _catching_up: dict[str, bool] = field(default_factory=dict)
    _started: float = 0.0

    # -- the public view (RunningPhones) -------------------------------------------------

    def phones(self) -> list[RunningPhone]:
        """Every phone with a running session, by slot."""
        return sorted((r.view(k) for k, r in list(self.running.items())),
                      key=lambda p: p.slot)

    def phone_on(self, slot: str) -> RunningPhone | None:
        """The phone whose session runs on `slot`, if any."""
        for key, running in list(self.running.items()):
            if running.slot == slot:
                return running.view(key)
        return None

    async def show_phone(self, slot: str) -> bool:
        """"Identify" on the bench: the phone on `slot` shows itself where its platform
        can (its driver's `show_yourself`: Android wakes its screen). False when no session
        runs there or the platform cannot."""
        for running in list(self.running.values()):
            if running.slot == slot:
                show = getattr(running.session.driver, "show_yourself", None)
                return bool(await show()) if show is not None else False
        return False

    def is_running(self, key: str) -> bool:
        """Whether a session runs for the source key `key` (the TCP source asks)."""
        return key in self.running

    # -- sessions ---------------------------------------------------------------------------

    def _emit(self, slot: str, step: SessionStep, message: str) -> None:
        if self.observer is not None:
            self.observer(SessionEvent(slot, "", step, message))

    def _session(self, arrival: PhoneArrival) -> DeviceSession:
        return DeviceSession(
            present_at_start=arrival.present_at_start,
            slot=arrival.slot,
            driver=arrival.driver or arrival.make_driver(),
            store=self.store,
            certifier=self.certifier,
            station=self.settings.station,
            policy=self.settings.policy,
            clock=self.clock,
            gate=self.gate,
            destination=self.settings.destination,
            operator=self.settings.operator,
            observer=self.observer,
            technician=self.technician,
            handoff_policy=self.settings.handoff,
        )

    async def _run_one(self, key: str, session: DeviceSession,
                       after: asyncio.Task[SessionResult | None] | None = None
                       ) -> SessionResult | None:
        me = asyncio.current_task()
        result: SessionResult | None = None
        try:
            if after is not None:
                # The same phone's paused session is still unwinding (closing its driver);
                # let it finish so the journal is settled before this one adopts it.
                await asyncio.wait([after])
            result = await session.run()
        except asyncio.CancelledError:
            # Paused (unplugged) or shutting down: the journal holds where it stopped.
            self._emit(session.slot, SessionStep.PAUSED,
                       "session paused; plug the phone back in to resume it")
            raise
        except Exception:  # a bug in one session must not stop the others
            log.exception("[%s] session crashed", session.slot)
            return None
        else:
            self.results.append(result)
            return result
        finally:
            entry = self.running.get(key)
            if entry is not None and entry.task is me:
                del self.running[key]
                if key in self._away:
                    # The source saw the phone leave for its reset and has not announced
                    # it back yet: that arrival is the same phone, not a re-plug.
                    self._away.discard(key)
                    self._catching_up[key] = result is not None and \
                        result.certificate is not None
            if self.leaving.get(key) is me:
                del self.leaving[key]
            self.completed += 1
            self._finished.set()

    def handle(self, event: SourceEvent) -> None:
        """Apply one source event."""
        if isinstance(event, PhoneNotice):
            self._emit(event.slot, SessionStep.NOTICE, f"{event.message} {event.hint}".strip())
        elif isinstance(event, PhoneArrival):
            if event.key in self.running:
                # Coming back from a reset, or a duplicate event: the session has its own
                # connection, so a handed-over one is closed.
                if event.driver is not None:
                    self._close_later(event.driver)
                self._away.discard(event.key)
                return
            if event.key in self._catching_up:
                # The phone came back from the reset of a session that has ended since:
                # it never left the bench. Certified: nothing to do until it is re-plugged
                # (even if it now answers as another phone, which that session recorded).
                # Otherwise, like a phone present when the agent started.
                if self._catching_up.pop(event.key):
                    if event.driver is not None:
                        self._close_later(event.driver)
                    return
                event = dataclasses.replace(event, present_at_start=True)
            session = self._session(event)
            task = asyncio.get_running_loop().create_task(
                self._run_one(event.key, session, self.leaving.get(event.key)),
                name=f"session {event.slot}")
            self.running[event.key] = _Running(session, task, event.slot)
        else:
            running = self.running.get(event.key)
            if running is None:
                self._catching_up.pop(event.key, None)  # really gone: next arrival is new
                return
            if running.session.expects_departure:
                self._away.add(event.key)
                return  # the reboot the erase causes
            del self.running[event.key]
            self.leaving[event.key] = running.task
            running.task.cancel()

    def _close_later(self, driver: PlatformDriver) -> None:
        task = asyncio.get_running_loop().create_task(driver.close(), name="close driver")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def driver_for(self, key: str) -> PlatformDriver | None:
        """The driver of the session running for `key` (sources watch its connection)."""
        running = self.running.get(key)
        return running.session.driver if running is not None else None

    async def finish_unreachable(self) -> None:
        """Certify the sessions the agent left in their hand-off (or after it) when it
        stopped: their phones have USB debugging off (or went through a final reset) and
        will not come back over ADB, and a verified erase must not be left without its
        certificate. A session still before its last hand-off step under policy restore
        is left to its phone, which still answers and resumes it."""
        for row in await self.store.sessions_in_states(UNREACHABLE_STATES):
            steps = {r.step: r.data for r in await self.store.steps(row.id)}
            if "handoff_started" not in steps:
                continue  # an outcome without a hand-off: the phone comes back itself
            if (row.state == "handoff_started"
                    and steps["handoff_started"].get("policy") != "final_reset"):
                continue
            probe = self.driver_for_slot(row.slot) if self.driver_for_slot else None
            session = DeviceSession(
                slot=row.slot, driver=probe or _Unreachable(), store=self.store,
                certifier=self.certifier, station=self.settings.station,
                policy=self.settings.policy, clock=self.clock,
                destination=self.settings.destination, operator=self.settings.operator,
                observer=self.observer, session_id=row.id,
                handoff_policy=self.settings.handoff)
            try:
                self.results.append(await session.finish_unreachable())
            except WipeAgentError as exc:
                log.error("[%s] could not finish session %s: %s", row.slot, row.id, exc)
            finally:
                await session.driver.close()
            self.completed += 1

    def _handle_safely(self, source: DeviceSource, event: SourceEvent) -> None:
        try:
            self.handle(event)
        except Exception:  # a bad event ends nothing but itself
            log.exception("phone source %s: could not handle %r", source.name, event)

    async def _consume(self, source: DeviceSource) -> None:
        """Feed one source's events to `handle` for the life of the agent. A source that
        fails unexpectedly (a bug, or input it did not anticipate) is logged and started
        again after a back-off: it must not stop the agent nor any session in flight."""
        backoff = SOURCE_RESTART_MIN_S
        while True:
            try:
                async for event in source.events():
                    self._handle_safely(source, event)
                    backoff = SOURCE_RESTART_MIN_S
                return
            except WipeAgentError as exc:
                # One way of finding phones failed for good (no netlink ...); the other
                # sources and the sessions in flight carry on.
                log.error("phone source %s stopped: %s (%s)", source.name, exc, exc.hint)
                self._emit(source.name, SessionStep.NOTICE,
                           f"phone source stopped: {exc} ({exc.hint})")
                return
            except Exception as exc:
                log.exception("phone source %s failed; restarting it in %.0f s",
                              source.name, backoff)
                self._emit(source.name, SessionStep.NOTICE,
                           f"phone source failed ({type(exc).__name__}); restarting it")
            await self.clock.sleep(backoff)
            backoff = min(backoff * 2, SOURCE_RESTART_MAX_S)

    async def expire_unreturned(self) -> float:
        """Certify, not erased, the sessions whose erase started under an earlier run of
        the agent and whose phone has not come back within the plan's return timeout
        (counted from the erase's start, journaled): no session task waits for such a
        phone, and a session whose erase started must not stay without a certificate.
        A session is left alone while a session runs on its slot (its phone may be
        being identified, to resume it) and during the agent's first
        UNRETURNED_GRACE_S (phones present at start arrive first). Returns the bench
        seconds until the next such deadline (at most UNRETURNED_CHECK_S)."""
        wait = UNRETURNED_CHECK_S
        up = self.clock.monotonic() - self._started
        if up < UNRETURNED_GRACE_S:
            return UNRETURNED_GRACE_S - up
        busy_slots = {r.slot for r in self.running.values()}
        mine = {r.session.session_id for r in self.running.values()}
        for row in await self.store.sessions_in_states((JournalStep.ERASE_STARTED,)):
            if row.id in mine or row.slot in busy_slots:
                continue
            steps = await self.store.steps(row.id)
            erase = next((r.data["erase"] for r in steps
                          if r.step == JournalStep.ERASE_STARTED), None)
            if erase is None:
                continue
            record = EraseRecord.model_validate(erase)
            waited = (self.clock.now() - record.started_at).total_seconds() * self.clock.speed
            left = record.plan.return_timeout_s - waited
            if left > 0:
                wait = min(wait, left)
                continue
            session = DeviceSession(
                slot=row.slot, driver=_Unreachable(), store=self.store,
                certifier=self.certifier, station=self.settings.station,
                policy=self.settings.policy, clock=self.clock,
                destination=self.settings.destination, operator=self.settings.operator,
                observer=self.observer, session_id=row.id,
                handoff_policy=self.settings.handoff)
            timeout = DeviceTimeout(
                f"the phone did not come back within {record.plan.return_timeout_s:.0f} s "
                "of its erase (the agent was restarted meanwhile)",
                hint="find the phone; plug it in again to process it again")
            try:
                self.results.append(await session.finish_unreturned(timeout))
            except WipeAgentError as exc:
                log.error("[%s] could not finish session %s: %s", row.slot, row.id, exc)
            self.completed += 1
            self._finished.set()
        return max(wait, 1.0)

    async def _expire_loop(self) -> None:
        while True:
            try:
                wait = await self.expire_unreturned()
            except WipeAgentError as exc:  # a full disk must not stop the agent
                log.warning("could not check for phones that never came back: %s", exc)
                wait = UNRETURNED_CHECK_S
            await self.clock.sleep(wait)

    async def run(self, *, until: Callable[[Agent], bool] | None = None
                  ) -> list[SessionResult]:
        """Run until cancelled, or until `until(agent)` holds while no session runs."""
        self._started = self.clock.monotonic()
        await self.finish_unreachable()
        consumers = [asyncio.create_task(self._consume(s), name=f"source {s.name}")
                     for s in self.sources]
        expiry = asyncio.create_task(self._expire_loop(), name="expire unreturned")
        try:
            while True:
                self._finished.clear()
                idle = not self.running and not self.leaving
                if until is not None and idle and until(self):
                    return self.results
                for consumer in consumers:
                    if consumer.done():
                        consumer.result()  # _consume never raises but for cancellation
                live = [c for c in consumers if not c.done()]
                waiter = asyncio.create_task(self._finished.wait())
                await asyncio.wait([waiter, *live], return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
        finally:
            pending = (consumers + [expiry] + [r.task for r in self.running.values()]
                       + list(self.leaving.values()))
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, *self._closing, return_exceptions=True)
