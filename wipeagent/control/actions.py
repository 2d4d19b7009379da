"""What a technician can do at the bench, shared by the control socket (the CLI) and the
bench page: sign in and out, confirm (one phone, several, all waiting), abort, mark a
guided manual-reset step done, identify a phone, book a phone in by scanning a barcode,
enter the IMEI a phone will not give (typed, or scanned), attest a final reset.

Every action needs a live sign-in (`Actor`), is checked here (server side, whatever the
client) and is recorded in the audit trail with the operator's name, whether it was
carried out or refused.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from wipeagent.clock import Clock
from wipeagent.control.audit import AuditLog
from wipeagent.control.bench import BenchState, ControlError
from wipeagent.control.desk import BenchTechnician
from wipeagent.control.intake import IMEI, SERIAL, IntakeList, luhn_ok, parse_entry
from wipeagent.control.operators import (
    SOCKET_CHANNEL,
    OperatorRegistry,
    SignIn,
    Throttle,
    check_name,
)
from wipeagent.errors import ConfigError
from wipeagent.i18n import N_

log = logging.getLogger(__name__)

IDENTIFY_TIMEOUT_S = 30.0  # bench seconds for the phone to wake its screen
# A booking reference printed as a barcode on a trade-in order (e.g. "TI-1042"); anything
# scanned that is neither an IMEI nor this is taken as a serial number.
REFERENCE = re.compile(r"^[A-Za-z]{1,8}-[A-Za-z0-9]{1,24}$")
REFERENCE_TTL_S = 300.0  # a scanned reference waits this long for the phone's IMEI


@dataclass
class Actor:
    """Who asks: a live sign-in, the channel (socket / web) and the client address."""

    signin: SignIn
    channel: str
    remote: str
    token: str = ""

    @property
    def operator(self) -> str:
        return self.signin.operator


@dataclass
class _Scan:
    reference: str
    at: float


@dataclass
class BenchActions:
    bench: BenchState
    intake: IntakeList
    audit: AuditLog
    registry: OperatorRegistry
    clock: Clock
    technician: BenchTechnician  # the questions sessions ask of people (desk.py)
    throttle: Throttle = field(init=False)
    _references: dict[str, _Scan] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.throttle = Throttle(self.clock)

    # -- sign-in --------------------------------------------------------------------------

    async def sign_in(self, name: object, secret: object, *, channel: str,
                      remote: str) -> tuple[str, SignIn]:
        """Check the operator's secret (argon2, off the loop) and start a sign-in."""
        operator = check_name(name)
        keys = (f"operator:{operator}", f"client:{channel}:{remote}")
        wait = self.throttle.retry_after(*keys)
        if wait > 0:
            await self.audit.record("sign_in", "throttled", operator=operator,
                                    channel=channel, remote=remote)
            raise ControlError("too_many_attempts",
                               f"too many failed sign-ins; try again in {wait:.0f} s",
                               status=429, hint="ask the administrator if you forgot your "
                                                "PIN: `wipeagent operator passwd NAME`")
        if not isinstance(secret, str) or not secret or len(secret) > 256:
            ok = False
        else:
            try:
                ok = await asyncio.to_thread(self.registry.verify, operator, secret)
            except ConfigError as exc:
                log.error("operators file: %s", exc)
                raise ControlError("operators_unavailable", str(exc), status=503,
                                   hint=exc.hint) from exc
        if not ok:
            self.throttle.failed(*keys)
            await self.audit.record("sign_in", "refused", operator=operator, channel=channel,
                                    remote=remote)
            raise ControlError("bad_credentials", "unknown operator or wrong PIN/password",
                               status=401, hint="enrolled with `wipeagent operator add NAME`")
        self.throttle.succeeded(*keys)
        if channel == SOCKET_CHANNEL:
            previous = self.bench.signins.end(SOCKET_CHANNEL)
            if previous is not None and previous.operator != operator:
                await self.audit.record("sign_out", "ok", operator=previous.operator,
                                        channel=channel, remote=remote, replaced_by=operator)
        token, signin = self.bench.signins.start(operator, channel)
        await self.audit.record("sign_in", "ok", operator=operator, channel=channel,
                                remote=remote)
        self.bench.touch()
        return token, signin

    async def sign_out(self, actor: Actor) -> None:
        self.bench.signins.end(actor.token)
        await self.audit.record("sign_out", "ok", operator=actor.operator,
                                channel=actor.channel, remote=actor.remote)
        self.bench.touch()

    async def expire_idle(self) -> None:
        """Journal the sign-outs of idle operators (called periodically by the server)."""
        for gone in self.bench.signins.expire():
            await self.audit.record("sign_out", "idle", operator=gone.operator,
                                    channel=gone.channel)
            self.bench.touch()

    def actor(self, token: str | None, *, channel: str, remote: str) -> Actor:
        """The signed-in actor for `token`, or ControlError 401."""
        signin = self.bench.signed_in(token, touch=True)
        if signin is None:
            raise ControlError("not_signed_in", "nobody is signed in here (or the sign-in "
                               "ended after being idle)", status=401,
                               hint="sign in first: `wipeagent login NAME` or on the "
                                    "bench page")
        return Actor(signin, channel, remote, token or "")

    # -- the phone's erase ----------------------------------------------------------------

    async def _refused(self, actor: Actor, action: str, slot: str | None,
                       exc: ControlError) -> None:
        await self.audit.record(action, "refused", operator=actor.operator,
                                channel=actor.channel, remote=actor.remote, slot=slot,
                                code=exc.code)

    async def confirm(self, actor: Actor, slot: str, *, session_id: str | None = None,
                      serial: str | None = None) -> dict[str, Any]:
        try:
            done = self.bench.confirm(slot, operator=actor.operator, session_id=session_id,
                                      serial=serial)
        except ControlError as exc:
            await self._refused(actor, "confirm", slot, exc)
            raise
        await self.audit.record("confirm", "ok", operator=actor.operator,
                                channel=actor.channel, remote=actor.remote, slot=slot,
                                session_id=done.session_id, serial=done.serial)
        log.warning("[%s] erase of serial %s confirmed by %s", slot, done.serial,
                    actor.operator)
        return {"slot": slot, "session_id": done.session_id, "serial": done.serial,
                "confirmed_by": actor.operator}

    async def confirm_many(self, actor: Actor, slots: list[str] | None,
                           expected: dict[str, dict[str, str]] | None = None
                           ) -> dict[str, Any]:
        """Confirm the phones on `slots` (None: every phone waiting now). `expected` maps
        a slot to the session_id / serial the technician saw, as for one confirm."""
        expected = expected or {}
        targets = slots if slots is not None else [c.slot for c in self.bench.waiting()]
        confirmed: list[dict[str, Any]] = []
        refused: list[dict[str, str]] = []
        for slot in targets:
            seen = expected.get(slot, {})
            try:
                confirmed.append(await self.confirm(actor, slot,
                                                    session_id=seen.get("session_id"),
                                                    serial=seen.get("serial")))
            except ControlError as exc:
                refused.append({"slot": slot, "error": exc.code, "message": exc.message})
        return {"confirmed": confirmed, "refused": refused}

    async def abort(self, actor: Actor, slot: str, *, session_id: str | None = None,
                    serial: str | None = None) -> dict[str, Any]:
        try:
            done = self.bench.abort(slot, session_id=session_id, serial=serial)
        except ControlError as exc:
            await self._refused(actor, "abort", slot, exc)
            raise
        await self.audit.record("abort", "ok", operator=actor.operator,
                                channel=actor.channel, remote=actor.remote, slot=slot,
                                session_id=done.session_id, serial=done.serial)
        log.warning("[%s] erase of serial %s aborted by %s", slot, done.serial,
                    actor.operator)
        return {"slot": slot, "session_id": done.session_id, "serial": done.serial,
                "aborted": True}

    async def manual_step(self, actor: Actor, slot: str, index: object, *,
                          session_id: str | None = None) -> dict[str, Any]:
        if not isinstance(index, int) or isinstance(index, bool):
            raise ControlError("bad_request", "step: an integer", status=400)
        try:
            done = self.bench.manual_step_done(slot, index, session_id=session_id)
        except ControlError as exc:
            await self._refused(actor, "manual_step", slot, exc)
            raise
        state = self.bench.slots[slot]
        await self.audit.record("manual_step", "ok", operator=actor.operator,
                                channel=actor.channel, remote=actor.remote, slot=slot,
                                session_id=state.session_id, step=index,
                                instruction=state.instructions[index])
        return {"slot": slot, "done": done, "of": len(state.instructions)}

    async def identify(self, actor: Actor, slot: str) -> dict[str, Any]:
        """Highlight the tile; where the platform allows, make the phone show itself
        (Android: wake the screen). Never disturbs the session: bounded, errors ignored."""
        try:
            state = self.bench.highlight(slot)
        except ControlError as exc:
            await self._refused(actor, "identify", slot, exc)
            raise
        woke = False
        show = getattr(self.bench.agent, "show_phone", None)  # the Agent's, when attached
        if show is not None:
            try:
                woke = bool(await self.clock.wait_for(show(slot), IDENTIFY_TIMEOUT_S))
            except Exception as exc:  # a phone that cannot show itself
                log.info("[%s] identify: the phone could not show itself: %s", slot, exc)
        serial = state.phone.serial if state.phone else None
        await self.audit.record("identify", "ok", operator=actor.operator,
                                channel=actor.channel, remote=actor.remote, slot=slot,
                                session_id=state.session_id or None, woke=woke)
        return {"slot": slot, "serial": serial, "woke": woke}

    # -- what sessions ask of the technician ------------------------------------------------

    async def enter_imeis(self, actor: Actor, slot: str, imeis: object, *,
                          session_id: str | None = None, serial: str | None = None,
                          via: str = "entry") -> dict[str, Any]:
        """The IMEI(s) of the phone on `slot` that would not give them (`[]`: it has
        none), typed or scanned (`via`) by the signed-in operator."""
        try:
            done = self.technician.answer_imeis(slot, imeis, operator=actor.operator,
                                                session_id=session_id, serial=serial)
        except ControlError as exc:
            await self._refused(actor, "imei_entry", slot, exc)
            raise
        log.warning("[%s] IMEI(s) %s of serial %s entered by %s", slot,
                    ", ".join(done["imeis"]) or "none", done["serial"], actor.operator)
        await self.audit.record("imei_entry", "ok", operator=actor.operator,
                                channel=actor.channel, remote=actor.remote, slot=slot,
                                session_id=done["session_id"], serial=done["serial"],
                                imeis=done["imeis"], via=via)
        self.bench.touch(slot)
        return done

    async def attest_final_reset(self, actor: Actor, slot: str, *,
                                 session_id: str | None = None,
                                 serial: str | None = None) -> dict[str, Any]:
        """The signed-in operator says the final reset (policy.handoff = "final_reset")
        of the phone on `slot` is done: recorded as attested by them, never verified."""
        try:
            done = self.technician.attest(slot, operator=actor.operator,
                                          session_id=session_id, serial=serial)
        except ControlError as exc:
            await self._refused(actor, "final_reset", slot, exc)
            raise
        log.warning("[%s] final reset of serial %s attested by %s", slot, done["serial"],
                    actor.operator)
        await self.audit.record("final_reset", "ok", operator=actor.operator,
                                channel=actor.channel, remote=actor.remote, slot=slot,
                                session_id=done["session_id"], serial=done["serial"])
        self.bench.touch(slot)
        return done

    def _imei_for(self, code: str, slot: str | None) -> str | None:
        """Which waiting phone a scanned IMEI answers: the selected slot's when it waits
        for its IMEI (a selected tile that does not wait takes no IMEI); else the one
        phone that waits, unless the IMEI is already known as another phone's (a
        booking for a phone that gave it). None: the scan only books a phone in.
        Several phones waiting and none selected: the technician must choose."""
        waiting = self.technician.waiting_for_imeis()
        if slot is not None:
            return slot if slot in waiting else None
        if not waiting:
            return None
        agent = self.bench.agent
        known = {i for p in (agent.phones() if agent is not None else ())
                 if p.identity is not None for i in p.identity.imeis}
        if code in known:
            return None
        if len(waiting) > 1:
            raise ControlError("choose_phone", f"{len(waiting)} phones wait for their IMEI "
                               f"({', '.join(waiting[:8])}): which one is {code}?",
                               status=409, hint=N_("select the phone's tile, then scan "
                                                   "again"))
        return waiting[0]

    # -- the intake list ------------------------------------------------------------------

    async def remove_intake(self, actor: Actor, identifier: object) -> dict[str, Any]:
        """Take a phone off the intake list (a booking scanned by mistake)."""
        if not isinstance(identifier, str) or not SERIAL.fullmatch(identifier):
            raise ControlError("no_such_entry", "not an intake identifier", status=404)
        if not await self.intake.remove(identifier):
            exc = ControlError("no_such_entry", f"{identifier} is not booked in", status=404,
                               hint=N_("it may have been removed already: look at the list "
                                       "again"))
            await self._refused(actor, "intake_remove", None, exc)
            raise exc
        await self.audit.record("intake_remove", "ok", operator=actor.operator,
                                channel=actor.channel, remote=actor.remote,
                                identifier=identifier)
        return {"removed": identifier}

    # -- intake by barcode ----------------------------------------------------------------

    async def scan(self, actor: Actor, code: object, *, slot: str | None = None,
                   session_id: str | None = None) -> dict[str, Any]:
        """A barcode typed in by a USB scanner: an IMEI or a serial books the phone in
        (with the booking reference scanned just before, if any); a booking reference is
        kept for the next phone scanned by the same operator. An IMEI also answers the
        phone that waits for it (`_imei_for`: the selected `slot` — still holding
        `session_id` when given — or the only phone waiting), after it is booked in, so
        the session's booking lookup that follows the answer finds the entry."""
        if not isinstance(code, str):
            raise ControlError("bad_scan", "scan: a string", status=400)
        code = code.strip()
        now = self.clock.monotonic()
        pending = self._references.get(actor.token)
        reference = pending.reference if pending and now - pending.at < REFERENCE_TTL_S else ""
        answers: str | None = None
        if IMEI.fullmatch(code):
            if not luhn_ok(code):
                await self.audit.record("intake_scan", "refused", operator=actor.operator,
                                        channel=actor.channel, remote=actor.remote,
                                        code="bad_imei")
                raise ControlError("bad_imei", f"{code} is not a valid IMEI (check digit)",
                                   status=400, hint=N_("scan the IMEI barcode again"))
            raw: dict[str, str] = {"imei": code}
            try:
                answers = self._imei_for(code, slot)
                if answers is not None:  # nothing booked for a phone that changed
                    self.technician.check_imei_request(
                        answers, session_id=session_id if answers == slot else None)
            except ControlError as exc:
                await self._refused(actor, "intake_scan", answers or slot, exc)
                raise
        elif REFERENCE.fullmatch(code) and not code.isdigit():
            if len(self._references) > 256:
                self._references.clear()
            self._references[actor.token] = _Scan(code, now)
            await self.audit.record("intake_scan", "ok", operator=actor.operator,
                                    channel=actor.channel, remote=actor.remote,
                                    reference=code)
            return {"reference": code, "booked": None, "imei_entered": None}
        elif SERIAL.fullmatch(code):
            raw = {"serial": code}
        else:
            raise ControlError("bad_scan", "not an IMEI, a serial number or a booking "
                               "reference", status=400, hint=N_("scan the barcode again"))
        if reference:
            raw["reference"] = reference
        booked = None
        # An IMEI scanned for a phone that asked for it is its answer; it books the phone
        # in too when a booking reference was scanned before it, or under policy intake
        # (where scanning is booking in). Otherwise the certificate would claim a booking
        # nobody made.
        if answers is None or reference or self.bench.policy == "intake":
            entry = await self.intake.add_scanned(
                parse_entry(raw, source="scanner", added_by=actor.operator))
            self._references.pop(actor.token, None)
            self.bench.intake_added()
            await self.audit.record("intake_scan", "ok", operator=actor.operator,
                                    channel=actor.channel, remote=actor.remote,
                                    kind=entry.kind, identifier=entry.identifier,
                                    reference=entry.reference)
            booked = entry.as_dict()
        entered = None
        if answers is not None:
            entered = await self.enter_imeis(
                actor, answers, [code], session_id=session_id if answers == slot else None,
                via="scan")
        return {"booked": booked, "reference": (booked or {}).get("reference") or None,
                "imei_entered": entered}
