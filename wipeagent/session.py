"""DeviceSession: one phone's workflow as a journaled state machine.

connect/identify -> [IMEI from the technician, booking] -> diagnose -> plan (policy gate)
-> confirm -> plant canary -> erase -> await return (same identity) -> verify -> decide
-> hand-off (erased phones) -> certify

Every step's result is committed to the journal before the next step starts. A session
whose erase began but was not verified ends NOT_ERASED, never "erased" (outcome.decide is
the only place an ERASED outcome is made, and only from passing validation checks).
When the same phone reappears after an agent crash, the session resumes from the journal
instead of starting again.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from pydantic import ValidationError

from wipeagent import attention
from wipeagent.clock import Clock
from wipeagent.errors import (
    BadDeviceData,
    DeviceError,
    DeviceGone,
    DeviceTimeout,
    IdentityMismatch,
    InternalError,
    StoreError,
    WipeAgentError,
)
from wipeagent.i18n import N_
from wipeagent.models import (
    Booking,
    Canary,
    CheckResult,
    DeviceIdentity,
    ErasePlan,
    EraseRecord,
    Handoff,
    HandoffItem,
    HandoffPolicy,
    HandoffResult,
    HandoffStatus,
    IdentifierSource,
    NistCategory,
    Outcome,
    Platform,
    Refusal,
    SessionRecord,
    StationInfo,
)
from wipeagent.outcome import Decision, decide, not_erased, with_handoff
from wipeagent.platforms.base import ErasePolicy, PlatformDriver
from wipeagent.steps import JournalStep, SessionState, SessionStep
from wipeagent.store import CertificateRow, Store
from wipeagent.technician import NO_TECHNICIAN, Technician

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionEvent:
    """Progress for people watching the bench (CLI, dashboard, demo)."""

    slot: str
    session_id: str
    step: SessionStep
    message: str
    outcome: Outcome | None = None
    instructions: tuple[str, ...] = ()
    # Step "attention": what the phone waits for the technician to do (wipeagent.attention
    # codes; "" when that is over). Step "done": the outcome's reason codes.
    attention: str = ""
    codes: tuple[str, ...] = ()
    exception_codes: tuple[str, ...] = ()  # step "done": the outcome's exception codes


Observer = Callable[[SessionEvent], None]


class Certifier(Protocol):
    """Issues and stores a session's certificate exactly once."""

    async def certify(self, record: SessionRecord) -> CertificateRow: ...


Emit = Callable[..., None]
"""`emit(step, message, instructions=(...))`: tell whoever watches the bench, through the
session (so the event carries the session's slot, id and serial)."""


@dataclass(frozen=True)
class GateRequest:
    """What an erase gate is asked: may the session on `slot` erase this phone with this
    plan? A gate reads this and answers with a GateVerdict; it never touches the session
    or its journal."""

    slot: str
    session_id: str
    identity: DeviceIdentity
    plan: ErasePlan
    emit: Emit


# The journal steps a gate may ask the session to write (who or what allowed the erase).
GATE_STEPS = frozenset({JournalStep.CONFIRMED, JournalStep.BOOKED_IN})


@dataclass(frozen=True)
class GateVerdict:
    """A gate's answer. The session applies it: `operator` becomes the session's operator
    (named in the certificate); `record` is journaled (as `record_step`) before the canary
    is planted and the erase starts, so who or what allowed the erase stays on record; a
    denial ends the session not_erased with `refusal`'s code, or `not_confirmed`."""

    allowed: bool
    operator: str | None = None
    record_step: JournalStep | None = None
    record: dict[str, Any] = field(default_factory=dict)
    refusal: Refusal | None = None

    def __post_init__(self) -> None:
        if self.record_step is not None and self.record_step not in GATE_STEPS:
            raise ValueError(f"a gate cannot journal {self.record_step!r}")


ALLOW = GateVerdict(True)
NOT_CONFIRMED = GateVerdict(False)

EraseGate = Callable[[GateRequest], Awaitable[GateVerdict]]
"""Asked after the plan and before the canary: may this phone be erased?"""


async def allow_all(_request: GateRequest) -> GateVerdict:
    """The `auto` policy: the precondition checks are the only gate."""
    return ALLOW


@dataclass
class SessionResult:
    session_id: str
    slot: str
    outcome: Outcome
    identity: DeviceIdentity | None
    reasons: tuple[str, ...]
    exceptions: tuple[str, ...]
    certificate: CertificateRow | None
    record: SessionRecord | None
    codes: tuple[str, ...] = ()


@dataclass
class _State:
    """What the journal holds so far; rebuilt from the journal on resume."""

    identity: DeviceIdentity | None = None
    diagnostics: list[CheckResult] = field(default_factory=list)
    preconditions: list[CheckResult] = field(default_factory=list)
    plan: ErasePlan | None = None
    refusal: Refusal | None = None
    canary: Canary | None = None
    erase: EraseRecord | None = None
    returned: DeviceIdentity | None = None
    verification: list[CheckResult] = field(default_factory=list)
    decision: Decision | None = None
    started_at: datetime | None = None
    operator: str | None = None  # who confirmed the erase (policy confirm)
    entered_imeis: tuple[str, ...] | None = None  # scanned / typed by the technician
    booking: Booking | None = None
    handoff_started_at: datetime | None = None
    # Journaled just before the last hand-off step (Android: USB debugging off).
    handoff_last: list[HandoffItem] | None = None
    handoff: Handoff | None = None

    def current_identity(self) -> DeviceIdentity | None:
        """The identity with what the technician added (IMEIs the phone would not give)."""
        if self.identity is None or not self.entered_imeis or self.identity.imeis:
            return self.identity
        return self.identity.model_copy(update={
            "imeis": self.entered_imeis, "imei_source": IdentifierSource.TECHNICIAN})

    def apply(self, step: str, data: dict[str, Any]) -> None:
        """Replay one journaled step."""
        if step == JournalStep.IDENTIFY:
            self.identity = DeviceIdentity.model_validate(data["identity"])
        elif step == JournalStep.IMEI_ENTERED:
            self.entered_imeis = tuple(data["imeis"])
        elif step == JournalStep.BOOKED_IN:
            self.booking = Booking(
                reference=data.get("reference", ""), matched_by=data["kind"],
                identifier=data["identifier"], source=data.get("source", "api"),
                added_by=data.get("added_by"))
            # Journaled by the intake gate's verdict, it names the operator at the bench.
            self.operator = data.get("operator") or self.operator
        elif step == JournalStep.HANDOFF_STARTED:
            self.handoff_started_at = datetime.fromisoformat(data["at"])
        elif step == JournalStep.HANDOFF_LAST:
            self.handoff_last = [HandoffItem.model_validate(i) for i in data["items"]]
        elif step == JournalStep.HANDOFF:
            self.handoff = Handoff.model_validate(data["handoff"])
        elif step == JournalStep.DIAGNOSE:
            self.diagnostics = [CheckResult.model_validate(c) for c in data["checks"]]
        elif step == JournalStep.PLAN:
            self.preconditions = [CheckResult.model_validate(c) for c in data["checks"]]
            self.plan = ErasePlan.model_validate(data["plan"]) if data.get("plan") else None
            self.refusal = Refusal.model_validate(data["refusal"]) if data.get("refusal") else None
        elif step == JournalStep.CANARY:
            self.canary = Canary.model_validate(data["canary"])
        elif step == JournalStep.ERASE_STARTED:
            self.erase = EraseRecord.model_validate(data["erase"])
        elif step == JournalStep.RETURNED:
            self.returned = DeviceIdentity.model_validate(data["identity"])
            if self.erase is not None:
                self.erase = self.erase.model_copy(
                    update={"ended_at": datetime.fromisoformat(data["at"])}
                )
        elif step == JournalStep.CONFIRMED:
            self.operator = data.get("operator") or self.operator
        elif step == JournalStep.VERIFY:
            self.verification = [CheckResult.model_validate(c) for c in data["checks"]]
        elif step == JournalStep.OUTCOME:
            self.decision = Decision(
                Outcome(data["outcome"]),
                NistCategory(data["category"]) if data.get("category") else None,
                tuple(data["reasons"]),
                tuple(data["exceptions"]),
                tuple(data.get("codes", ())),
                tuple(data.get("exception_codes", ())),
            )


async def _to_the_end(step: Coroutine[Any, Any, None]) -> None:
    """Once `step` has begun, run it to its end even if the caller is cancelled meanwhile
    (bounded by the step's own timeouts), then let the cancellation through. A step that
    had not begun is dropped. A second cancellation (a shutdown that will not wait) is not
    held back."""
    task = asyncio.ensure_future(step)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        if inspect.getcoroutinestate(step) == inspect.CORO_CREATED:
            task.cancel()  # not begun: nothing journaled, nothing sent
            raise
        await asyncio.wait([task])
        if not task.cancelled() and task.exception() is not None:
            log.warning("erase start failed while the agent was stopping: %s",
                        task.exception())
        raise


# Bench seconds the agent watches a phone go away for its final reset, and probes it
# afterwards. The technician's own deadline is the Technician's (control.final_reset_...).
FINAL_RESET_WATCH_S = 3600.0
FINAL_RESET_PROBE_S = 30.0


# What the technician is asked to do under policy.handoff = "final_reset" (English
# msgids, shown translated by the bench page; `wipeagent status` adds the command).
FINAL_RESET_INSTRUCTIONS = (
    N_("The erase is verified. Reset the phone once more for its next owner: Settings > "
       "System > Reset options > Erase all data (factory reset), and confirm."),
    N_("Do not set the phone up: leave it at the first screen of the setup wizard."),
    N_("Then confirm that the final reset is done: your name is recorded as its witness."),
)


def handoff_failures(handoff: Handoff | None) -> str | None:
    """What failed in a hand-off, for the certificate's exception (None: nothing)."""
    if handoff is None or handoff.status is not HandoffStatus.FAILED:
        return None
    what = "; ".join(f"{i.title}: {i.detail or i.result.value}" for i in handoff.failed[:6])
    return (f"the phone may not be in the state the hand-off policy "
            f"({handoff.policy.value}) promises ({what or 'see the hand-off section'})")


# A resumed session asks the phone this many times, this many bench seconds apart,
# whether its reset already happened (see DeviceSession._probe_after_restart).
PROBE_ATTEMPTS = 3
PROBE_RETRY_S = 5.0


def _dump(checks: list[CheckResult]) -> list[dict[str, Any]]:
    return [c.model_dump(mode="json") for c in checks]


class DeviceSession:
    """One phone from plug-in to certificate."""

    def __init__(
        self,
        *,
        slot: str,
        driver: PlatformDriver,
        store: Store,
        certifier: Certifier,
        station: StationInfo,
        policy: ErasePolicy,
        clock: Clock,
        gate: EraseGate = allow_all,
        destination: str = "resale",
        operator: str | None = None,
        observer: Observer | None = None,
        session_id: str | None = None,
        present_at_start: bool = False,
        technician: Technician = NO_TECHNICIAN,
        handoff_policy: HandoffPolicy = HandoffPolicy.RESTORE,
    ) -> None:
        self.slot = slot
        self.driver = driver
        self.store = store
        self.certifier = certifier
        self.station = station
        self.policy = policy
        self.clock = clock
        self.gate = gate
        self.destination = destination
        self.operator = operator
        self.observer = observer
        self.session_id = session_id or str(uuid.uuid4())
        # The phone was already plugged in when the agent (re)started (coldplug).
        self.present_at_start = present_at_start
        self.technician = technician
        self.handoff_policy = handoff_policy
        self._handing_off = False
        self.state = _State()
        # The identity this run of the session read from the phone (not the journal's).
        self._identified: DeviceIdentity | None = None
        self.log = logging.LoggerAdapter(log, {"slot": slot})

    @property
    def identity(self) -> DeviceIdentity | None:
        """The phone this session identified (or resumed), once it has."""
        return self.state.identity

    @property
    def expects_departure(self) -> bool:
        """True while the phone is expected to vanish: between starting the erase and the
        phone coming back, and during the hand-off (USB debugging goes off, a final reset
        reboots the phone; a phone unplugged then fails its hand-off, which the
        certificate says, instead of leaving the session waiting for it) and after it,
        until the certificate is issued (the phone no longer answers ADB by then)."""
        return (self.state.erase is not None and self.state.returned is None) \
            or self._handing_off or self.state.handoff_started_at is not None

    # -- plumbing -------------------------------------------------------------------------

    def _emit(self, step: SessionStep, message: str, **kw: Any) -> None:
        self.log.info("[%s] %s: %s", self.slot, step, message)
        if self.observer is not None:
            try:
                self.observer(SessionEvent(self.slot, self.session_id, step, message, **kw))
            except Exception:  # a broken display must never break a wipe
                self.log.exception("session observer failed")

    async def _journal(self, step: JournalStep, data: dict[str, Any], **kw: Any) -> None:
        await self.store.journal(self.session_id, step, data, **kw)
        self.state.apply(step, data)

    async def _adopt_unfinished(self, identity: DeviceIdentity) -> bool:
        """If this phone has an unfinished session in the journal, continue that one."""
        prior = await self.store.open_session_for(identity.serial, exclude=self.session_id)
        if prior is None:
            return False
        steps = await self.store.steps(prior.id)
        replayed = _State()
        for row in steps:
            replayed.apply(row.step, row.data)
        if replayed.identity is not None and replayed.identity.mismatches(identity):
            return False  # same serial string, different hardware: not the same phone
        await self.store.journal(
            self.session_id, JournalStep.SUPERSEDED, {"resumed": prior.id}, state=SessionState.DONE,
            outcome="superseded",
        )
        self._emit(SessionStep.RESUME, f"resuming session {prior.id} from step {prior.state}")
        self.session_id = prior.id
        replayed.started_at = datetime.fromisoformat(prior.created_at)
        self.state = replayed
        if replayed.operator:
            self.operator = replayed.operator
        return True

    async def _already_certified(self, identity: DeviceIdentity) -> SessionResult | None:
        """A phone that was already on the bench when the agent started, and whose last
        session here ended with a certificate, is not processed again: the agent may have
        been restarted after certifying it, before the technician took it away. Processing
        it again takes a deliberate unplug and re-plug."""
        row = await self.store.last_certificate_for_serial(identity.serial)
        if row is None:
            return None
        message = ("already certified before the agent started; unplug the phone and plug "
                   "it in again to process it again")
        code = "already_certified"
        await self._journal(JournalStep.ENDED,
                            {"reason": message, "certificate_id": row.certificate_id},
                            state=SessionState.DONE, outcome=code)
        self._emit(SessionStep.DONE, message, codes=(code,))
        return SessionResult(self.session_id, self.slot, Outcome(row.outcome), identity,
                             (message,), (), row, None, (code,))

    async def _end_unidentified(self) -> None:
        """End earlier sessions on this slot that stopped before their phone was
        identified (agent killed or stopped between creating the session and `identify`).
        No phone was touched in them and none can be resumed, so they end without a
        certificate instead of staying open in the journal forever."""
        for row in await self.store.unidentified_sessions(self.slot, exclude=self.session_id):
            await self.store.journal(
                row.id, JournalStep.ENDED,
                {"reason": "the agent stopped before the phone was identified",
                 "ended_by": self.session_id},
                state=SessionState.DONE,
            )

    async def _end_displaced(self, identity: DeviceIdentity) -> None:
        """Certify, not erased, the unfinished sessions on this slot whose erase started
        on another phone than the one answering here now. Their phone went away for its
        reset and a different one (or one claiming another identity) came back on its
        slot: nothing can verify that erase any more, and a session whose erase started
        must not stay without a certificate. (A phone that really is the same resumes its
        own session by serial: `_adopt_unfinished`, which runs first.)"""
        for row in await self.store.open_sessions_on(self.slot, exclude=self.session_id):
            replayed = _State()
            for step in await self.store.steps(row.id):
                replayed.apply(step.step, step.data)
            if replayed.erase is None or replayed.identity is None:
                continue
            differs = replayed.identity.mismatches(identity)
            if not differs:
                continue
            other = DeviceSession(
                slot=row.slot, driver=self.driver, store=self.store,
                certifier=self.certifier, station=self.station, policy=self.policy,
                clock=self.clock, destination=self.destination,
                operator=replayed.operator or self.operator, observer=self.observer,
                session_id=row.id, handoff_policy=self.handoff_policy)
            replayed.started_at = datetime.fromisoformat(row.created_at)
            other.state = replayed
            reason = (f"the erase was started but could not be verified: a different phone "
                      f"(serial {identity.serial}) answered on {self.slot} afterwards "
                      f"({', '.join(differs)} differ) ({IdentityMismatch.default_hint})")
            self.log.warning("[%s] session %s: %s", self.slot, row.id[:8], reason)
            await other._finish(not_erased(reason, code=IdentityMismatch.code))

    # -- the workflow ----------------------------------------------------------------------

    async def run(self) -> SessionResult:
        """Run (or resume) the session to its end. Never raises a DeviceError: a phone's
        failure ends its own session with a reason. CancelledError (agent shutdown) is
        re-raised with the journal left resumable."""
        self.state.started_at = self.clock.now()
        await self.store.create_session(self.session_id, self.slot)
        try:
            with attention.reporting_to(self._attention):
                return await self._run()
        finally:
            await self.driver.close()

    def _attention(self, code: str, message: str) -> None:
        self._emit(SessionStep.ATTENTION, message or "resumed", attention=code)

    async def _run(self) -> SessionResult:
        s = self.state
        try:
            await self._end_unidentified()
            self._emit(SessionStep.CONNECT, "connecting")
            identity = await self.driver.identify()
            self._identified = identity
            await self._journal(
                JournalStep.IDENTIFY, {"identity": identity.model_dump(mode="json")},
                serial=identity.serial,
            )
            self._emit(SessionStep.IDENTIFY, f"{identity.manufacturer} {identity.model} "
                                   f"serial {identity.serial}")
            adopted = await self._adopt_unfinished(identity)
            await self._end_displaced(identity)
            s = self.state  # adoption replaces the state with the journal's
            if s.identity is None:
                s.identity = identity
            if not adopted and self.present_at_start:
                earlier = await self._already_certified(identity)
                if earlier is not None:
                    return earlier
            if s.decision is None and s.erase is None:
                await self._complete_identity()
                current = s.current_identity() or identity
                decision = await self._before_erase(current)
                if decision is not None:
                    return await self._finish(decision)
            if s.decision is None:
                decision = await self._erase_and_verify()
                return await self._finish(await self._hand_off(decision))
            return await self._finish(s.decision)
        except (DeviceError, StoreError, ValidationError) as exc:
            return await self._fail(exc)
        except WipeAgentError as exc:
            return await self._fail(exc)
        except Exception as exc:
            # A bug, or phone input nothing anticipated: this session still ends with a
            # certificate saying what happened (above all when its erase had started),
            # and no other session is touched.
            self.log.exception("[%s] session failed unexpectedly", self.slot)
            return await self._fail(exc)

    async def _complete_identity(self) -> None:
        """Before the erase: the IMEIs a phone would not give, from the technician; the
        intake booking that matches the phone (its reference goes into the certificate).
        Each is journaled, so a resumed session does not ask again."""
        s = self.state
        identity = s.identity
        assert identity is not None
        if (identity.platform is Platform.ANDROID and not identity.imeis
                and identity.meid is None and s.entered_imeis is None):
            entered = await self.technician.enter_imeis(self, identity)
            if entered is not None:
                await self._journal(JournalStep.IMEI_ENTERED, {
                    "imeis": list(entered.imeis), "operator": entered.operator,
                    "at": entered.at.isoformat()})
                self._emit(SessionStep.IDENTIFY,
                           f"IMEI {', '.join(entered.imeis) or 'none'} entered "
                                       f"by {entered.operator or 'the technician'}")
        if s.booking is None:
            current = s.current_identity() or identity
            booking = await self.technician.booking(current)
            if booking is not None:
                await self._journal(JournalStep.BOOKED_IN, {
                    "identifier": booking.identifier, "kind": booking.matched_by,
                    "source": booking.source, "reference": booking.reference,
                    "added_by": booking.added_by, "at": self.clock.now().isoformat()})

    async def _before_erase(self, identity: DeviceIdentity) -> Decision | None:
        """Diagnose, plan, gate and plant the canary; a Decision when the erase won't run."""
        s = self.state
        if not s.diagnostics:
            checks = await self.driver.diagnose(identity)
            await self._journal(JournalStep.DIAGNOSE, {"checks": _dump(checks)})
            self._emit(SessionStep.DIAGNOSE, f"{len(checks)} checks")
        if s.plan is None and s.refusal is None:
            pre, plan_or_refusal = self.driver.plan_erase(identity, s.diagnostics, self.policy)
            data: dict[str, Any] = {"checks": _dump(pre)}
            if isinstance(plan_or_refusal, Refusal):
                data["refusal"] = plan_or_refusal.model_dump(mode="json")
            else:
                data["plan"] = plan_or_refusal.model_dump(mode="json")
            await self._journal(JournalStep.PLAN, data)
        if s.refusal is not None:
            self._emit(SessionStep.PLAN, f"refused: {s.refusal.message}")
            return not_erased(f"{s.refusal.message} ({s.refusal.hint})", code=s.refusal.code)
        assert s.plan is not None
        self._emit(SessionStep.PLAN, f"{s.plan.technique} ({s.plan.category.value})")
        verdict = await self.gate(GateRequest(self.slot, self.session_id, identity, s.plan,
                                              self._emit))
        if verdict.operator is not None:
            self.operator = verdict.operator
        if not verdict.allowed:
            refusal = verdict.refusal
            if refusal is not None:
                return not_erased(f"{refusal.message} ({refusal.hint})", code=refusal.code)
            return not_erased("the erase was not confirmed by a technician",
                              code="not_confirmed")
        if verdict.record_step is not None:
            record = dict(verdict.record)
            if verdict.operator is not None:
                record["operator"] = verdict.operator
            await self._journal(verdict.record_step, record)
        if s.canary is None:
            canary = await self.driver.plant_canary()
            await self._journal(JournalStep.CANARY, {"canary": canary.model_dump(mode="json")})
        return None

    async def _erase_and_verify(self) -> Decision:
        s = self.state
        assert s.plan is not None and s.identity is not None and s.canary is not None
        plan = s.plan
        # An erase already in the journal was started by an earlier run of the agent.
        resumed = s.erase is not None
        if s.erase is None:
            # Journal first: if the agent dies after sending the command, the resumed
            # session knows an erase may have happened and will verify, never assume.
            # A cancellation (agent stopping) must not split the journal entry from the
            # command: `erase_started` journaled but the command never sent leaves a phone
            # that is waited for and then certified not_erased for nothing.
            await _to_the_end(self._begin_erase(plan))
        if s.returned is None and resumed:
            await self._probe_after_restart(plan, s.canary)
        if s.returned is None:
            if resumed and plan.manual:
                # The display that showed the steps died with the old agent.
                self._emit(SessionStep.MANUAL_RESET,
                           "waiting for the technician to reset the phone",
                           instructions=plan.instructions)
            self._emit(SessionStep.AWAIT_RETURN, "waiting for the phone to come back")
            try:
                back = await self.driver.await_return(s.identity, plan)
            except DeviceError as exc:
                return not_erased(f"the erase was started but the phone could not be "
                                  f"verified afterwards: {exc} ({exc.hint})", code=exc.code)
            differs = s.identity.mismatches(back)
            if differs:
                raise IdentityMismatch(
                    f"a different phone came back on {self.slot}: {', '.join(differs)} differ"
                )
            await self._journal(JournalStep.RETURNED, {"identity": back.model_dump(mode="json"),
                                             "at": self.clock.now().isoformat()})
        if not s.verification:
            self._emit(SessionStep.VERIFY, "verifying on the phone")
            checks = await self.driver.verify(s.identity, plan, s.canary)
            await self._journal(JournalStep.VERIFY, {"checks": _dump(checks)})
        return decide(plan, s.verification)

    async def _begin_erase(self, plan: ErasePlan) -> None:
        record = EraseRecord(plan=plan, started_at=self.clock.now())
        await self._journal(JournalStep.ERASE_STARTED, {"erase": record.model_dump(mode="json")})
        if plan.manual:
            self._emit(SessionStep.MANUAL_RESET, "waiting for the technician to reset the phone",
                       instructions=plan.instructions)
        else:
            self._emit(SessionStep.ERASE, plan.method)
        try:
            await self.driver.start_erase(plan)
        except (DeviceGone, DeviceTimeout) as exc:
            # A phone that accepts the erase reboots at once; its answer can be lost with
            # the connection. Whether the reset happened is for verification to say, on the
            # phone that comes back (and if it never went away, the canaries are still
            # there): never treat a lost answer as "nothing happened".
            self.log.warning("[%s] connection lost while starting the erase (%s); waiting "
                             "for the phone to come back", self.slot, exc)

    async def _probe_after_restart(self, plan: ErasePlan, canary: Canary) -> None:
        """The agent stopped after the erase started. If the phone went through its reset
        while no agent watched (it rebooted, or the technician reset it), its going away
        can no longer be seen, and waiting for it would time out. So verify now, on the
        phone just identified: if the checks say erased, that is the phone's return
        (journaled as `returned` + `verify`, so the evidence comes from after the restart).
        Otherwise (canary still there, reset still pending or never sent) wait for the
        reset as usual; the evidence decides, the probe never makes an outcome itself."""
        s = self.state
        assert s.identity is not None
        if not (canary.files or canary.settings):
            # Without a planted canary only the phone's own account of the reset would
            # speak for it: wait to see it go away and come back instead.
            return
        current = self._identified or s.identity
        for attempt in range(1, PROBE_ATTEMPTS + 1):
            try:
                checks = await self.driver.verify(s.identity, plan, canary)
                break
            except (DeviceGone, DeviceTimeout) as exc:
                # The phone just identified may be going down for its reset, or still
                # settling after it: ask again shortly before deciding to wait for it.
                self.log.info("[%s] resumed: no verdict from the phone yet (%s)",
                              self.slot, exc)
                if attempt == PROBE_ATTEMPTS:
                    return
                await self.clock.sleep(PROBE_RETRY_S)
            except DeviceError as exc:
                self.log.info("[%s] resumed: no verdict from the phone (%s)", self.slot, exc)
                return
        if decide(plan, checks).outcome is Outcome.NOT_ERASED:
            self.log.info("[%s] resumed: the phone has not been reset yet", self.slot)
            return
        self._emit(SessionStep.RESUME, "the phone was reset while the agent was stopped")
        await self._journal(JournalStep.RETURNED, {"identity": current.model_dump(mode="json"),
                                         "at": self.clock.now().isoformat(),
                                         "seen": "after_restart"})
        await self._journal(JournalStep.VERIFY, {"checks": _dump(checks)})

    # -- hand-off ---------------------------------------------------------------------------

    async def _hand_off(self, decision: Decision) -> Decision:
        """After a verified erase, leave the phone in a state safe for its next owner
        (policy.handoff; see docs/handoff.md) and record how. A hand-off that fails makes
        the outcome erased_with_exceptions (outcome.with_handoff); the erase claim itself
        stays what verification established. A not_erased phone gets no hand-off."""
        s = self.state
        if decision.outcome is Outcome.NOT_ERASED or s.plan is None or s.identity is None:
            return decision
        if s.handoff is None:
            self._handing_off = True
            try:
                await self._run_hand_off(s.plan, s.identity)
            finally:
                self._handing_off = False
        return with_handoff(decision, handoff_failures(s.handoff))

    async def _run_hand_off(self, plan: ErasePlan, identity: DeviceIdentity) -> None:
        s = self.state
        policy = self.handoff_policy
        if identity.platform is not Platform.ANDROID:
            # An erased iPhone already is at Setup Assistant, unactivated: there is no
            # second reset to make; the hand-off records its state and unpairs.
            policy = HandoffPolicy.RESTORE
        if s.handoff_started_at is None:
            await self._journal(JournalStep.HANDOFF_STARTED, {"policy": policy.value,
                                                    "at": self.clock.now().isoformat()})
        items: list[HandoffItem] = []
        attested_by: str | None = None
        if s.handoff_last is not None:
            # The agent stopped just before or after the last step (Android: USB
            # debugging off; an iPhone has none after its hand_off). A phone that answers
            # this bench can still take it; one that no longer answers has it done; a
            # phone nobody can ask (gone from the bus) leaves it unconfirmed, not claimed.
            items = list(s.handoff_last)
            last: HandoffItem | None = None if identity.platform is not Platform.ANDROID \
                else HandoffItem(
                id="usb_debugging", title="USB debugging", result=HandoffResult.FAILED,
                method="settings put global adb_enabled 0 (last)",
                detail="sent, but the agent stopped before it could confirm it")
            try:
                if last is None:
                    pass
                elif self._identified is not None or await self.driver.reachable_with_bench_key(
                        FINAL_RESET_PROBE_S):
                    # The phone answers this bench: take the last step now.
                    last = await self.driver.finish_hand_off()
                else:
                    # The same evidence the last step itself relies on: the phone no
                    # longer answers this bench's key.
                    last = HandoffItem(
                        id="usb_debugging", title="USB debugging",
                        result=HandoffResult.RESTORED, after="0",
                        method="settings put global adb_enabled 0 (last); then ADB "
                               "connection attempts with this bench's key",
                        detail="USB debugging is off: the phone no longer answers ADB "
                               "(confirmed when the agent started again)")
            except DeviceError as exc:
                # No way to ask the phone (a USB phone gone from the bus): unconfirmed.
                self.log.warning("[%s] last hand-off step not confirmed: %s", self.slot, exc)
            if last is not None:
                items.append(last)
        else:
            self._emit(SessionStep.HANDOFF, f"hand-off ({policy.value})")
            try:
                if policy is HandoffPolicy.FINAL_RESET:
                    items, attested_by = await self._final_reset(plan, identity)
                else:
                    items = await self._restore(plan)
            except DeviceError as exc:
                # What was read back before the phone stopped answering stays on record.
                items = [*(s.handoff_last or []), HandoffItem(
                    id="handoff", title="Hand-off", result=HandoffResult.FAILED,
                    method="-", detail=f"the hand-off could not be completed: {exc} "
                                       f"({exc.hint})"[:500])]
        failed = any(i.result is HandoffResult.FAILED for i in items)
        handoff = Handoff(
            policy=policy,
            status=HandoffStatus.FAILED if failed else HandoffStatus.COMPLETED,
            started_at=s.handoff_started_at or self.clock.now(), ended_at=self.clock.now(),
            items=tuple(items), attested_by=attested_by)
        await self._journal(JournalStep.HANDOFF, {"handoff": handoff.model_dump(mode="json")})
        self._emit(SessionStep.HANDOFF, f"hand-off {handoff.status.value}: " + ", ".join(
            f"{i.id} {i.result.value}" for i in items)[:300])

    async def _restore(self, plan: ErasePlan) -> list[HandoffItem]:
        """Put back, read back, journal, then the last step (after which the phone is out
        of reach): a crash after the journal entry still has every reading."""
        items = await self.driver.hand_off(plan)
        await self._journal(JournalStep.HANDOFF_LAST, {
            "items": [i.model_dump(mode="json") for i in items],
            "at": self.clock.now().isoformat()})
        last = await self.driver.finish_hand_off()
        return [*items, last] if last is not None else items

    async def _final_reset(self, plan: ErasePlan, identity: DeviceIdentity
                           ) -> tuple[list[HandoffItem], str | None]:
        """Policy final_reset: the technician resets the phone from Settings once more
        and says so. The agent sees the phone go away and stop answering this bench's
        key; it cannot see the reset itself, so the item is `attested`, never verified,
        and the erase claim stays the first, verified one. If the phone still answers
        this bench afterwards (no reset, or no answer in time), the settings are put back
        as under policy restore and the final reset is recorded as failed."""
        self._emit(SessionStep.FINAL_RESET,
                   "the erase is verified: reset the phone once more for its "
                   "next owner", instructions=FINAL_RESET_INSTRUCTIONS)
        watcher = asyncio.ensure_future(
            self.driver.wait_until_gone(FINAL_RESET_WATCH_S))
        try:
            attestation = await self.technician.attest_final_reset(self, identity)
        finally:
            if not watcher.done():
                watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        went_away = (watcher.done() and not watcher.cancelled()
                     and watcher.exception() is None and bool(watcher.result()))
        await self.driver.close()
        answers = await self.driver.reachable_with_bench_key(FINAL_RESET_PROBE_S)
        operator = attestation.operator if attestation else None
        method = ("Settings > System > Reset options > Erase all data, by the technician; "
                  "the agent watched the ADB connection and then tried this bench's key")
        if attestation is not None and not answers:
            item = HandoffItem(
                id="final_reset", title="Final factory reset (technician)",
                result=HandoffResult.ATTESTED, before="Test Harness Mode",
                after="out-of-box (setup wizard)", method=method,
                detail=(f"attested by {operator or 'the technician'} at "
                        f"{attestation.at.isoformat(timespec='seconds')}; not verified by "
                        "the agent: the phone " + ("left the bench's ADB connection and "
                                                   if went_away else "")
                        + "no longer answers this bench's key")[:500])
            return [item], operator
        reason = ("the technician confirmed it, but the phone still answers this bench's "
                  "key: no reset took place" if attestation is not None and answers else
                  "not confirmed by a technician in time")
        items = [HandoffItem(
            id="final_reset", title="Final factory reset (technician)",
            result=HandoffResult.FAILED, method=method, detail=reason)]
        if answers:
            # The phone is still in the erase method's state: put the settings back.
            try:
                items += await self._restore(plan)
            except DeviceError as exc:
                items += [*(self.state.handoff_last or []), HandoffItem(
                    id="handoff", title="Hand-off", result=HandoffResult.FAILED, method="-",
                    detail=f"the settings could not be put back: {exc} ({exc.hint})"[:500])]
        return items, operator

    async def finish_unreachable(self) -> SessionResult:
        """Finish, without the phone, a session the agent left in (or after) its hand-off:
        that phone will not be seen again over ADB, and its verified erase must still get
        its certificate, with what the hand-off could not confirm recorded as failed.
        The session id is the journal's."""
        replayed = _State()
        for row in await self.store.steps(self.session_id):
            replayed.apply(row.step, row.data)
        row_session = await self.store.session(self.session_id)
        if row_session is not None:
            replayed.started_at = datetime.fromisoformat(row_session.created_at)
        self.state = replayed
        if replayed.operator:
            self.operator = replayed.operator
        assert replayed.plan is not None
        self._emit(SessionStep.RESUME,
                   "finishing the session of a phone that is no longer reachable")
        decision = replayed.decision or await self._hand_off(
            decide(replayed.plan, replayed.verification))
        return await self._finish(decision)

    async def finish_unreturned(self, reason: DeviceTimeout) -> SessionResult:
        """Finish, without the phone, a session whose erase started and whose phone never
        came back (Agent.expire_unreturned): not erased, with `reason`.
        The session id is the journal's."""
        replayed = _State()
        for row in await self.store.steps(self.session_id):
            replayed.apply(row.step, row.data)
        row_session = await self.store.session(self.session_id)
        if row_session is not None:
            replayed.started_at = datetime.fromisoformat(row_session.created_at)
        self.state = replayed
        if replayed.operator:
            self.operator = replayed.operator
        return await self._fail(reason)

    async def _fail(self, exc: Exception) -> SessionResult:
        hint = exc.hint if isinstance(exc, WipeAgentError) else "set the phone aside"
        if isinstance(exc, WipeAgentError):
            code = exc.code
        elif isinstance(exc, ValidationError):
            code = BadDeviceData.code  # a phone value that failed a record's validation
        else:
            exc = InternalError(f"internal error ({type(exc).__name__}: {str(exc)[:200]}); "
                                "the agent log has the details")
            code = exc.code
        if self.state.erase is not None:
            reason = (f"the erase was started but could not be verified: {exc} ({hint})")
        else:
            reason = f"{exc} ({hint})"
        self.log.warning("[%s] session failed: %s", self.slot, reason)
        try:
            return await self._finish(not_erased(reason, code=code))
        except StoreError as store_exc:
            self.log.error("[%s] journal unavailable: %s", self.slot, store_exc)
            return SessionResult(self.session_id, self.slot, Outcome.NOT_ERASED,
                                 self.state.identity, (reason, str(store_exc)), (), None, None,
                                 (code, StoreError.code))

    async def _finish(self, decision: Decision) -> SessionResult:
        s = self.state
        if s.decision is None:
            await self._journal(JournalStep.OUTCOME, {
                "outcome": decision.outcome.value,
                "category": decision.category.value if decision.category else None,
                "reasons": list(decision.reasons),
                "exceptions": list(decision.exceptions),
                "codes": list(decision.codes),
                "exception_codes": list(decision.exception_codes),
            }, outcome=decision.outcome.value)
        decision = s.decision or decision
        record: SessionRecord | None = None
        certificate: CertificateRow | None = None
        identity = s.current_identity()
        if identity is not None:
            record = SessionRecord(
                session_id=self.session_id,
                slot=self.slot,
                station=self.station,
                operator=self.operator,
                destination=self.destination,
                started_at=s.started_at or self.clock.now(),
                ended_at=self.clock.now(),
                identity=identity,
                diagnostics=tuple(s.diagnostics),
                preconditions=tuple(s.preconditions),
                erase=s.erase,
                verification=tuple(s.verification),
                outcome=decision.outcome,
                category=decision.category,
                reasons=decision.reasons,
                exceptions=decision.exceptions,
                handoff=s.handoff if decision.outcome is not Outcome.NOT_ERASED else None,
                booking=s.booking,
                reason_codes=decision.codes,
                exception_codes=decision.exception_codes,
            )
            certificate = await self.certifier.certify(record)
            await self._journal(JournalStep.CERTIFIED,
                                {"certificate_id": certificate.certificate_id,
                                 "sequence": certificate.sequence}, state=SessionState.DONE)
        else:
            await self._journal(JournalStep.ENDED, {"reason": "phone never identified"},
                                state=SessionState.DONE)
        self._emit(SessionStep.DONE, decision.outcome.value, outcome=decision.outcome,
                   codes=decision.codes, exception_codes=decision.exception_codes)
        return SessionResult(self.session_id, self.slot, decision.outcome, identity,
                             decision.reasons, decision.exceptions, certificate, record,
                             decision.codes)
