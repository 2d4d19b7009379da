"""The simulator's verbs of the `wipeagent` command: `demo` and `sim ...`.

Registered through the `wipeagent.commands` entry point of the wipeagent-sim distribution,
so a bench installation (which does not carry the simulator) does not have them.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any


def _cmd_demo(args: argparse.Namespace) -> int:
    from wipeagent_sim.demo import run_demo

    return asyncio.run(run_demo(Path(args.out), speed=args.speed, json_out=args.json,
                                platform=args.platform or args.serve, serve=args.serve,
                                handoff=args.handoff, page=args.page or None,
                                linger_s=args.linger))


def _cmd_sim_android(args: argparse.Namespace) -> int:
    from wipeagent.clock import Clock
    from wipeagent_sim.android.bench import serve_forever

    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        raise SystemExit(f"--listen wants HOST:PORT, got {args.listen!r}")
    asyncio.run(serve_forever(args.profile, host, int(port), Path(args.state_dir),
                              Clock(args.speed)))
    return 0


def _print_ios_bench(bench: Any) -> None:
    print(f"usbmuxd on {bench.address}", flush=True)
    for phone in bench.phones:
        print(f"  {phone.udid}  {phone.serial_number}", flush=True)


def _cmd_sim_ios(args: argparse.Namespace) -> int:
    from wipeagent_sim.ios.bench import remote_control, serve_forever

    if args.action:
        if len(args.action) != 2:
            raise SystemExit("sim ios: ACTION UDID, e.g. `sim ios trust 00008030-...`")
        action, udid = args.action
        try:
            asyncio.run(remote_control(args.socket or args.listen, action, udid))
        except LookupError as exc:
            print(f"wipeagent: {exc}", file=sys.stderr)
            return 1
        return 0
    if not args.profile:
        raise SystemExit("sim ios: give at least one --profile (or ACTION UDID)")
    asyncio.run(serve_forever(args.profile, listen=args.listen, socket_path=args.socket,
                              speed=args.speed, ready=_print_ios_bench))
    return 0


def _cmd_sim_profiles(args: argparse.Namespace) -> int:
    from wipeagent_sim.android.profiles import list_profiles

    for p in list_profiles():
        expect = p.expected_outcome + (f" ({p.expected_reason})" if p.expected_reason else "")
        demo = "" if p.demo else "  [test only]"
        print(f"android  {p.name:<24} {expect:<34} {p.description}{demo}")
    from wipeagent_sim.demo import ios_profiles

    for i in ios_profiles():
        expect = i.expected_outcome + (f" ({i.expected_reason})" if i.expected_reason else "")
        demo = "" if i.demo else "  [test only]"
        print(f"ios      {i.name:<24} {expect:<34} {i.description}{demo}")
    return 0


def register(sub: Any) -> None:
    """Add `demo` and `sim` to the `wipeagent` command."""
    p = sub.add_parser("demo", help="a simulated bench, end to end")
    p.add_argument("--out", default="demo-out", help="where state and certificates go")
    p.add_argument("--speed", type=float, default=20.0,
                   help="bench clock speed factor (default 20: a 60 s reboot takes 3 s)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--platform", action="store_true",
                   help="run the platform service beside the bench: QR links to its "
                   "verification page, every certificate delivered (mutual TLS)")
    p.add_argument("--serve", action="store_true",
                   help="with --platform: keep the platform service up after the run, so the "
                   "printed link can be opened, until Ctrl-C")
    p.add_argument("--handoff", choices=("restore", "final_reset"), default="restore",
                   help="the hand-off after each verified erase (policy.handoff): the "
                   "bench puts settings back and turns USB debugging off (restore), or the "
                   "simulated technician resets each erased phone once more (final_reset)")
    p.add_argument("--page", default="127.0.0.1:8470", metavar="HOST:PORT",
                   help="serve the bench page there while the phones run ('' for none; a "
                        "free port when this one is taken)")
    p.add_argument("--linger", type=float, default=0.0, metavar="SECONDS",
                   help="keep the bench page up this long after the phones finished")
    p.set_defaults(handler=_cmd_demo)

    sim = sub.add_parser("sim", help="simulated phones").add_subparsers(
        dest="sim_command", required=True, metavar="KIND")
    p = sim.add_parser("android", help="serve simulated Android phones over ADB/TCP")
    p.add_argument("--listen", required=True, help="HOST:PORT of the first phone")
    p.add_argument("--profile", action="append", required=True,
                   help="profile name or file; repeat for more phones on consecutive ports")
    p.add_argument("--state-dir", default="sim-state")
    p.add_argument("--speed", type=float, default=1.0)
    p.set_defaults(handler=_cmd_sim_android)
    p = sim.add_parser("ios", help="serve simulated iPhones behind a fake usbmuxd, or act "
                                   "on one (trust / deny / unlock / unplug / plug UDID)")
    p.add_argument("action", nargs="*", metavar="ACTION UDID",
                   help="act on a running simulated bench instead of serving one")
    p.add_argument("--listen", default="127.0.0.1:27015", help="usbmuxd HOST:PORT")
    p.add_argument("--socket", help="also serve (or reach) usbmuxd on this unix socket")
    p.add_argument("--profile", action="append", help="iPhone profile; repeat for more")
    p.add_argument("--speed", type=float, default=1.0)
    p.set_defaults(handler=_cmd_sim_ios)
    p = sim.add_parser("profiles", help="list simulator profiles")
    p.set_defaults(handler=_cmd_sim_profiles)

