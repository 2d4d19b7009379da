"""The `wipeagent` command."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points

from wipeagent import __version__
from wipeagent.errors import WipeAgentError

Handler = Callable[[argparse.Namespace], int]

# Entry-point group through which other distributions add verbs: `register(subparsers)`.
COMMANDS_GROUP = "wipeagent.commands"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wipeagent", description=__doc__)
    parser.add_argument("--version", action="version", version=f"wipeagent {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    # Each area registers its own verbs.
    from wipeagent.certs.cli import register as register_certs
    from wipeagent.control.cli import register as register_control
    from wipeagent.journal_cli import register as register_journal
    from wipeagent.platform_service.cli import register as register_platform
    from wipeagent.runner import register as register_run
    from wipeagent.uplink.cli import register as register_uplink
    from wipeagent.usb.cli import register as register_usb

    for register in (register_run, register_certs, register_usb, register_control,
                     register_uplink, register_platform, register_journal):
        register(sub)
    # Verbs of other installed distributions (the simulator's `demo` and `sim`): a bench
    # installation does not carry the simulator, so it does not have them.
    for entry in entry_points(group=COMMANDS_GROUP):
        entry.load()(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Sub-command modules set `func`; this module sets `handler`.
    handler: Handler = getattr(args, "handler", None) or args.func
    try:
        return handler(args)
    except WipeAgentError as exc:
        print(f"wipeagent: {exc}\nhint: {exc.hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
