"""The bench's Technician (wipeagent.technician) behind the control API and bench page.

What a session asks of the people at the bench waits here until a signed-in operator
answers through the control API, or until its deadline passes:

- a phone that would not give its IMEI: `POST /slots/{slot}/imei {"imeis": [...]}`
  (`wipeagent intake imei SLOT IMEI...`; on the bench page the IMEI field of its tile,
  or a barcode scanned while it is the only phone waiting for one or its tile is
  selected), within `control.imei_timeout_s`; then the session goes on without one;
- the final reset of policy.handoff = "final_reset": `POST /slots/{slot}/handoff`
  (`wipeagent handoff SLOT`, "Final reset done" on the bench page), within
  `control.final_reset_timeout_s`; then the hand-off is recorded as failed.

Like a confirmation, an answer names the session or serial the technician looked at, so
an answer meant for a phone that was swapped meanwhile is refused. Who answers is the
signed-in operator the caller proved (`control.actions`, which also keeps the audit
trail). Booking lookups go to the intake list (`control.intake`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from wipeagent.clock import Clock
from wipeagent.control.bench import BenchState, ControlError
from wipeagent.control.intake import IntakeList
from wipeagent.i18n import N_
from wipeagent.identifiers import valid_imei
from wipeagent.models import Booking, DeviceIdentity
from wipeagent.session import FINAL_RESET_INSTRUCTIONS, SessionEvent
from wipeagent.steps import SessionStep
from wipeagent.technician import MAX_IMEIS, Attestation, EnteredImeis

if TYPE_CHECKING:
    from wipeagent.session import DeviceSession

log = logging.getLogger(__name__)

# What the technician is asked for a phone that will not give its IMEI (English msgids,
# shown translated by the bench page; `wipeagent status` adds the command that answers).
IMEI_INSTRUCTIONS = (
    N_("Scan the IMEI barcode (on the box or the SIM tray), or dial *#06# on the phone "
       "and type the number."),
    N_("A dual-SIM phone has two IMEIs: enter both, separated by a space."),
    N_("A device without a modem has no IMEI: record that it has none."),
)


@dataclass
class _Request:
    """A question waiting for a technician on one slot."""

    kind: str  # "imei" or "final_reset"
    slot: str
    session_id: str
    serial: str
    answer: asyncio.Future[tuple[tuple[str, ...], str | None]]


def _emit(session: DeviceSession, bench: BenchState, step: SessionStep, message: str,
          instructions: tuple[str, ...] = ()) -> None:
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


def check_imeis(raw: object) -> tuple[str, ...]:
    """0-4 IMEIs, each 15 digits with a valid check digit (ControlError 400 otherwise).
    An empty list says "this phone has no IMEI" (a device without a modem)."""
    if not isinstance(raw, list) or len(raw) > MAX_IMEIS:
        raise ControlError("bad_imei", f"imeis: a list of at most {MAX_IMEIS} IMEIs",
                           status=400, hint=N_("give one or two IMEIs, or none for a "
                                               "device without a modem"))
    imeis: list[str] = []
    for value in raw:
        if not isinstance(value, str) or not valid_imei(value.strip()):
            shown = str(value)[:20]
            raise ControlError("bad_imei", f"{shown!r} is not a valid IMEI (15 digits with "
                               "their check digit)", status=400,
                               hint=N_("scan the IMEI barcode again, or type it from "
                                       "*#06# or the SIM tray"))
        if value.strip() not in imeis:
            imeis.append(value.strip())
    return tuple(imeis)


class BenchTechnician:
    """Technician for a bench with a control API (see the module docstring)."""

    def __init__(self, bench: BenchState, intake: IntakeList, clock: Clock, *,
                 imei_timeout_s: float, final_reset_timeout_s: float) -> None:
        self.bench = bench
        self.intake = intake
        self.clock = clock
        self.imei_timeout_s = imei_timeout_s
        self.final_reset_timeout_s = final_reset_timeout_s
        self.pending: dict[tuple[str, str], _Request] = {}

    # -- the session's side -----------------------------------------------------------

    def _open(self, kind: str, session: DeviceSession, identity: DeviceIdentity) -> _Request:
        key = (kind, session.slot)
        old = self.pending.pop(key, None)
        if old is not None and not old.answer.done():
            old.answer.cancel()
        request = _Request(kind, session.slot, session.session_id, identity.serial,
                           asyncio.get_running_loop().create_future())
        self.pending[key] = request
        return request

    def _close(self, request: _Request) -> None:
        key = (request.kind, request.slot)
        if self.pending.get(key) is request:
            del self.pending[key]
        if not request.answer.done():
            request.answer.cancel()

    async def _wait(self, request: _Request, timeout_s: float
                    ) -> tuple[tuple[str, ...], str | None] | None:
        try:
            return await self.clock.wait_for(asyncio.shield(request.answer), timeout_s)
        except TimeoutError:
            return None
        finally:
            self._close(request)

    async def enter_imeis(self, session: DeviceSession,
                          identity: DeviceIdentity) -> EnteredImeis | None:
        request = self._open("imei", session, identity)
        _emit(session, self.bench, SessionStep.IMEI,
              f"{identity.manufacturer} {identity.model} serial {identity.serial} did not "
              "give its IMEI: scan or type it", instructions=IMEI_INSTRUCTIONS)
        answer = await self._wait(request, self.imei_timeout_s)
        if answer is None:
            _emit(session, self.bench, SessionStep.IMEI, f"no IMEI entered within "
                  f"{self.imei_timeout_s:g} s: the certificate carries none")
            return None
        imeis, operator = answer
        return EnteredImeis(imeis, operator, self.clock.now())

    async def booking(self, identity: DeviceIdentity) -> Booking | None:
        entry = await self.intake.match(identity)
        if entry is None:
            return None
        return Booking(reference=entry.reference, matched_by=entry.kind,
                       identifier=entry.identifier, source=entry.source,
                       added_by=entry.added_by)

    async def attest_final_reset(self, session: DeviceSession,
                                 identity: DeviceIdentity) -> Attestation | None:
        request = self._open("final_reset", session, identity)
        _emit(session, self.bench, SessionStep.FINAL_RESET,
              "waiting for the technician to reset the phone once more and confirm it",
              instructions=FINAL_RESET_INSTRUCTIONS)
        answer = await self._wait(request, self.final_reset_timeout_s)
        if answer is None:
            _emit(session, self.bench, SessionStep.FINAL_RESET, "nobody confirmed the final reset "
                  f"within {self.final_reset_timeout_s:g} s")
            return None
        return Attestation(answer[1], self.clock.now())

    # -- the technician's side (control API) -----------------------------------------------

    def _pending(self, kind: str, slot: str, session_id: str | None,
                 serial: str | None) -> _Request:
        request = self.pending.get((kind, slot))
        if request is None or request.answer.done():
            what = "an IMEI" if kind == "imei" else "the final reset"
            raise ControlError("nothing_to_answer", f"no phone on slot {slot} waits for "
                               f"{what}", hint=N_("check `wipeagent status` for the slot "
                                                  "name"))
        if session_id is not None and session_id != request.session_id:
            raise ControlError("session_changed", f"slot {slot} now holds session "
                               f"{request.session_id}, not {session_id}",
                               hint=N_("look at the phone again"))
        if serial is not None and serial != request.serial:
            raise ControlError("phone_changed", f"the phone on slot {slot} has serial "
                               f"{request.serial}", hint=N_("look at the phone again"))
        return request

    def waiting_for_imeis(self) -> list[str]:
        """The slots whose phone waits for the technician to enter its IMEI, in order."""
        return sorted(slot for (kind, slot), request in self.pending.items()
                      if kind == "imei" and not request.answer.done())

    def check_imei_request(self, slot: str, *, session_id: str | None = None,
                           serial: str | None = None) -> None:
        """ControlError unless the phone on `slot` (still) waits for its IMEI."""
        self._pending("imei", slot, session_id, serial)

    def answer_imeis(self, slot: str, raw: object, *, operator: str,
                     session_id: str | None = None,
                     serial: str | None = None) -> dict[str, Any]:
        """`operator`'s IMEIs for the phone waiting on `slot` (the caller proved the
        sign-in)."""
        request = self._pending("imei", slot, session_id, serial)
        imeis = check_imeis(raw)
        request.answer.set_result((imeis, operator))
        return {"slot": slot, "session_id": request.session_id, "serial": request.serial,
                "imeis": list(imeis), "entered_by": operator}

    def attest(self, slot: str, *, operator: str, session_id: str | None = None,
               serial: str | None = None) -> dict[str, Any]:
        """`operator` says the final reset of the phone on `slot` is done."""
        request = self._pending("final_reset", slot, session_id, serial)
        request.answer.set_result(((), operator))
        return {"slot": slot, "session_id": request.session_id, "serial": request.serial,
                "attested_by": operator}
