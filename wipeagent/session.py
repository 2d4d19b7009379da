"""DeviceSession: one phone's workflow as a journaled state machine.

connect/identify -> diagnose -> plan (policy gate) -> confirm -> plant canary -> erase
-> await return (same identity) -> verify -> decide -> certify

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

from wipeagent.clock import Clock
from wipeagent.errors import (
    DeviceError,
    DeviceGone,
    DeviceTimeout,
    IdentityMismatch,
    StoreError,
    WipeAgentError,
)
from wipeagent.models import (
    Canary,
    CheckResult,
    DeviceIdentity,
    ErasePlan,
    EraseRecord,
    NistCategory,
    Outcome,
    Refusal,
    SessionRecord,
    StationInfo,
)
from wipeagent.outcome import Decision, decide, not_erased
from wipeagent.platforms.base import ErasePolicy, PlatformDriver
from wipeagent.store import CertificateRow, Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionEvent:
    """Progress for people watching the bench (CLI, dashboard, demo)."""

    slot: str
    session_id: str
    step: str
    message: str
    outcome: Outcome | None = None
    instructions: tuple[str, ...] = ()


Observer = Callable[[SessionEvent], None]


class Certifier(Protocol):
    """Issues and stores a session's certificate exactly once."""

    async def certify(self, record: SessionRecord) -> CertificateRow: ...


# True when a technician (or the policy) allows this phone to be erased; False (not
# confirmed) or a Refusal with its own reason code and hint when not.
EraseGate = Callable[["DeviceSession", DeviceIdentity, ErasePlan], Awaitable[bool | Refusal]]


async def allow_all(_s: DeviceSession, _i: DeviceIdentity, _p: ErasePlan) -> bool:
    """The `auto` policy: the precondition checks are the only gate."""
    return True


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

    def apply(self, step: str, data: dict[str, Any]) -> None:
        """Replay one journaled step."""
        if step == "identify":
            self.identity = DeviceIdentity.model_validate(data["identity"])
        elif step == "diagnose":
            self.diagnostics = [CheckResult.model_validate(c) for c in data["checks"]]
        elif step == "plan":
            self.preconditions = [CheckResult.model_validate(c) for c in data["checks"]]
            self.plan = ErasePlan.model_validate(data["plan"]) if data.get("plan") else None
            self.refusal = Refusal.model_validate(data["refusal"]) if data.get("refusal") else None
        elif step == "canary":
            self.canary = Canary.model_validate(data["canary"])
        elif step == "erase_started":
            self.erase = EraseRecord.model_validate(data["erase"])
        elif step == "returned":
            self.returned = DeviceIdentity.model_validate(data["identity"])
            if self.erase is not None:
                self.erase = self.erase.model_copy(
                    update={"ended_at": datetime.fromisoformat(data["at"])}
                )
        elif step == "confirmed":
            self.operator = data.get("operator")
        elif step == "verify":
            self.verification = [CheckResult.model_validate(c) for c in data["checks"]]
        elif step == "outcome":
            self.decision = Decision(
                Outcome(data["outcome"]),
                NistCategory(data["category"]) if data.get("category") else None,
                tuple(data["reasons"]),
                tuple(data["exceptions"]),
                tuple(data.get("codes", ())),
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
        self.state = _State()
        # The identity this run of the session read from the phone (not the journal's).
        self._identified: DeviceIdentity | None = None
        self.log = logging.LoggerAdapter(log, {"slot": slot})

    @property
    def expects_departure(self) -> bool:
        """True while the phone is expected to vanish: between starting the erase and the
        phone coming back."""
        return self.state.erase is not None and self.state.returned is None

    # -- plumbing -------------------------------------------------------------------------

    def _emit(self, step: str, message: str, **kw: Any) -> None:
        self.log.info("[%s] %s: %s", self.slot, step, message)
        if self.observer is not None:
            try:
                self.observer(SessionEvent(self.slot, self.session_id, step, message, **kw))
            except Exception:  # a broken display must never break a wipe
                self.log.exception("session observer failed")

    async def _journal(self, step: str, data: dict[str, Any], **kw: Any) -> None:
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
            self.session_id, "superseded", {"resumed": prior.id}, state="done",
            outcome="superseded",
        )
        self._emit("resume", f"resuming session {prior.id} from step {prior.state}")
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
        await self._journal("ended", {"reason": message, "certificate_id": row.certificate_id},
                            state="done", outcome="already_certified")
        self._emit("done", message)
        return SessionResult(self.session_id, self.slot, Outcome(row.outcome), identity,
                             (message,), (), row, None, ("already_certified",))

    async def _end_unidentified(self) -> None:
        """End earlier sessions on this slot that stopped before their phone was
        identified (agent killed or stopped between creating the session and `identify`).
        No phone was touched in them and none can be resumed, so they end without a
        certificate instead of staying open in the journal forever."""
        for row in await self.store.unidentified_sessions(self.slot, exclude=self.session_id):
            await self.store.journal(
                row.id, "ended",
                {"reason": "the agent stopped before the phone was identified",
                 "ended_by": self.session_id},
                state="done",
            )

    # -- the workflow ----------------------------------------------------------------------

    async def run(self) -> SessionResult:
        """Run (or resume) the session to its end. Never raises a DeviceError: a phone's
        failure ends its own session with a reason. CancelledError (agent shutdown) is
        re-raised with the journal left resumable."""
        self.state.started_at = self.clock.now()
        await self.store.create_session(self.session_id, self.slot)
        try:
            return await self._run()
        finally:
            await self.driver.close()

    async def _run(self) -> SessionResult:
        s = self.state
        try:
            await self._end_unidentified()
            self._emit("connect", "connecting")
            identity = await self.driver.identify()
            self._identified = identity
            await self._journal(
                "identify", {"identity": identity.model_dump(mode="json")},
                serial=identity.serial,
            )
            self._emit("identify", f"{identity.manufacturer} {identity.model} "
                                   f"serial {identity.serial}")
            adopted = await self._adopt_unfinished(identity)
            s = self.state  # adoption replaces the state with the journal's
            if s.identity is None:
                s.identity = identity
            if not adopted and self.present_at_start:
                earlier = await self._already_certified(identity)
                if earlier is not None:
                    return earlier

            if s.decision is None and s.erase is None:
                decision = await self._before_erase(identity)
                if decision is not None:
                    return await self._finish(decision)
            if s.decision is None:
                return await self._finish(await self._erase_and_verify())
            return await self._finish(s.decision)
        except (DeviceError, StoreError, ValidationError) as exc:
            return await self._fail(exc)
        except WipeAgentError as exc:
            return await self._fail(exc)

    async def _before_erase(self, identity: DeviceIdentity) -> Decision | None:
        """Diagnose, plan, gate and plant the canary; a Decision when the erase won't run."""
        s = self.state
        if not s.diagnostics:
            checks = await self.driver.diagnose(identity)
            await self._journal("diagnose", {"checks": _dump(checks)})
            self._emit("diagnose", f"{len(checks)} checks")
        if s.plan is None and s.refusal is None:
            pre, plan_or_refusal = self.driver.plan_erase(identity, s.diagnostics, self.policy)
            data: dict[str, Any] = {"checks": _dump(pre)}
            if isinstance(plan_or_refusal, Refusal):
                data["refusal"] = plan_or_refusal.model_dump(mode="json")
            else:
                data["plan"] = plan_or_refusal.model_dump(mode="json")
            await self._journal("plan", data)
        if s.refusal is not None:
            self._emit("plan", f"refused: {s.refusal.message}")
            return not_erased(f"{s.refusal.message} ({s.refusal.hint})", code=s.refusal.code)
        assert s.plan is not None
        self._emit("plan", f"{s.plan.technique} ({s.plan.category.value})")
        verdict = await self.gate(self, identity, s.plan)
        if isinstance(verdict, Refusal):
            return not_erased(f"{verdict.message} ({verdict.hint})", code=verdict.code)
        if verdict is not True:
            return not_erased("the erase was not confirmed by a technician",
                              code="not_confirmed")
        if s.canary is None:
            canary = await self.driver.plant_canary()
            await self._journal("canary", {"canary": canary.model_dump(mode="json")})
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
                self._emit("manual_reset", "waiting for the technician to reset the phone",
                           instructions=plan.instructions)
            self._emit("await_return", "waiting for the phone to come back")
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
            await self._journal("returned", {"identity": back.model_dump(mode="json"),
                                             "at": self.clock.now().isoformat()})
        if not s.verification:
            self._emit("verify", "verifying on the phone")
            checks = await self.driver.verify(s.identity, plan, s.canary)
            await self._journal("verify", {"checks": _dump(checks)})
        return decide(plan, s.verification)

    async def _begin_erase(self, plan: ErasePlan) -> None:
        record = EraseRecord(plan=plan, started_at=self.clock.now())
        await self._journal("erase_started", {"erase": record.model_dump(mode="json")})
        if plan.manual:
            self._emit("manual_reset", "waiting for the technician to reset the phone",
                       instructions=plan.instructions)
        else:
            self._emit("erase", plan.method)
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
        try:
            checks = await self.driver.verify(s.identity, plan, canary)
        except DeviceError as exc:  # e.g. the phone is just going down for its reset
            self.log.info("[%s] resumed: no verdict from the phone yet (%s)", self.slot, exc)
            return
        if decide(plan, checks).outcome is Outcome.NOT_ERASED:
            self.log.info("[%s] resumed: the phone has not been reset yet", self.slot)
            return
        self._emit("resume", "the phone was reset while the agent was stopped")
        await self._journal("returned", {"identity": current.model_dump(mode="json"),
                                         "at": self.clock.now().isoformat(),
                                         "seen": "after_restart"})
        await self._journal("verify", {"checks": _dump(checks)})

    async def _fail(self, exc: Exception) -> SessionResult:
        hint = exc.hint if isinstance(exc, WipeAgentError) else "set the phone aside"
        code = exc.code if isinstance(exc, WipeAgentError) else "bad_device_data"
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
            await self._journal("outcome", {
                "outcome": decision.outcome.value,
                "category": decision.category.value if decision.category else None,
                "reasons": list(decision.reasons),
                "exceptions": list(decision.exceptions),
                "codes": list(decision.codes),
            }, outcome=decision.outcome.value)
        decision = s.decision or decision
        record: SessionRecord | None = None
        certificate: CertificateRow | None = None
        if s.identity is not None:
            record = SessionRecord(
                session_id=self.session_id,
                slot=self.slot,
                station=self.station,
                operator=self.operator,
                destination=self.destination,
                started_at=s.started_at or self.clock.now(),
                ended_at=self.clock.now(),
                identity=s.identity,
                diagnostics=tuple(s.diagnostics),
                preconditions=tuple(s.preconditions),
                erase=s.erase,
                verification=tuple(s.verification),
                outcome=decision.outcome,
                category=decision.category,
                reasons=decision.reasons,
                exceptions=decision.exceptions,
            )
            certificate = await self.certifier.certify(record)
            await self._journal("certified", {"certificate_id": certificate.certificate_id,
                                              "sequence": certificate.sequence}, state="done")
        else:
            await self._journal("ended", {"reason": "phone never identified"}, state="done")
        self._emit("done", decision.outcome.value, outcome=decision.outcome)
        return SessionResult(self.session_id, self.slot, decision.outcome, s.identity,
                             decision.reasons, decision.exceptions, certificate, record,
                             decision.codes)
