"""The erase policies (config `policy.erase`) as session EraseGates.

A gate is awaited after the erase plan is made and before the canary is planted and the
erase starts. It is handed a GateRequest (slot, session, phone, plan, and a way to tell the
bench) and answers with a GateVerdict; the session applies it: it journals the verdict's
record, takes its operator, or ends not_erased ("not confirmed", or the gate's own
refusal). A gate never writes the journal or touches the session. The three policies:

- `confirm` (default): a signed-in technician confirms each phone through the control
  API (`POST /slots/{slot}/confirm`); an abort, or no answer within
  `control.confirm_timeout_s` bench seconds, is a no. The confirming operator is the
  verdict's operator and so appears in the certificate (custody.operator).
- `intake`: only phones the platform booked in (serial or IMEI on the intake list).
- `auto`: no gate beyond the driver's own precondition checks.

Each allowed erase of `confirm` / `intake` is journaled (`confirmed` / `booked_in`) before
the erase starts, so who or what allowed it stays on record.
"""

from __future__ import annotations

from wipeagent.clock import Clock
from wipeagent.config import AgentConfig
from wipeagent.control.bench import BenchState
from wipeagent.control.intake import IntakeList
from wipeagent.models import DeviceIdentity, Refusal
from wipeagent.session import NOT_CONFIRMED, EraseGate, GateRequest, GateVerdict
from wipeagent.steps import JournalStep, SessionStep
from wipeagent.store import Store


def _phone(identity: DeviceIdentity) -> str:
    return f"{identity.manufacturer} {identity.model} serial {identity.serial}"


class ConfirmGate:
    """`confirm`: wait for a signed-in technician to confirm this phone."""

    def __init__(self, bench: BenchState, clock: Clock, timeout_s: float) -> None:
        self.bench = bench
        self.clock = clock
        self.timeout_s = timeout_s

    async def __call__(self, request: GateRequest) -> GateVerdict:
        identity, slot = request.identity, request.slot
        confirmation = self.bench.request_confirmation(slot, request.session_id,
                                                       identity.serial)
        request.emit(SessionStep.CONFIRM,
                     f"confirm the erase of {_phone(identity)}: {request.plan.technique}",
                     instructions=(f"check that the phone on {slot} is {_phone(identity)}",
                                   f"then run: wipeagent confirm {slot}",
                                   f"or, to keep its data: wipeagent abort {slot}"))
        try:
            operator = await self.clock.wait_for(confirmation.answer, self.timeout_s)
        except TimeoutError:
            request.emit(SessionStep.CONFIRM, f"nobody confirmed within {self.timeout_s:g} s: "
                         "the phone is not erased")
            return NOT_CONFIRMED
        finally:
            self.bench.withdraw(confirmation)
        if operator is None:
            request.emit(SessionStep.CONFIRM, "aborted: the phone is not erased")
            return NOT_CONFIRMED
        request.emit(SessionStep.CONFIRM, f"erase confirmed by {operator}")
        return GateVerdict(True, operator=operator, record_step=JournalStep.CONFIRMED,
                           record={"serial": identity.serial,
                                   "at": self.clock.now().isoformat()})


class IntakeGate:
    """`intake`: erase only phones whose serial or IMEI is on the intake list. A phone
    that is not booked in waits up to `wait_s` bench seconds for its barcode to be
    scanned on the bench page (or for the platform to book it in)."""

    def __init__(self, bench: BenchState, intake: IntakeList, clock: Clock,
                 wait_s: float = 0.0) -> None:
        self.bench = bench
        self.intake = intake
        self.clock = clock
        self.wait_s = wait_s

    async def __call__(self, request: GateRequest) -> GateVerdict:
        identity = request.identity
        entry = await self.intake.match(identity)
        if entry is None and self.wait_s > 0:
            deadline = self.clock.monotonic() + self.wait_s
            request.emit(SessionStep.INTAKE, f"{_phone(identity)} is not booked in: scan its "
                         "IMEI or booking reference")
            request.emit(SessionStep.ATTENTION, "scan the phone's IMEI to book it in",
                         attention="scan_intake")
            while entry is None and (left := deadline - self.clock.monotonic()) > 0:
                # Woken by a scan; the periodic look catches a platform feed.
                await self.bench.intake_changed(min(left, 30.0))
                entry = await self.intake.match(identity)
        if entry is None:
            request.emit(SessionStep.INTAKE,
                         f"{_phone(identity)} is not booked in: the phone is not erased",
                         instructions=("book the phone in on the platform (or POST /intake), "
                                       "then unplug it and plug it in again",))
            return GateVerdict(False, refusal=Refusal(
                code="not_booked_in",
                message=f"{_phone(identity)} is not booked in for erasure",
                hint="book the phone in on the platform, then unplug it and plug it in again"))
        ref = f", reference {entry.reference}" if entry.reference else ""
        request.emit(SessionStep.INTAKE, f"booked in by {entry.kind} {entry.identifier}{ref}")
        return GateVerdict(True, operator=self.bench.operator,
                           record_step=JournalStep.BOOKED_IN,
                           record={**entry.as_dict(), "at": self.clock.now().isoformat()})


class AutoGate:
    """`auto`: no gate; names the signed-in operator (if any) as the one at the bench."""

    def __init__(self, bench: BenchState) -> None:
        self.bench = bench

    async def __call__(self, request: GateRequest) -> GateVerdict:
        return GateVerdict(True, operator=self.bench.operator)


def make_gate(config: AgentConfig, bench: BenchState, store: Store, clock: Clock) -> EraseGate:
    """The EraseGate for `config.policy.erase` (the runner passes it to build_agent)."""
    policy = config.policy.erase
    if policy == "confirm":
        return ConfirmGate(bench, clock, config.control.confirm_timeout_s)
    if policy == "intake":
        return IntakeGate(bench, IntakeList(store), clock, config.control.intake_wait_s)
    return AutoGate(bench)
