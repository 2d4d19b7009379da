"""BenchState: what the bench looks like to a technician, built from SessionEvents.

It is the Observer the sessions report to (`bench.observe`), optionally attached to the
Agent (`bench.attach(agent)`) to read which sessions are running and which phone each one
identified. It also holds the two things a technician adds to the bench: who is signed in,
and the answers to pending erase confirmations (the `confirm` policy's gate waits on them).

Everything here runs on the event loop thread; nothing blocks.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from wipeagent.clock import Clock

# ControlError lives in wipeagent.errors; importable from here too (the control modules).
from wipeagent.errors import ControlError as ControlError  # noqa: PLC0414 - re-export
from wipeagent.models import DeviceIdentity
from wipeagent.session import SessionEvent
from wipeagent.steps import SessionStep

if TYPE_CHECKING:
    from wipeagent.daemon import RunningPhones

# An operator name goes into signed certificates (custody.operator, at most 128 chars) and
# onto terminals: printable, no markup or control characters, bounded.
OPERATOR_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._@+-]{0,63}$")

# How far along a session is after each step, for a progress bar (0..1). The steps in
# NO_PROGRESS (notices, resume, pause) leave the progress where it was; a test holds every
# SessionStep to be in one of the two.
STEP_PROGRESS: dict[SessionStep, float] = {
    SessionStep.CONNECT: 0.05,
    SessionStep.IDENTIFY: 0.10,
    SessionStep.DIAGNOSE: 0.20,
    SessionStep.PLAN: 0.30,
    SessionStep.CONFIRM: 0.35,
    SessionStep.INTAKE: 0.35,
    SessionStep.ERASE: 0.45,
    SessionStep.MANUAL_RESET: 0.45,
    SessionStep.AWAIT_RETURN: 0.60,
    SessionStep.VERIFY: 0.85,
    SessionStep.HANDOFF: 0.90,
    SessionStep.FINAL_RESET: 0.95,
    SessionStep.DONE: 1.0,
}
# IMEI: a question between identify and diagnose, the progress stays where it is.
NO_PROGRESS = frozenset({SessionStep.RESUME, SessionStep.NOTICE, SessionStep.PAUSED,
                         SessionStep.IMEI})

HISTORY = 32  # events kept per slot
MAX_SLOTS = 256  # slots remembered (a flapping source must not grow memory without bound)


def check_operator(name: object) -> str:
    """A valid operator name, or ControlError (400)."""
    if not isinstance(name, str) or not OPERATOR_PATTERN.fullmatch(name):
        raise ControlError(
            "bad_operator", "an operator name is 1-64 letters, digits, spaces or ._@+-",
            status=400, hint="sign in with your badge name, e.g. `wipeagent login j.smith`")
    return name


@dataclass
class PhoneSummary:
    """Who the phone on a slot is (from the session's validated identity)."""

    platform: str
    manufacturer: str
    model: str
    serial: str
    imeis: tuple[str, ...]

    @classmethod
    def of(cls, identity: DeviceIdentity) -> PhoneSummary:
        return cls(identity.platform.value, identity.manufacturer, identity.model,
                   identity.serial, identity.imeis)

    def as_dict(self) -> dict[str, Any]:
        return {"platform": self.platform, "manufacturer": self.manufacturer,
                "model": self.model, "serial": self.serial, "imeis": list(self.imeis)}


@dataclass
class Confirmation:
    """A phone waiting for a technician's yes or no."""

    slot: str
    session_id: str
    serial: str
    requested_at: str
    # Resolves to the confirming operator's name, or None for an abort.
    answer: asyncio.Future[str | None]


@dataclass
class SlotState:
    """One bench slot as the API reports it."""

    slot: str
    session_id: str = ""
    step: str = "waiting"
    message: str = ""
    progress: float = 0.0
    outcome: str | None = None
    instructions: tuple[str, ...] = ()
    phone: PhoneSummary | None = None
    running: bool = False
    updated_at: str = ""
    history: deque[dict[str, str]] = field(default_factory=lambda: deque(maxlen=HISTORY))


class BenchState:
    """Per-slot status for the control API; pending confirmations; the signed-in operator."""

    def __init__(self, clock: Clock, *, station_id: str = "", policy: str = "confirm") -> None:
        self.clock = clock
        self.station_id = station_id
        self.policy = policy
        self.agent: RunningPhones | None = None
        self.slots: dict[str, SlotState] = {}
        self.pending: dict[str, Confirmation] = {}
        self.operator: str | None = None
        self.signed_in_at: str | None = None
        # Certificates are signed under a development CA (allow_development_pki).
        self.development_pki = False
        self._changed = asyncio.Event()

    # -- inputs ---------------------------------------------------------------------------

    def attach(self, agent: RunningPhones) -> None:
        """Read the running phones (and who they are) from this view (the Agent)."""
        self.agent = agent

    def observe(self, event: SessionEvent) -> None:
        """The session Observer: fold one event into its slot's state. Never raises."""
        state = self.slots.get(event.slot)
        if state is None:
            if len(self.slots) >= MAX_SLOTS:
                idle = [s for s in self.slots.values() if not s.running]
                if idle:
                    del self.slots[min(idle, key=lambda s: s.updated_at).slot]
            state = self.slots[event.slot] = SlotState(event.slot)
        now = self.clock.now().isoformat(timespec="seconds")
        new_session = event.session_id and event.session_id != state.session_id
        if new_session and event.step != SessionStep.RESUME:
            if event.step == SessionStep.CONNECT:
                # A new session on this slot: forget the previous phone's outcome.
                state.outcome, state.phone, state.instructions = None, None, ()
                state.progress = 0.0
            state.session_id = event.session_id
        if event.step == SessionStep.RESUME:
            state.session_id = event.session_id
        state.step = str(event.step)
        state.message = event.message
        state.updated_at = now
        if event.step in STEP_PROGRESS:
            state.progress = STEP_PROGRESS[event.step]
        if event.instructions:
            state.instructions = event.instructions
        if event.outcome is not None:
            state.outcome = event.outcome.value
        if event.step in (SessionStep.DONE, SessionStep.PAUSED):
            state.running = False
        elif event.session_id:
            state.running = True
        state.history.append({"at": now, "step": str(event.step), "message": event.message})
        self._identify(state)
        self._changed.set()

    def _identify(self, state: SlotState) -> None:
        """Copy the identity of the session running on this slot, if the agent has one."""
        if self.agent is None:
            return
        phone = self.agent.phone_on(state.slot)
        if phone is not None and phone.identity is not None:
            state.phone = PhoneSummary.of(phone.identity)

    # -- operator -------------------------------------------------------------------------

    def sign_in(self, operator: object) -> str:
        """Sign an operator in at this bench (replaces whoever was signed in)."""
        self.operator = check_operator(operator)
        self.signed_in_at = self.clock.now().isoformat(timespec="seconds")
        self._changed.set()
        return self.operator

    def sign_out(self) -> None:
        self.operator = None
        self.signed_in_at = None
        self._changed.set()

    # -- confirmations --------------------------------------------------------------------

    def request_confirmation(self, slot: str, session_id: str,
                             serial: str) -> Confirmation:
        """Register a phone that waits for a technician; the gate awaits `answer`."""
        old = self.pending.pop(slot, None)
        if old is not None and not old.answer.done():
            old.answer.set_result(None)  # a stale question is never answered "yes"
        confirmation = Confirmation(
            slot, session_id, serial, self.clock.now().isoformat(timespec="seconds"),
            asyncio.get_running_loop().create_future())
        self.pending[slot] = confirmation
        state = self.slots.get(slot)
        if state is not None:
            state.step = SessionStep.CONFIRM
        self._changed.set()
        return confirmation

    def withdraw(self, confirmation: Confirmation) -> None:
        """The gate stopped waiting (answered, timed out, session cancelled)."""
        if self.pending.get(confirmation.slot) is confirmation:
            del self.pending[confirmation.slot]
        if not confirmation.answer.done():
            confirmation.answer.cancel()
        self._changed.set()

    def _pending(self, slot: str, session_id: str | None, serial: str | None) -> Confirmation:
        confirmation = self.pending.get(slot)
        if confirmation is None or confirmation.answer.done():
            raise ControlError("nothing_to_confirm",
                               f"no phone on slot {slot} is waiting for a confirmation",
                               hint="check `wipeagent status` for the slot name")
        # The technician looked at one phone and answers for it: if the slot now holds
        # another session or phone (swapped meanwhile), refuse rather than erase it.
        if session_id is not None and session_id != confirmation.session_id:
            raise ControlError("session_changed",
                               f"slot {slot} now holds session {confirmation.session_id}, "
                               f"not {session_id}", hint="look at the phone again, then confirm")
        if serial is not None and serial != confirmation.serial:
            raise ControlError("phone_changed",
                               f"the phone on slot {slot} has serial {confirmation.serial}",
                               hint="look at the phone again, then confirm")
        return confirmation

    def confirm(self, slot: str, *, session_id: str | None = None,
                serial: str | None = None) -> Confirmation:
        """A signed-in operator allows the erase of the phone waiting on `slot`."""
        if self.operator is None:
            raise ControlError("not_signed_in", "nobody is signed in at this bench",
                               status=401, hint="sign in first: `wipeagent login NAME`")
        confirmation = self._pending(slot, session_id, serial)
        confirmation.answer.set_result(self.operator)
        self._changed.set()
        return confirmation

    def abort(self, slot: str, *, session_id: str | None = None,
              serial: str | None = None) -> Confirmation:
        """Refuse the erase of the phone waiting on `slot` (it ends not_erased)."""
        confirmation = self._pending(slot, session_id, serial)
        confirmation.answer.set_result(None)
        self._changed.set()
        return confirmation

    # -- outputs --------------------------------------------------------------------------

    async def changed(self, timeout_s: float) -> bool:
        """Wait (bench seconds) until something changes; False on timeout."""
        self._changed.clear()
        try:
            await self.clock.wait_for(self._changed.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def snapshot(self) -> dict[str, Any]:
        """The bench as plain JSON-able data (the body of GET /status)."""
        running_slots = set()
        if self.agent is not None:
            running_slots = {p.slot for p in self.agent.phones()}
        slots = []
        for state in sorted(self.slots.values(), key=lambda s: s.slot):
            pending = self.pending.get(state.slot)
            slots.append({
                "slot": state.slot,
                "session_id": state.session_id or None,
                "step": state.step,
                "message": state.message,
                "progress": round(state.progress, 2),
                "outcome": state.outcome,
                "instructions": list(state.instructions),
                "phone": state.phone.as_dict() if state.phone else None,
                "running": state.running if self.agent is None
                else state.slot in running_slots,
                "awaiting_confirmation": pending is not None and not pending.answer.done(),
                "updated_at": state.updated_at,
                "steps": list(state.history),
            })
        return {
            "station_id": self.station_id,
            "policy": self.policy,
            "development_pki": self.development_pki,
            "operator": self.operator,
            "signed_in_at": self.signed_in_at,
            "agent_attached": self.agent is not None,
            "slots": slots,
        }

    def slot(self, slot: str) -> dict[str, Any]:
        """One slot's entry of `snapshot()`, or ControlError 404."""
        for entry in self.snapshot()["slots"]:
            if entry["slot"] == slot:
                result: dict[str, Any] = entry
                return result
        raise ControlError("no_such_slot", f"no slot {slot} on this bench", status=404)
