"""The erase policies (config `policy.erase`) as session EraseGates.

A gate is awaited after the erase plan is made and before the canary is planted and the
erase starts; False means the phone is not erased (the session ends not_erased,
"not confirmed"). The three policies:

- `confirm` (default): a signed-in technician confirms each phone through the control
  API (`POST /slots/{slot}/confirm`); an abort, or no answer within
  `control.confirm_timeout_s` bench seconds, is a no. The confirming operator is set on
  the session and so appears in the certificate (custody.operator).
- `intake`: only phones the platform booked in (serial or IMEI on the intake list).
- `auto`: no gate beyond the driver's own precondition checks.

Each allowed erase is journaled as a step (`confirmed` / `booked_in`) before the erase
starts, so who or what allowed it stays on record.
"""

from __future__ import annotations

import logging

from wipeagent.clock import Clock
from wipeagent.config import AgentConfig
from wipeagent.control.bench import BenchState
from wipeagent.control.intake import IntakeList
from wipeagent.models import DeviceIdentity, ErasePlan, Refusal
from wipeagent.session import DeviceSession, EraseGate, SessionEvent
from wipeagent.steps import JournalStep, SessionStep
from wipeagent.store import Store

log = logging.getLogger(__name__)


def _emit(session: DeviceSession, bench: BenchState, step: SessionStep, message: str,
          instructions: tuple[str, ...] = ()) -> None:
    """Tell whoever watches the bench; the session's observer normally includes `bench`."""
    event = SessionEvent(session.slot, session.session_id, step, message,
                         instructions=instructions)
    log.info("[%s] %s: %s", session.slot, step, message)
    try:
        if session.observer is not None:
            session.observer(event)
        else:
            bench.observe(event)
    except Exception:  # a broken display must never break a wipe
        log.exception("observer failed")


def _phone(identity: DeviceIdentity) -> str:
    return f"{identity.manufacturer} {identity.model} serial {identity.serial}"


class ConfirmGate:
    """`confirm`: wait for a signed-in technician to confirm this phone."""

    def __init__(self, bench: BenchState, clock: Clock, timeout_s: float) -> None:
        self.bench = bench
        self.clock = clock
        self.timeout_s = timeout_s

    async def __call__(self, session: DeviceSession, identity: DeviceIdentity,
                       plan: ErasePlan) -> bool:
        confirmation = self.bench.request_confirmation(session.slot, session.session_id,
                                                       identity.serial)
        _emit(session, self.bench, SessionStep.CONFIRM,
              f"confirm the erase of {_phone(identity)}: {plan.technique}",
              instructions=(f"check that the phone on {session.slot} is {_phone(identity)}",
                            f"then run: wipeagent confirm {session.slot}",
                            f"or, to keep its data: wipeagent abort {session.slot}"))
        try:
            operator = await self.clock.wait_for(confirmation.answer, self.timeout_s)
        except TimeoutError:
            _emit(session, self.bench, SessionStep.CONFIRM,
                  f"nobody confirmed within {self.timeout_s:g} s: the phone is not erased")
            return False
        finally:
            self.bench.withdraw(confirmation)
        if operator is None:
            _emit(session, self.bench, SessionStep.CONFIRM, "aborted: the phone is not erased")
            return False
        session.operator = operator
        await session.store.journal(session.session_id, JournalStep.CONFIRMED, {
            "operator": operator, "serial": identity.serial,
            "at": self.clock.now().isoformat()})
        _emit(session, self.bench, SessionStep.CONFIRM, f"erase confirmed by {operator}")
        return True


class IntakeGate:
    """`intake`: erase only phones whose serial or IMEI is on the intake list."""

    def __init__(self, bench: BenchState, intake: IntakeList, clock: Clock) -> None:
        self.bench = bench
        self.intake = intake
        self.clock = clock

    async def __call__(self, session: DeviceSession, identity: DeviceIdentity,
                       plan: ErasePlan) -> bool | Refusal:
        entry = await self.intake.match(identity)
        if entry is None:
            _emit(session, self.bench, SessionStep.INTAKE,
                  f"{_phone(identity)} is not booked in: the phone is not erased",
                  instructions=("book the phone in on the platform (or POST /intake), "
                                "then unplug it and plug it in again",))
            return Refusal(code="not_booked_in",
                           message=f"{_phone(identity)} is not booked in for erasure",
                           hint="book the phone in on the platform, then unplug it and plug "
                                "it in again")
        if self.bench.operator is not None:
            session.operator = self.bench.operator
        await session.store.journal(session.session_id, JournalStep.BOOKED_IN, {
            **entry.as_dict(), "at": self.clock.now().isoformat()})
        ref = f", reference {entry.reference}" if entry.reference else ""
        _emit(session, self.bench, SessionStep.INTAKE,
              f"booked in by {entry.kind} {entry.identifier}{ref}")
        return True


class AutoGate:
    """`auto`: no gate; records the signed-in operator (if any) as the one at the bench."""

    def __init__(self, bench: BenchState) -> None:
        self.bench = bench

    async def __call__(self, session: DeviceSession, identity: DeviceIdentity,
                       plan: ErasePlan) -> bool:
        if self.bench.operator is not None:
            session.operator = self.bench.operator
        return True


def make_gate(config: AgentConfig, bench: BenchState, store: Store, clock: Clock) -> EraseGate:
    """The EraseGate for `config.policy.erase` (the runner passes it to build_agent)."""
    policy = config.policy.erase
    if policy == "confirm":
        return ConfirmGate(bench, clock, config.control.confirm_timeout_s)
    if policy == "intake":
        return IntakeGate(bench, IntakeList(store), clock)
    return AutoGate(bench)
