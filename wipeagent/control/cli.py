"""The technician's commands over the control API's unix socket: `status`, `confirm`,
`abort`, `login`, `logout`, `identify`, `manual-step`, `scan`, `certificate`, `intake`,
`handoff`; and the administrator's `operator add | list | remove | passwd` (on the
operators file).

The socket is `--socket PATH`, else $WIPEAGENT_CONTROL_SOCKET, else `control.socket` from
`--config` (default /etc/wipeagent/agent.toml, when readable), else
/run/wipeagent/control.sock. Messages are in the language of `--lang`, else of the
environment (LC_ALL / LC_MESSAGES / LANG: zh_CN.UTF-8 gives Chinese). Exit codes: 0
done, 1 the agent refused (the reason and a hint are printed), 2 the agent could not be
reached.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wipeagent.clock import REAL_TIME
from wipeagent.control.client import DEFAULT_SOCKET, ControlApiError, ControlClient
from wipeagent.errors import ConfigError
from wipeagent.i18n import Translator, translator
from wipeagent.i18n.messages import ERRORS, NEEDS, OUTCOMES, STATES, STEPS, reason_text

if TYPE_CHECKING:
    from rich.text import Text

DEFAULT_CONFIG = "/etc/wipeagent/agent.toml"
EXIT_REFUSED = 1
EXIT_UNREACHABLE = 2
WIDTH = 80
STATE_STYLE = {"working": "blue", "needs_you": "bold yellow", "erased": "green",
               "not_erased": "magenta", "failed": "bold red", "empty": "dim"}
COUNTED = ("working", "needs_you", "erased", "not_erased", "failed")
# The command that answers what a phone waits for, shown at the end of its line (the
# instruction is cut to make room, never the command). The other needs are done on the
# phone itself (unlock, tap Trust, remove the account, then replug).
NEED_COMMANDS = {"confirm_erase": "wipeagent confirm {slot}",
                 "enter_imei": "wipeagent intake imei {slot} IMEI",
                 "final_reset": "wipeagent handoff {slot}",
                 "manual_reset": "wipeagent manual-step {slot} {step}",
                 "scan_intake": "wipeagent scan IMEI"}


def language(args: argparse.Namespace) -> str:
    """--lang, else the environment's locale (LC_ALL, LC_MESSAGES, LANG)."""
    chosen = getattr(args, "lang", None)
    if chosen:
        return str(chosen)
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        if os.environ.get(name):
            return os.environ[name]
    return "en"


def socket_path(args: argparse.Namespace) -> Path:
    """Where the control socket is (see the module docstring for the order)."""
    if args.socket:
        return Path(args.socket)
    env = os.environ.get("WIPEAGENT_CONTROL_SOCKET")
    if env:
        return Path(env)
    config = Path(args.config or DEFAULT_CONFIG)
    if args.config or config.is_file():
        from wipeagent.config import load_config

        try:
            return Path(load_config(config).control.socket)
        except ConfigError:
            if args.config:
                raise
    return Path(DEFAULT_SOCKET)


def _phone(slot: dict[str, Any]) -> str:
    phone = slot.get("phone")
    if not phone:
        return "-"
    name = phone.get("name") or f"{phone['manufacturer']} {phone['model']}"
    return f"{name} {phone['serial']}"


def _fit(text: str, width: int) -> str:
    """Cut to `width` terminal cells (CJK characters take two)."""
    out: list[str] = []
    used = 0
    for char in text:
        cell = 2 if ord(char) >= 0x1100 and _wide(char) else 1
        if used + cell > width:
            return "".join(out)[: max(0, len(out) - 1)] + "…"
        out.append(char)
        used += cell
    return "".join(out)


def _wide(char: str) -> bool:
    import unicodedata

    return unicodedata.east_asian_width(char) in ("W", "F")


def _cells(text: str) -> int:
    return sum(2 if _wide(c) else 1 for c in text)


def _pad(text: str, width: int) -> str:
    text = _fit(text, width)
    return text + " " * max(0, width - _cells(text))


def detail(slot: dict[str, Any], _: Translator) -> str:
    """What to read on a phone's line: the instruction, the reason, or the step."""
    need = slot.get("need") or ""
    if need and need in NEEDS:
        return _(NEEDS[need])
    outcome = slot.get("outcome")
    if outcome and not slot.get("running"):
        words = _(OUTCOMES.get(outcome, outcome))
        reasons = [reason_text(_, c) for c in slot.get("codes") or []
                   if outcome == "not_erased"]
        return f"{words}: {reasons[0]}" if reasons else words
    step = slot.get("step", "")
    progress = float(slot.get("progress") or 0)
    return f"{_(STEPS.get(step, step))} {progress:.0%}"


def need_command(slot: dict[str, Any]) -> str:
    """The command that does what the phone on `slot` waits for ("" when it is done on
    the phone itself)."""
    command = NEED_COMMANDS.get(slot.get("need") or "")
    if not command:
        return ""
    return command.format(slot=slot.get("slot", ""),
                          step=int(slot.get("manual_done") or 0) + 1)


def render_status(status: dict[str, Any], _: Translator, width: int = WIDTH) -> Text:
    """The bench in `width` columns: a header with the counts, then one line per phone
    (slot, phone, then the instruction, reason or step). Phone-supplied strings are plain
    Text, never interpreted as terminal markup."""
    # rich is imported when the bench is drawn: `status --json` starts without it
    # (CLI start-up, docs/benchmarks.md).
    from rich.text import Text

    out = Text()
    operator = status.get("operator") or _("nobody signed in")
    out.append(_fit(_.fill("%(station)s  policy %(policy)s  operator: %(operator)s",
                           station=status.get("station_id", ""),
                           policy=status.get("policy", ""), operator=operator), width) + "\n",
               style="bold")
    if status.get("development_pki"):
        out.append(_fit(_("DEVELOPMENT PKI: certificates are not valid for production"), width)
                   + "\n", style="bold red")
    counts = status.get("counts") or {}
    for key in COUNTED:
        out.append(f"{counts.get(key, 0)} {_(STATES[key])}", style=STATE_STYLE[key])
        out.append("  ")
    out.append("\n")
    slots = sorted(status.get("slots", []), key=lambda s: (s.get("state") != "needs_you",
                                                           str(s.get("slot"))))
    slot_w = min(18, max([_cells(str(s.get("slot", ""))) for s in slots] + [4]))
    phone_w = 26
    rest = max(10, width - slot_w - phone_w - 4)
    for slot in slots:
        state = slot.get("state") or "empty"
        mark = "!" if state == "needs_you" else " "
        line = Text()
        line.append(mark + " ", style=STATE_STYLE.get(state, ""))
        line.append(_pad(str(slot.get("slot", "")), slot_w) + " ")
        command = need_command(slot)
        # The command is never cut: on a narrow terminal the phone's column gives way.
        phone_cells = max(4, phone_w - max(0, _cells(command) - rest))
        room = rest + phone_w - phone_cells
        line.append(_pad(_phone(slot), phone_cells) + " ")
        words = room - _cells(command) - 4 if command else room
        if command and words < 12:  # too narrow for both: the command says what to do
            line.append(_fit(command, room), style="bold")
        else:
            line.append(_fit(detail(slot, _), words if command else room),
                        style=STATE_STYLE.get(state, ""))
            if command:
                line.append(" -> ")
                line.append(command, style="bold")
        out.append_text(line)
        out.append("\n")
    delivery = status.get("delivery") or {}
    if "pending" in delivery:
        out.append(_fit(_.fill("outbox: %(pending)s pending, %(parked)s parked, "
                                 "%(delivered)s delivered", pending=delivery.get("pending", 0),
                                 parked=delivery.get("parked", 0),
                                 delivered=delivery.get("delivered", 0)), width) + "\n")
    for alert in delivery.get("alerts", []):
        out.append(f"{str(alert.get('level', '')).upper()}: {alert.get('message', '')} -> "
                   f"{alert.get('hint', '')}\n", style="bold red")
    return out


async def _status(args: argparse.Namespace) -> int:
    _ = translator(language(args))
    async with ControlClient(socket_path(args)) as client:
        if args.json:
            print(json.dumps(await client.status(), indent=2, sort_keys=True,
                             ensure_ascii=False))
            return 0
        from rich.console import Console
        from rich.live import Live

        console = Console(highlight=False)
        width = min(console.width, max(WIDTH, args.width or console.width))
        if args.once or not console.is_terminal:
            console.print(render_status(await client.status(), _, width), end="")
            return 0
        with Live(render_status(await client.status(), _, width), console=console,
                  refresh_per_second=4) as live:
            while True:
                await REAL_TIME.sleep(args.interval)
                live.update(render_status(await client.status(), _, width))


async def _confirm(args: argparse.Namespace) -> int:
    _ = translator(language(args))
    if not args.all and not args.slots:
        print(_("give one or more SLOTs, or --all"), file=sys.stderr)
        return EXIT_REFUSED
    async with ControlClient(socket_path(args)) as client:
        if args.all:
            done = await client.confirm_many(None)
        else:
            # Answer for the phones the technician is looking at: send the session and
            # serial seen now, so the agent refuses if a slot changed phones in between.
            status = await client.status()
            by_slot = {s["slot"]: s for s in status["slots"]}
            expected: dict[str, dict[str, str]] = {}
            for slot in args.slots:
                seen = by_slot.get(slot) or {}
                serial = args.serial if args.serial and len(args.slots) == 1 else (
                    (seen.get("phone") or {}).get("serial"))
                expected[slot] = {k: v for k, v in (("session_id", seen.get("session_id")),
                                                    ("serial", serial)) if v}
            done = await client.confirm_many(list(args.slots), expected=expected)
    for entry in done["confirmed"]:
        print(_.fill("%(slot)s: erase of serial %(serial)s confirmed by %(operator)s",
                       slot=entry["slot"], serial=entry["serial"],
                       operator=entry["confirmed_by"]))
    for entry in done["refused"]:
        print(_.fill("%(slot)s: refused: %(message)s", slot=entry["slot"],
                       message=entry["message"]), file=sys.stderr)
    if not done["confirmed"] and not done["refused"]:
        print(_("no phone is waiting for a confirmation"))
    return EXIT_REFUSED if done["refused"] or not done["confirmed"] else 0


async def _abort(args: argparse.Namespace) -> int:
    _ = translator(language(args))
    async with ControlClient(socket_path(args)) as client:
        slot = await client.call("GET", f"/slots/{_quote(args.slot)}")
        serial = args.serial or (slot.get("phone") or {}).get("serial")
        await client.abort(args.slot, session_id=slot.get("session_id"), serial=serial)
    print(_.fill("%(slot)s: erase of %(phone)s aborted; the phone is not erased",
                   slot=args.slot, phone=_phone(slot)))
    return 0


def read_secret(prompt: str) -> str:
    """The PIN or password: from the terminal without echo, else one line of stdin.
    Never from the command line (it would show in `ps` and the shell history)."""
    if sys.stdin.isatty():
        return getpass.getpass(prompt)
    return sys.stdin.readline().rstrip("\n")


async def _login(args: argparse.Namespace) -> int:
    _ = translator(language(args))
    secret = read_secret(_.fill("PIN or password for %(name)s: ", name=args.operator))
    async with ControlClient(socket_path(args)) as client:
        done = await client.login(args.operator, secret)
    print(_.fill("signed in as %(name)s (signed out after %(minutes)s minutes idle)",
                   name=done["operator"], minutes=round(done["idle_signout_s"] / 60)))
    return 0


async def _logout(args: argparse.Namespace) -> int:
    async with ControlClient(socket_path(args)) as client:
        await client.logout()
    print(translator(language(args))("signed out"))
    return 0


async def _identify(args: argparse.Namespace) -> int:
    _ = translator(language(args))
    async with ControlClient(socket_path(args)) as client:
        done = await client.call("POST", f"/slots/{_quote(args.slot)}/identify")
    if done.get("woke"):
        print(_.fill("%(slot)s: the phone lit its screen", slot=args.slot))
    else:
        print(_.fill("%(slot)s: look for serial %(serial)s", slot=args.slot,
                       serial=done.get("serial") or "?"))
    return 0


async def _manual_step(args: argparse.Namespace) -> int:
    _ = translator(language(args))
    async with ControlClient(socket_path(args)) as client:
        done = await client.call("POST", f"/slots/{_quote(args.slot)}/manual-step",
                                 {"step": args.step - 1})
    print(_.fill("%(slot)s: %(done)s of %(of)s reset steps done", slot=args.slot,
                   done=done["done"], of=done["of"]))
    return 0


async def _scan(args: argparse.Namespace) -> int:
    _ = translator(language(args))
    async with ControlClient(socket_path(args)) as client:
        body: dict[str, Any] = {"code": args.code}
        if args.slot:
            seen = await client.call("GET", f"/slots/{_quote(args.slot)}")
            body.update(slot=args.slot, session_id=seen.get("session_id"))
        done = await client.call("POST", "/intake/scan", body)
    booked, entered = done.get("booked"), done.get("imei_entered")
    if booked:
        print(_.fill("booked in: %(id)s (reference %(ref)s)", id=booked["identifier"],
                     ref=booked["reference"]) if booked.get("reference")
              else _.fill("booked in: %(id)s", id=booked["identifier"]))
    if entered:
        print(_.fill("%(slot)s: IMEI %(imeis)s entered by %(operator)s for serial "
                     "%(serial)s", slot=entered["slot"], imeis=", ".join(entered["imeis"]),
                     operator=entered["entered_by"], serial=entered["serial"]))
    if not booked and not entered:
        print(_.fill("booking reference %(ref)s: now scan the phone's IMEI",
                     ref=done["reference"]))
    return 0


async def _certificate(args: argparse.Namespace) -> int:
    _ = translator(language(args))
    async with ControlClient(socket_path(args)) as client:
        target = args.target
        if "-" not in target or ":" in target:  # a slot: its current certificate
            slot = await client.call("GET", f"/slots/{_quote(target)}")
            target = slot.get("certificate_id") or ""
            if not target:
                print(_.fill("%(slot)s has no certificate (yet)", slot=args.target),
                      file=sys.stderr)
                return EXIT_REFUSED
        if args.pdf:
            data = await client.certificate_pdf(target, args.pdf_lang)
            name = f"{target}.{args.pdf_lang}.pdf"
        else:
            data = await client.certificate(target)
            name = f"{target}.jws.json"
    out = Path(args.output or name)
    await asyncio.to_thread(out.write_bytes, data)
    print(_.fill("wrote %(file)s", file=str(out)))
    return 0


# -- operators (administrator) -----------------------------------------------------------


def _registry(args: argparse.Namespace) -> Any:
    from wipeagent.config import load_config
    from wipeagent.control.operators import OperatorRegistry

    if args.state_dir:
        return OperatorRegistry.for_state_dir(args.state_dir)
    config = load_config(Path(args.config or DEFAULT_CONFIG))
    return OperatorRegistry.for_state_dir(config.state_path)


def _new_secret(_: Translator, name: str) -> str:
    first = read_secret(_.fill("new PIN or password for %(name)s: ", name=name))
    if sys.stdin.isatty():
        again = getpass.getpass(_("again: "))
        if again != first:
            raise SystemExit(_("the two entries differ; nothing changed"))
    return first


def cmd_operator(args: argparse.Namespace) -> int:
    """`wipeagent operator add|list|remove|passwd`: enrol the bench's operators."""
    from wipeagent.control.operators import describe
    from wipeagent.errors import ControlError

    _ = translator(language(args))
    registry = _registry(args)
    try:
        if args.operator_command == "list":
            rows = describe(registry.load())
            if args.json:
                print(json.dumps(rows, indent=2, ensure_ascii=False))
            for row in [] if args.json else rows:
                print(f"{row['name']:<32} " + _.fill(
                    "enrolled %(created)s  changed %(changed)s", created=row["created_at"],
                    changed=row["changed_at"]))
            if not rows and not args.json:
                print(_("no operators enrolled: `wipeagent operator add NAME`"))
        elif args.operator_command == "add":
            registry.add(args.name, _new_secret(_, args.name))
            print(_.fill("enrolled %(name)s", name=args.name))
        elif args.operator_command == "passwd":
            registry.set_secret(args.name, _new_secret(_, args.name))
            print(_.fill("changed the PIN or password of %(name)s", name=args.name))
        elif args.operator_command == "remove":
            registry.remove(args.name)
            print(_.fill("removed %(name)s (signed out within a minute)", name=args.name))
    except ControlError as exc:
        print(_.fill("wipeagent: %(message)s\nhint: %(hint)s", message=_(exc.message),
                     hint=_(exc.hint)), file=sys.stderr)
        return EXIT_REFUSED
    return 0


async def _intake(args: argparse.Namespace) -> int:
    _ = translator(language(args))
    if args.intake_command == "imei" and args.none == bool(args.imeis):
        print(_("give the phone's IMEI (two for a dual-SIM phone), or only --none for a "
                "device without a modem"), file=sys.stderr)
        return EXIT_REFUSED
    async with ControlClient(socket_path(args)) as client:
        if args.intake_command == "list":
            entries = await client.intake()
            if args.json:
                print(json.dumps(entries, indent=2, sort_keys=True))
                return 0
            for e in entries:
                print(f"{e['kind']:<6} {e['identifier']:<20} {e['reference'] or '-':<24} "
                      f"{e['source']} {e['added_at']}")
            print(_.fill("%(n)s phone(s) booked in", n=len(entries)))
            return 0
        if args.intake_command == "add":
            entry = {"imei": args.imei} if args.imei else {"serial": args.serial}
            if args.reference:
                entry["reference"] = args.reference
            await client.add_intake([entry])
            identifier = next(iter(entry.values()))
            print(_.fill("booked in: %(id)s (reference %(ref)s)", id=identifier,
                         ref=args.reference) if args.reference
                  else _.fill("booked in: %(id)s", id=identifier))
            return 0
        if args.intake_command == "remove":
            await client.remove_intake(args.identifier)
            print(_.fill("removed: %(id)s", id=args.identifier))
            return 0
        # imei: the IMEI(s) of a phone on a slot that would not give them itself.
        slot = await client.call("GET", f"/slots/{_quote(args.slot)}")
        done = await client.enter_imeis(args.slot, [] if args.none else args.imeis,
                                        session_id=slot.get("session_id"),
                                        serial=(slot.get("phone") or {}).get("serial"))
        if done["imeis"]:
            print(_.fill("%(slot)s: IMEI %(imeis)s entered by %(operator)s for serial "
                         "%(serial)s", slot=args.slot, imeis=", ".join(done["imeis"]),
                         operator=done["entered_by"], serial=done["serial"]))
        else:
            print(_.fill("%(slot)s: no IMEI (a device without a modem), entered by "
                         "%(operator)s for serial %(serial)s", slot=args.slot,
                         operator=done["entered_by"], serial=done["serial"]))
        return 0


async def _handoff(args: argparse.Namespace) -> int:
    _ = translator(language(args))
    async with ControlClient(socket_path(args)) as client:
        slot = await client.call("GET", f"/slots/{_quote(args.slot)}")
        done = await client.attest_final_reset(
            args.slot, session_id=slot.get("session_id"),
            serial=(slot.get("phone") or {}).get("serial"))
    print(_.fill("%(slot)s: final reset of serial %(serial)s attested by %(operator)s",
                 slot=args.slot, serial=done["serial"], operator=done["attested_by"]))
    return 0


def _quote(segment: str) -> str:
    from urllib.parse import quote

    return quote(segment, safe="")


def _run(coro: Any, args: argparse.Namespace) -> int:
    try:
        result: int = asyncio.run(coro)
        return result
    except ControlApiError as exc:
        _ = translator(language(args))
        message = _(ERRORS[exc.code]) if exc.code in ERRORS else _(exc.message)
        print(_.fill("wipeagent: %(message)s\nhint: %(hint)s", message=message,
                     hint=_(exc.hint)), file=sys.stderr)
        return EXIT_UNREACHABLE if exc.code in ("unreachable", "timeout") else EXIT_REFUSED


def cmd_status(args: argparse.Namespace) -> int:
    """`wipeagent status`: the bench, one line per phone."""
    return _run(_status(args), args)


def cmd_confirm(args: argparse.Namespace) -> int:
    """`wipeagent confirm SLOT... | --all`: allow the erase of the phones waiting there."""
    return _run(_confirm(args), args)


def cmd_abort(args: argparse.Namespace) -> int:
    """`wipeagent abort SLOT`: refuse the erase; the phone ends not erased."""
    return _run(_abort(args), args)


def cmd_login(args: argparse.Namespace) -> int:
    """`wipeagent login OPERATOR`: sign in at this bench (asks for the PIN or password)."""
    return _run(_login(args), args)


def cmd_logout(args: argparse.Namespace) -> int:
    """`wipeagent logout`: sign the operator out."""
    return _run(_logout(args), args)


def cmd_intake(args: argparse.Namespace) -> int:
    """`wipeagent intake list | add | remove | imei`: the intake list and IMEI entry."""
    return _run(_intake(args), args)


def cmd_scan(args: argparse.Namespace) -> int:
    """`wipeagent scan CODE [--slot SLOT]`: a barcode, as the bench page's scanner field."""
    return _run(_scan(args), args)


def cmd_handoff(args: argparse.Namespace) -> int:
    """`wipeagent handoff SLOT`: the final reset of the phone on SLOT is done."""
    return _run(_handoff(args), args)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--socket", metavar="PATH",
                        help=f"control socket (default: from the config, else {DEFAULT_SOCKET})")
    parser.add_argument("--config", metavar="FILE",
                        help=f"agent configuration to read control.socket from "
                             f"(default {DEFAULT_CONFIG} when present)")
    parser.add_argument("--lang", metavar="LANG",
                        help="en or zh-CN (default: from LC_ALL / LC_MESSAGES / LANG)")


def register(subparsers: Any) -> None:
    """Add the technician's and the operator administrator's commands (each sets `func`)."""
    p = subparsers.add_parser("status", help="the bench: one line per phone")
    _common(p)
    p.add_argument("--once", action="store_true", help="print once and exit")
    p.add_argument("--json", action="store_true", help="print the status as JSON and exit")
    p.add_argument("--interval", type=float, default=1.0, help="refresh seconds (live)")
    p.add_argument("--width", type=int, default=0, help="columns (default: the terminal's)")
    p.set_defaults(func=cmd_status)

    p = subparsers.add_parser("confirm", help="allow the erase of the phones on SLOTs")
    _common(p)
    p.add_argument("slots", metavar="SLOT", nargs="*")
    p.add_argument("--all", action="store_true", help="every phone waiting for confirmation")
    p.add_argument("--serial", help="(one SLOT) refuse unless its phone has this serial")
    p.set_defaults(func=cmd_confirm)

    p = subparsers.add_parser("abort", help="refuse the erase of the phone on SLOT")
    _common(p)
    p.add_argument("slot", metavar="SLOT")
    p.add_argument("--serial", help="refuse unless the phone on SLOT has this serial")
    p.set_defaults(func=cmd_abort)

    p = subparsers.add_parser("login", help="sign in at this bench (asks for the PIN)")
    _common(p)
    p.add_argument("operator", metavar="OPERATOR")
    p.set_defaults(func=cmd_login)

    p = subparsers.add_parser("logout", help="sign the operator out")
    _common(p)
    p.set_defaults(func=cmd_logout)

    p = subparsers.add_parser(
        "intake", help="phones booked in for erasure, and IMEIs a phone would not give")
    verbs = p.add_subparsers(dest="intake_command", required=True)
    q = verbs.add_parser("list", help="the phones booked in")
    _common(q)
    q.add_argument("--json", action="store_true")
    q = verbs.add_parser("add", help="book a phone in by IMEI or serial")
    _common(q)
    which = q.add_mutually_exclusive_group(required=True)
    which.add_argument("--imei", help="15 digits with their check digit")
    which.add_argument("--serial")
    q.add_argument("--reference", help="the booking reference (trade-in order ...)")
    q = verbs.add_parser("remove", help="take a phone off the intake list")
    _common(q)
    q.add_argument("identifier", metavar="IMEI_OR_SERIAL")
    q = verbs.add_parser("imei", help="the IMEI(s) of the phone on SLOT, scanned or typed "
                                      "(when the phone would not give them)")
    _common(q)
    q.add_argument("slot", metavar="SLOT")
    q.add_argument("imeis", metavar="IMEI", nargs="*")
    q.add_argument("--none", action="store_true",
                   help="the phone has no IMEI (a device without a modem)")
    p.set_defaults(func=cmd_intake)

    p = subparsers.add_parser("handoff", help="the final reset of the phone on SLOT is done "
                                              "(policy.handoff = final_reset)")
    _common(p)
    p.add_argument("slot", metavar="SLOT")
    p.set_defaults(func=cmd_handoff)

    p = subparsers.add_parser("identify", help="make the phone on SLOT show itself")
    _common(p)
    p.add_argument("slot", metavar="SLOT")
    p.set_defaults(func=lambda a: _run(_identify(a), a))

    p = subparsers.add_parser("manual-step", help="mark step N of a guided manual reset done")
    _common(p)
    p.add_argument("slot", metavar="SLOT")
    p.add_argument("step", metavar="N", type=int, help="the step's number (1 = first)")
    p.set_defaults(func=lambda a: _run(_manual_step(a), a))

    p = subparsers.add_parser("scan", help="book a phone in: an IMEI, serial or reference "
                              "(an IMEI also answers the phone waiting for it)")
    _common(p)
    p.add_argument("code", metavar="CODE")
    p.add_argument("--slot", help="the phone an IMEI is for, when several wait for theirs")
    p.set_defaults(func=cmd_scan)

    p = subparsers.add_parser("certificate",
                              help="save a certificate (of a SLOT's phone, or by id)")
    _common(p)
    p.add_argument("target", metavar="SLOT|ID")
    p.add_argument("--pdf", action="store_true", help="the PDF instead of the signed file")
    p.add_argument("--pdf-lang", default="en", choices=["en", "zh"])
    p.add_argument("-o", "--output", metavar="FILE")
    p.set_defaults(func=lambda a: _run(_certificate(a), a))

    op = subparsers.add_parser("operator", help="enrol the operators of this bench "
                                                "(administrator)")
    osub = op.add_subparsers(dest="operator_command", required=True, metavar="ACTION")
    for name, text in (("add", "enrol NAME (asks for a PIN or password)"),
                       ("passwd", "change NAME's PIN or password"),
                       ("remove", "remove NAME"), ("list", "list the operators")):
        q = osub.add_parser(name, help=text)
        q.add_argument("--config", metavar="FILE",
                       help=f"agent configuration (state_dir); default {DEFAULT_CONFIG}")
        q.add_argument("--state-dir", metavar="DIR", help="the agent's state directory")
        q.add_argument("--lang", metavar="LANG")
        if name == "list":
            q.add_argument("--json", action="store_true")
        else:
            q.add_argument("name", metavar="NAME")
        q.set_defaults(func=cmd_operator)
