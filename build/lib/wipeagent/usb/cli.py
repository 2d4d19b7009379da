"""`wipeagent usb list` and `wipeagent usb watch`.

The main CLI calls `register(subparsers)`; each sub-command sets `args.func(args) -> int`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from typing import Any

from wipeagent.clock import REAL_TIME
from wipeagent.errors import ConfigError
from wipeagent.usb.conflicts import check_adb_claim, check_usbmuxd
from wipeagent.usb.model import DeviceEvent, PhoneKind, UsbPhone
from wipeagent.usb.slots import SlotMap
from wipeagent.usb.watcher import UsbWatcher


def register(subparsers: Any) -> None:
    """Add `usb list [--json] [--check]` and `usb watch [--json]` to an argparse CLI."""
    usb = subparsers.add_parser("usb", help="phones on this bench's USB ports")
    sub = usb.add_subparsers(dest="usb_command", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--slot",
        action="append",
        default=[],
        metavar="PORT=LABEL",
        help="name a port's slot, e.g. --slot 1-3.2=A1 (repeatable; the config file does this too)",
    )
    common.add_argument("--json", action="store_true", help="machine-readable output")

    lst = sub.add_parser("list", parents=[common], help="list the phones on USB now")
    lst.add_argument(
        "--check",
        action="store_true",
        help="also check for a running adb server holding phones, and for usbmuxd",
    )
    lst.set_defaults(func=cmd_list)

    watch = sub.add_parser("watch", parents=[common], help="print phones as they come and go")
    watch.add_argument("--window", type=float, default=2.0, help="fold window in seconds")
    watch.set_defaults(func=cmd_watch)


def _slots(args: argparse.Namespace) -> SlotMap:
    mapping: dict[str, str] = {}
    for item in args.slot:
        port, sep, label = item.partition("=")
        if not sep:
            raise ConfigError(f"--slot {item!r}: want PORT=LABEL, e.g. 1-3.2=A1")
        mapping[port.strip()] = label.strip()
    return SlotMap(mapping)


def _line(phone: UsbPhone) -> str:
    ident = phone.serial or (f"ECID {phone.ecid}" if phone.ecid else "-")
    return (
        f"{phone.slot:<12} {phone.port_path:<12} {phone.vid_pid}  {phone.kind.value:<17} "
        f"{ident:<26} {phone.display_name}"
    )


async def _list(args: argparse.Namespace) -> dict[str, Any]:
    watcher = UsbWatcher(REAL_TIME, _slots(args))
    phones = watcher.snapshot()
    out: dict[str, Any] = {"phones": [p.model_dump(mode="json") for p in phones]}
    if args.check:
        checks: list[dict[str, Any]] = []
        for phone in phones:
            if phone.kind in (PhoneKind.ANDROID_ADB, PhoneKind.ANDROID_FASTBOOT):
                adb = await check_adb_claim(phone, REAL_TIME)
                checks.append(
                    {
                        "port_path": phone.port_path,
                        "adb": adb.model_dump(mode="json"),
                        "conflict": adb.conflict,
                        "message": adb.message,
                    }
                )
        out["adb_checks"] = checks
        if any(p.kind.platform.value == "ios" for p in phones):
            mux = await check_usbmuxd(REAL_TIME)
            out["usbmuxd"] = mux.model_dump(mode="json")
    return out


def cmd_list(args: argparse.Namespace) -> int:
    """`wipeagent usb list`: 0 always (no phone is not an error)."""
    out = asyncio.run(_list(args))
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    phones = [UsbPhone.model_validate(p) for p in out["phones"]]
    if not phones:
        print("no phones on USB")
    for phone in phones:
        print(_line(phone))
        print(f"{'':<12} hint: {phone.hint}")
    for check in out.get("adb_checks", []):
        print(f"{check['port_path']}: {check['message']}")
    if "usbmuxd" in out:
        print(f"usbmuxd: {out['usbmuxd']['detail']}")
    return 0


def _event_line(event: DeviceEvent) -> str:
    extra = ""
    if event.replug:
        extra = f"  (seen before in {event.previous_slot}, port {event.previous_port_path})"
    return f"{event.action.value:<6} {_line(event.phone)}{extra}"


async def _watch(args: argparse.Namespace) -> None:
    watcher = UsbWatcher(
        REAL_TIME, _slots(args), fold_window=args.window, max_fold=max(args.window * 5, args.window)
    )
    async for event in watcher.events():
        if args.json:
            print(json.dumps(event.model_dump(mode="json")), flush=True)
        else:
            print(_event_line(event), flush=True)


def cmd_watch(args: argparse.Namespace) -> int:
    """`wipeagent usb watch`: runs until interrupted."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_watch(args))
    return 0
