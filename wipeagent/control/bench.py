"""BenchState: what the bench looks like to a technician, built from SessionEvents.

It is the Observer the sessions report to (`bench.observe`), optionally attached to the
Agent (`bench.attach(agent)`) to read which sessions are running and which phone each one
identified. It also holds the two things a technician adds to the bench: who is signed in,
and the answers to pending erase confirmations (the `confirm` policy's gate waits on them).

Everything here runs on the event loop thread; nothing blocks.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from wipeagent.clock import Clock
from wipeagent.control.operators import OPERATOR_PATTERN, SignIn, SignIns

# ControlError lives in wipeagent.errors; importable from here too (the control modules).
from wipeagent.errors import ControlError as ControlError  # noqa: PLC0414 - re-export
from wipeagent.models import DeviceIdentity
from wipeagent.session import SessionEvent
from wipeagent.steps import SessionStep

if TYPE_CHECKING:
    from wipeagent.daemon import RunningPhones

# How far along a session is after each step, for a progress bar (0..1). The steps in
# NO_PROGRESS (notices, resume, pause, questions) leave the progress where it was; a test
# holds every SessionStep to be in one of the two.
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
# IMEI: a question between identify and diagnose; ATTENTION: the phone waits for a person
# within its step. The progress stays where it is.
NO_PROGRESS = frozenset({SessionStep.RESUME, SessionStep.NOTICE, SessionStep.PAUSED,
                         SessionStep.IMEI, SessionStep.ATTENTION})

HISTORY = 32  # events kept per slot
MAX_SLOTS = 256  # slots remembered (a flapping source must not grow memory without bound)
IDENTIFY_S = 30.0  # bench seconds a tile stays highlighted after "identify"

# What a finished phone's reason codes ask of the technician (the page and `status` show
# the instruction; the codes are the refusals in platforms/ and gates.py).
FIXABLE: dict[str, str] = {
    "lock_screen": "remove_lock_screen",
    "google_account": "remove_google_account",
    "find_my": "turn_off_find_my",
    "find_my_unknown": "turn_off_find_my",
    "device_owner": "remove_device_owner",
    "not_authorised": "allow_usb_debugging",
    "not_booked_in": "scan_intake",
}
# Reason codes of a session that could not finish (as opposed to a refusal).
FAILED: frozenset[str] = frozenset({
    "device_gone", "device_timeout", "protocol_error", "bad_device_data",
    "identity_mismatch", "validation_failed", "verification_failed", "store_error",
    "device_error", "error", "command_failed", "usb_interface_busy", "usbmuxd_wire",
    "journal_refused", "journal_damaged", "journal_behind", "certificate_error",
    "internal_error",
})
# Tile states, in the order the page counts them.
STATES = ("working", "needs_you", "erased", "not_erased", "failed")


def check_operator(name: object) -> str:
    """A valid operator name, or ControlError (400)."""
    if not isinstance(name, str) or not OPERATOR_PATTERN.fullmatch(name):
        raise ControlError(
            "bad_operator", "an operator name is 1-64 letters, digits, spaces or ._@+-",
            status=400, hint="sign in with your badge name, e.g. `wipeagent login j.smith`")
    return name


def tile_state(state: SlotState, awaiting: bool) -> tuple[str, str]:
    """(tile state, what the technician must do: a `need` code or "") of one slot."""
    if state.running:
        if awaiting:
            return "needs_you", "confirm_erase"
        if state.attention:
            return "needs_you", state.attention
        if state.step == "imei":
            return "needs_you", "enter_imei"
        if state.step == "final_reset":
            return "needs_you", "final_reset"
        if state.manual and state.step in ("manual_reset", "await_return"):
            # The technician resets the phone; the agent waits for it to come back.
            return "needs_you", "manual_reset"
        return "working", ""
    if state.outcome in ("erased", "erased_with_exceptions"):
        return "erased", ""
    if state.outcome == "not_erased":
        for code in state.codes:
            if code in FIXABLE:
                return "needs_you", FIXABLE[code]
        if any(code in FAILED for code in state.codes):
            return "failed", ""
        return "not_erased", ""
    if state.step == "notice":
        return "needs_you", "notice"
    return "empty", ""


@dataclass
class PhoneSummary:
    """Who the phone on a slot is (from the session's validated identity)."""

    platform: str
    manufacturer: str
    model: str
    serial: str
    imeis: tuple[str, ...]
    marketing_name: str = ""
    os_version: str = ""

    @classmethod
    def of(cls, identity: DeviceIdentity) -> PhoneSummary:
        return cls(identity.platform.value, identity.manufacturer, identity.model,
                   identity.serial, identity.imeis, identity.marketing_name,
                   identity.os_version)

    @property
    def name(self) -> str:
        """What a technician calls it: "iPhone 12", "Pixel 8" (the model code otherwise)."""
        return self.marketing_name or f"{self.manufacturer} {self.model}".strip()

    def as_dict(self) -> dict[str, Any]:
        return {"platform": self.platform, "manufacturer": self.manufacturer,
                "model": self.model, "marketing_name": self.marketing_name,
                "name": self.name, "serial": self.serial, "imeis": list(self.imeis),
                "os_version": self.os_version}


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
    step_since: str = ""  # when the current step began (wall clock, ISO)
    attention: str = ""  # wipeagent.attention code while the phone waits for someone
    codes: tuple[str, ...] = ()  # the outcome's reason codes
    exception_codes: tuple[str, ...] = ()  # and its exception codes
    manual: bool = False  # this session's erase is a guided manual reset
    manual_done: int = 0  # guided manual-reset steps the technician marked done
    certificate_id: str | None = None
    identify_until: float = 0.0  # clock.monotonic() until which the tile is highlighted
    history: deque[dict[str, str]] = field(default_factory=lambda: deque(maxlen=HISTORY))


class BenchState:
    """Per-slot status for the control API and the bench page; pending confirmations;
    who is signed in; subscribers waiting for changes (the page's event stream)."""

    def __init__(self, clock: Clock, *, station_id: str = "", policy: str = "confirm",
                 idle_signout_s: float = 900.0) -> None:
        self.clock = clock
        self.station_id = station_id
        self.policy = policy
        self.agent: RunningPhones | None = None
        self.slots: dict[str, SlotState] = {}
        self.notices: dict[str, dict[str, str]] = {}  # phone source -> its last notice
        self.pending: dict[str, Confirmation] = {}
        self.signins = SignIns(clock, idle_signout_s)
        # Certificates are signed under a development CA (allow_development_pki).
        self.development_pki = False
        self._changed = asyncio.Event()
        self._subscribers: set[Subscription] = set()
        self._intake = asyncio.Event()

    # -- inputs ---------------------------------------------------------------------------

    def attach(self, agent: RunningPhones) -> None:
        """Read the running phones (and who they are) from this view (the Agent)."""
        self.agent = agent

    def _is_source(self, slot: str) -> bool:
        """A notice from a phone source itself (usbmuxd gone, a source stopped), not from a
        phone on a slot."""
        names = {"usbmuxd"}
        sources = getattr(self.agent, "sources", ())  # the Agent's, when attached
        names |= {str(getattr(s, "name", "")) for s in sources}
        return slot in names and slot not in self.slots

    def observe(self, event: SessionEvent) -> None:
        """The session Observer: fold one event into its slot's state. Never raises."""
        if (event.step == SessionStep.NOTICE and not event.session_id
                and self._is_source(event.slot)):
            self.notices[event.slot] = {
                "source": event.slot, "message": event.message,
                "at": self.clock.now().isoformat(timespec="seconds")}
            self.touch()
            return
        state = self.slots.get(event.slot)
        if state is None:
            if len(self.slots) >= MAX_SLOTS:
                idle = [s for s in self.slots.values() if not s.running]
                if idle:
                    del self.slots[min(idle, key=lambda s: s.updated_at).slot]
            state = self.slots[event.slot] = SlotState(event.slot)
        now = self.clock.now().isoformat(timespec="seconds")
        state.updated_at = now
        if event.step == SessionStep.ATTENTION:
            # The phone waits for the technician (or no longer does): the step stays.
            state.attention = event.attention
            state.history.append({"at": now, "step": str(event.step),
                                  "message": event.message})
            self.touch(state.slot)
            return
        new_session = event.session_id and event.session_id != state.session_id
        if new_session and event.step != SessionStep.RESUME:
            if event.step == SessionStep.CONNECT:
                # A new session on this slot: forget the previous phone and its outcome.
                state.outcome, state.phone, state.instructions = None, None, ()
                state.codes, state.certificate_id, state.manual_done = (), None, 0
                state.exception_codes = ()
                state.manual = False
                state.progress = 0.0
            state.session_id = event.session_id
        if event.step == SessionStep.RESUME:
            state.session_id = event.session_id
        if event.step != state.step:
            state.step_since = now
            state.attention = ""
        state.step = str(event.step)
        state.message = event.message
        if event.step in STEP_PROGRESS:
            state.progress = STEP_PROGRESS[event.step]
        if event.instructions:
            state.instructions = event.instructions
        if event.step == SessionStep.MANUAL_RESET:
            state.manual = True
        if event.outcome is not None:
            state.outcome = event.outcome.value
        if event.codes:
            state.codes = event.codes
        if event.exception_codes:
            state.exception_codes = event.exception_codes
        if event.step in (SessionStep.DONE, SessionStep.PAUSED):
            state.running = False
            state.attention = ""
        elif event.session_id:
            state.running = True
        state.history.append({"at": now, "step": str(event.step), "message": event.message})
        self._identify(state)
        self.touch(state.slot)

    def _identify(self, state: SlotState) -> None:
        """Copy the identity of the session running on this slot, if the agent has one."""
        if self.agent is None:
            return
        phone = self.agent.phone_on(state.slot)
        if phone is not None and phone.identity is not None:
            state.phone = PhoneSummary.of(phone.identity)

    def touch(self, slot: str | None = None) -> None:
        """Something changed (a slot, or the bench when `slot` is None): wake the waiters."""
        self._changed.set()
        for subscriber in self._subscribers:
            subscriber.mark(slot)

    def intake_added(self) -> None:
        """Phones were booked in: wake the intake gates waiting for theirs."""
        event, self._intake = self._intake, asyncio.Event()
        event.set()

    async def intake_changed(self, timeout_s: float) -> bool:
        """Wait (bench seconds) until phones are booked in; False on timeout."""
        try:
            await self.clock.wait_for(self._intake.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    # -- operator -------------------------------------------------------------------------

    @property
    def operator(self) -> str | None:
        """The operator at the bench: the most recently active live sign-in."""
        latest = self.signins.latest()
        return latest.operator if latest else None

    def signed_in(self, token: str | None, *, touch: bool = False) -> SignIn | None:
        return self.signins.get(token, touch=touch)

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
        self.touch(slot)
        return confirmation

    def withdraw(self, confirmation: Confirmation) -> None:
        """The gate stopped waiting (answered, timed out, session cancelled)."""
        if self.pending.get(confirmation.slot) is confirmation:
            del self.pending[confirmation.slot]
        if not confirmation.answer.done():
            confirmation.answer.cancel()
        self.touch(confirmation.slot)

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

    def waiting(self) -> list[Confirmation]:
        """Every phone waiting for a confirmation, by slot."""
        return [c for _, c in sorted(self.pending.items()) if not c.answer.done()]

    def confirm(self, slot: str, *, operator: str | None, session_id: str | None = None,
                serial: str | None = None) -> Confirmation:
        """`operator` (signed in, proved by the caller) allows the erase on `slot`."""
        if operator is None:
            raise ControlError("not_signed_in", "nobody is signed in at this bench",
                               status=401, hint="sign in first: `wipeagent login NAME`")
        confirmation = self._pending(slot, session_id, serial)
        confirmation.answer.set_result(operator)
        self.touch(slot)
        return confirmation

    def abort(self, slot: str, *, session_id: str | None = None,
              serial: str | None = None) -> Confirmation:
        """Refuse the erase of the phone waiting on `slot` (it ends not_erased)."""
        confirmation = self._pending(slot, session_id, serial)
        confirmation.answer.set_result(None)
        self.touch(slot)
        return confirmation

    # -- the technician's other actions ---------------------------------------------------

    def _running(self, slot: str) -> SlotState:
        state = self.slots.get(slot)
        if state is None:
            raise ControlError("no_such_slot", f"no slot {slot} on this bench", status=404)
        return state

    def manual_step_done(self, slot: str, index: int, *, session_id: str | None = None) -> int:
        """Mark guided manual-reset step `index` (0-based) done; returns how many are."""
        state = self._running(slot)
        if not state.manual or not state.running:
            raise ControlError("no_manual_reset",
                               f"the phone on {slot} is not in a guided manual reset",
                               hint="only a phone showing reset steps has steps to mark")
        if session_id is not None and session_id != state.session_id:
            raise ControlError("session_changed", f"slot {slot} holds another session now",
                               hint="look at the phone again")
        if not 0 <= index < len(state.instructions):
            raise ControlError("bad_request", f"step: 0..{len(state.instructions) - 1}",
                               status=400)
        state.manual_done = max(state.manual_done, index + 1)
        self.touch(slot)
        return state.manual_done

    def highlight(self, slot: str) -> SlotState:
        """Highlight a slot's tile for IDENTIFY_S bench seconds ("identify")."""
        state = self._running(slot)
        state.identify_until = self.clock.monotonic() + IDENTIFY_S
        self.touch(slot)
        return state


    # -- outputs --------------------------------------------------------------------------

    async def changed(self, timeout_s: float) -> bool:
        """Wait (bench seconds) until something changes; False on timeout."""
        self._changed.clear()
        try:
            await self.clock.wait_for(self._changed.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def subscribe(self) -> Subscription:
        """Changes for one watcher (the page's event stream); `unsubscribe` when done."""
        subscription = Subscription()
        self._subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)

    def entry(self, state: SlotState, running_slots: set[str] | None = None) -> dict[str, Any]:
        """One slot as plain JSON-able data."""
        pending = self.pending.get(state.slot)
        awaiting = pending is not None and not pending.answer.done()
        # A finished session's task may still be unwinding in the agent when its last event
        # arrives; no later event would correct the tile, so "done" decides.
        running = (state.running if running_slots is None or state.step in ("done", "paused")
                   else state.slot in running_slots)
        view = state
        if running != state.running:
            view = SlotState(**{**state.__dict__, "running": running})
        tile, need = tile_state(view, awaiting)
        return {
            "slot": state.slot,
            "session_id": state.session_id or None,
            "step": state.step,
            "step_since": state.step_since or state.updated_at,
            "message": state.message,
            "progress": round(state.progress, 2),
            "outcome": state.outcome,
            "codes": list(state.codes),
            "exception_codes": list(state.exception_codes),
            "instructions": list(state.instructions),
            "manual_done": state.manual_done,
            "phone": state.phone.as_dict() if state.phone else None,
            "running": running,
            "awaiting_confirmation": awaiting,
            "state": tile,
            "need": need,
            "attention": state.attention,
            "identify": self.clock.monotonic() < state.identify_until,
            "certificate_id": state.certificate_id,
            "updated_at": state.updated_at,
            "steps": list(state.history),
        }

    def _running_slots(self) -> set[str] | None:
        if self.agent is None:
            return None
        return {p.slot for p in self.agent.phones()}

    def header(self) -> dict[str, Any]:
        """Bench-wide fields and the counts by tile state."""
        latest = self.signins.latest()
        counts = dict.fromkeys(STATES, 0)
        running_slots = self._running_slots()
        for state in self.slots.values():
            tile = self.entry(state, running_slots)["state"]
            if tile in counts:
                counts[tile] += 1
        return {
            "station_id": self.station_id,
            "policy": self.policy,
            "development_pki": self.development_pki,
            "operator": latest.operator if latest else None,
            "signed_in_at": latest.signed_in_at if latest else None,
            "agent_attached": self.agent is not None,
            "counts": counts,
            "waiting": len(self.waiting()),
            "notices": list(self.notices.values()),
            "server_time": self.clock.now().isoformat(timespec="milliseconds"),
        }

    def snapshot(self) -> dict[str, Any]:
        """The bench as plain JSON-able data (the body of GET /status)."""
        running_slots = self._running_slots()
        slots = [self.entry(state, running_slots)
                 for state in sorted(self.slots.values(), key=lambda s: s.slot)]
        return {**self.header(), "slots": slots}

    def slot(self, slot: str) -> dict[str, Any]:
        """One slot's entry of `snapshot()`, or ControlError 404."""
        state = self.slots.get(slot)
        if state is None:
            raise ControlError("no_such_slot", f"no slot {slot} on this bench", status=404)
        return self.entry(state, self._running_slots())


class Subscription:
    """What changed since a watcher last looked: dirty slot names and the bench header."""

    def __init__(self) -> None:
        self.slots: set[str] = set()
        self.header = True
        self.event = asyncio.Event()
        self.event.set()

    def mark(self, slot: str | None) -> None:
        if slot is not None and len(self.slots) < MAX_SLOTS:
            self.slots.add(slot)
        self.header = True
        self.event.set()

    def take(self) -> tuple[set[str], bool]:
        """The dirty slots and whether the header changed, cleared."""
        slots, header = self.slots, self.header
        self.slots, self.header = set(), False
        self.event.clear()
        return slots, header
