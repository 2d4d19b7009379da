"""`wipeagent status | confirm | abort | login | logout | intake | handoff`: the
technician's commands, over the control API's unix socket.

The socket is `--socket PATH`, else $WIPEAGENT_CONTROL_SOCKET, else `control.socket` from
`--config` (default /etc/wipeagent/agent.toml, when readable), else
/run/wipeagent/control.sock. Exit codes: 0 done, 1 the agent refused (the reason and a
hint are printed), 2 the agent could not be reached.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from wipeagent.clock import REAL_TIME
from wipeagent.control.client import DEFAULT_SOCKET, ControlApiError, ControlClient
from wipeagent.errors import ConfigError

DEFAULT_CONFIG = "/etc/wipeagent/agent.toml"
EXIT_REFUSED = 1
EXIT_UNREACHABLE = 2


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
    return f"{phone['manufacturer']} {phone['model']} {phone['serial']}"


def render_table(status: dict[str, Any]) -> Table:
    """The bench as a table. Every value is a Text: phone-supplied strings are never
    interpreted as terminal markup."""
    operator = status.get("operator") or "nobody signed in"
    title = Text(f"{status.get('station_id', '')}  policy "
                 f"{status.get('policy', '')}  operator: {operator}")
    if status.get("development_pki"):
        title.append("\nDEVELOPMENT PKI: certificates are not valid for production",
                     style="bold red")
    table = Table(title=title)
    for column in ("slot", "phone", "step", "progress", "detail", "outcome"):
        table.add_column(column)
    for slot in status.get("slots", []):
        progress = float(slot.get("progress") or 0)
        bar = "#" * round(progress * 10) + "." * (10 - round(progress * 10))
        step = slot.get("step", "")
        if slot.get("awaiting_confirmation"):
            step = "CONFIRM?"
        table.add_row(Text(str(slot.get("slot", ""))), Text(_phone(slot)), Text(str(step)),
                      Text(f"{bar} {progress:4.0%}"), Text(str(slot.get("message", ""))[:70]),
                      Text(str(slot.get("outcome") or "")))
    delivery = status.get("delivery") or {}
    lines = [f"outbox: {delivery.get('pending', 0)} pending, {delivery.get('parked', 0)} "
             f"parked, {delivery.get('delivered', 0)} delivered"] if "pending" in delivery else []
    lines += [f"{str(a.get('level', '')).upper()}: {a.get('message', '')} -> {a.get('hint', '')}"
              for a in delivery.get("alerts", [])]
    if lines:
        table.caption = Text("\n".join(lines))
        table.caption_justify = "left"
    return table


async def _status(args: argparse.Namespace) -> int:
    async with ControlClient(socket_path(args)) as client:
        if args.json:
            print(json.dumps(await client.status(), indent=2, sort_keys=True))
            return 0
        console = Console()
        if args.once:
            console.print(render_table(await client.status()))
            return 0
        with Live(render_table(await client.status()), console=console,
                  refresh_per_second=4) as live:
            while True:
                await REAL_TIME.sleep(args.interval)
                live.update(render_table(await client.status()))


async def _confirm_or_abort(args: argparse.Namespace, confirm: bool) -> int:
    async with ControlClient(socket_path(args)) as client:
        # Answer for the phone the technician is looking at: send the session and serial
        # seen now, so the agent refuses if the slot changed phones in between.
        slot = await client.call("GET", f"/slots/{_quote(args.slot)}")
        serial = args.serial or (slot.get("phone") or {}).get("serial")
        if confirm:
            done = await client.confirm(args.slot, session_id=slot.get("session_id"),
                                        serial=serial)
            print(f"{args.slot}: erase of {_phone(slot)} confirmed by {done['confirmed_by']}")
        else:
            await client.abort(args.slot, session_id=slot.get("session_id"), serial=serial)
            print(f"{args.slot}: erase of {_phone(slot)} aborted; the phone is not erased")
    return 0


async def _login(args: argparse.Namespace) -> int:
    async with ControlClient(socket_path(args)) as client:
        done = await client.login(args.operator)
    print(f"signed in as {done['operator']}")
    return 0


async def _logout(args: argparse.Namespace) -> int:
    async with ControlClient(socket_path(args)) as client:
        await client.logout()
    print("signed out")
    return 0


async def _intake(args: argparse.Namespace) -> int:
    async with ControlClient(socket_path(args)) as client:
        if args.intake_command == "list":
            entries = await client.intake()
            if args.json:
                print(json.dumps(entries, indent=2, sort_keys=True))
                return 0
            for e in entries:
                print(f"{e['kind']:<6} {e['identifier']:<20} {e['reference'] or '-':<24} "
                      f"{e['source']} {e['added_at']}")
            print(f"{len(entries)} phone(s) booked in")
            return 0
        if args.intake_command == "add":
            entry = {"imei": args.imei} if args.imei else {"serial": args.serial}
            if args.reference:
                entry["reference"] = args.reference
            await client.add_intake([entry])
            print(f"booked in: {next(iter(entry.values()))}"
                  + (f" (reference {args.reference})" if args.reference else ""))
            return 0
        if args.intake_command == "remove":
            await client.remove_intake(args.identifier)
            print(f"removed: {args.identifier}")
            return 0
        # imei: the IMEI(s) of a phone on a slot that would not give them itself.
        slot = await client.call("GET", f"/slots/{_quote(args.slot)}")
        done = await client.enter_imeis(args.slot, [] if args.none else args.imeis,
                                        session_id=slot.get("session_id"),
                                        serial=(slot.get("phone") or {}).get("serial"))
        print(f"{args.slot}: IMEI {', '.join(done['imeis']) or 'none'} entered by "
              f"{done['entered_by']} for serial {done['serial']}")
        return 0


async def _handoff(args: argparse.Namespace) -> int:
    async with ControlClient(socket_path(args)) as client:
        slot = await client.call("GET", f"/slots/{_quote(args.slot)}")
        done = await client.attest_final_reset(
            args.slot, session_id=slot.get("session_id"),
            serial=(slot.get("phone") or {}).get("serial"))
    print(f"{args.slot}: final reset of serial {done['serial']} attested by "
          f"{done['attested_by']}")
    return 0


def _quote(segment: str) -> str:
    from urllib.parse import quote

    return quote(segment, safe="")


def _run(coro: Any) -> int:
    try:
        result: int = asyncio.run(coro)
        return result
    except ControlApiError as exc:
        print(f"wipeagent: {exc}\nhint: {exc.hint}", file=sys.stderr)
        return EXIT_UNREACHABLE if exc.code in ("unreachable", "timeout") else EXIT_REFUSED


def cmd_status(args: argparse.Namespace) -> int:
    """`wipeagent status`: a live table of the bench's slots."""
    return _run(_status(args))


def cmd_confirm(args: argparse.Namespace) -> int:
    """`wipeagent confirm SLOT`: allow the erase of the phone waiting on SLOT."""
    return _run(_confirm_or_abort(args, True))


def cmd_abort(args: argparse.Namespace) -> int:
    """`wipeagent abort SLOT`: refuse the erase; the phone ends not erased."""
    return _run(_confirm_or_abort(args, False))


def cmd_login(args: argparse.Namespace) -> int:
    """`wipeagent login OPERATOR`: sign in at this bench."""
    return _run(_login(args))


def cmd_logout(args: argparse.Namespace) -> int:
    """`wipeagent logout`: sign the operator out."""
    return _run(_logout(args))


def cmd_intake(args: argparse.Namespace) -> int:
    """`wipeagent intake list | add | remove | imei`: the intake list and IMEI entry."""
    return _run(_intake(args))


def cmd_handoff(args: argparse.Namespace) -> int:
    """`wipeagent handoff SLOT`: the final reset of the phone on SLOT is done."""
    return _run(_handoff(args))


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--socket", metavar="PATH",
                        help=f"control socket (default: from the config, else {DEFAULT_SOCKET})")
    parser.add_argument("--config", metavar="FILE",
                        help=f"agent configuration to read control.socket from "
                             f"(default {DEFAULT_CONFIG} when present)")


def register(subparsers: Any) -> None:
    """Add `status`, `confirm`, `abort`, `login`, `logout`, `intake`, `handoff` (each
    sets `func`)."""
    p = subparsers.add_parser("status", help="the bench: slots, phones, progress, outcomes")
    _common(p)
    p.add_argument("--once", action="store_true", help="print the table once and exit")
    p.add_argument("--json", action="store_true", help="print the status as JSON and exit")
    p.add_argument("--interval", type=float, default=1.0, help="refresh seconds (live)")
    p.set_defaults(func=cmd_status)

    p = subparsers.add_parser("confirm", help="allow the erase of the phone on SLOT")
    _common(p)
    p.add_argument("slot", metavar="SLOT")
    p.add_argument("--serial", help="refuse unless the phone on SLOT has this serial")
    p.set_defaults(func=cmd_confirm)

    p = subparsers.add_parser("abort", help="refuse the erase of the phone on SLOT")
    _common(p)
    p.add_argument("slot", metavar="SLOT")
    p.add_argument("--serial", help="refuse unless the phone on SLOT has this serial")
    p.set_defaults(func=cmd_abort)

    p = subparsers.add_parser("login", help="sign in at this bench as OPERATOR")
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
