"""The `wipeagent` command.

Each area registers its own verbs (`register(subparsers)`). The verbs need different
optional dependencies (pyproject.toml): `verify` and `pki` only the core; the agent's verbs
the `bench` extra; `platform` the `platform` extra. A verb whose extra is not installed
fails with one line naming the extra (exit 69, EX_UNAVAILABLE), never a traceback.

Start-up: only the module of the verb asked for is imported (every area's module when the
verb is unknown, for `--help`, or for another distribution's verbs), so `wipeagent verify`
and `wipeagent status` start without loading the agent (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

import wipeagent
from wipeagent.errors import WipeAgentError

Handler = Callable[[argparse.Namespace], int]

# Entry-point group through which other distributions add verbs: `register(subparsers)`.
COMMANDS_GROUP = "wipeagent.commands"

# Exit status of a verb whose optional dependencies are not installed (sysexits.h).
EXIT_MISSING_EXTRA = 69


class Area:
    """A module whose `register(subparsers)` adds `verbs`, which need `extra`."""

    def __init__(self, module: str, extra: str | None, verbs: tuple[str, ...]) -> None:
        self.module = module
        self.extra = extra
        self.verbs = verbs


# Every verb of this distribution (tests/test_cli_extras.py checks the table against what
# each module registers). extra None: the core install has what the verb needs.
AREAS = (
    Area("wipeagent.runner", "bench", ("run",)),
    Area("wipeagent.certs.cli", None, ("verify", "pki")),
    Area("wipeagent.usb.cli", "bench", ("usb",)),
    Area("wipeagent.control.cli", "bench",
         ("status", "confirm", "abort", "login", "logout", "intake", "handoff", "identify",
          "manual-step", "scan", "certificate", "operator")),
    Area("wipeagent.uplink.cli", "bench", ("outbox", "receiver", "uplink-key", "uplink-sign")),
    Area("wipeagent.platform_service.cli", "platform", ("platform",)),
    Area("wipeagent.journal_cli", "bench", ("journal",)),
)

# Third-party modules that belong to one extra whatever the verb (e.g. `verify --pdf`).
MODULE_EXTRAS = {
    "reportlab": "pdf",
    "qrcode": "pdf",
    "sqlalchemy": "platform",
    "alembic": "platform",
    "psycopg": "platform",
    "aiosqlite": "platform",
}


def _missing_extra(verb: str, extra: str | None, exc: ModuleNotFoundError) -> int:
    module = (exc.name or "?").split(".")[0]
    needed = MODULE_EXTRAS.get(module) or extra or "bench"
    print(f"wipeagent {verb}: needs the '{needed}' extra (module {module} is not installed): "
          f"pip install 'wipeagent[{needed}]'", file=sys.stderr)
    return EXIT_MISSING_EXTRA


def _unavailable(area: Area, verb: str, exc: ModuleNotFoundError) -> Handler:
    def handler(args: argparse.Namespace) -> int:
        return _missing_extra(verb, area.extra, exc)
    return handler


def _register(area: Area, sub: Any) -> None:
    """The area's verbs; placeholders that name the extra if its module cannot load."""
    try:
        module = importlib.import_module(area.module)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] == "wipeagent":
            raise  # our own module missing is a bug, not an extra to install
        for verb in area.verbs:
            # No option prefix: every argument after the verb is taken as is.
            parser = sub.add_parser(verb, help=f"(needs the '{area.extra}' extra)",
                                    add_help=False, prefix_chars="\0")
            parser.add_argument("rest", nargs=argparse.REMAINDER)
            parser.set_defaults(handler=_unavailable(area, verb, exc))
        return
    module.register(sub)


class _Version(argparse.Action):
    """`--version`, with the version looked up only when asked for."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        parser.exit(message=f"wipeagent {wipeagent.__version__}\n")


def _verb(argv: Sequence[str]) -> str | None:
    """The verb: the first argument that is not an option of the top-level parser."""
    for arg in argv:
        if arg in ("-h", "--help", "--version"):
            return None
        if not arg.startswith("-"):
            return arg
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; with `argv`, only as much of it as that command line needs."""
    parser = argparse.ArgumentParser(prog="wipeagent", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action=_Version, nargs=0,
                        help="show the version and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    if argv is not None and "--version" in argv and _verb(argv) is None:
        return parser  # nothing else is needed to print the version
    verb = _verb(argv) if argv is not None else None
    known = [a for a in AREAS if verb in a.verbs]
    for area in known or AREAS:
        _register(area, sub)
    if not known:
        # Verbs of other installed distributions (the simulator's `demo` and `sim`): a
        # bench installation does not carry the simulator, so it does not have them.
        from importlib.metadata import entry_points

        for entry in entry_points(group=COMMANDS_GROUP):
            entry.load()(sub)
    return parser


def _extra_of(verb: str | None) -> str | None:
    for area in AREAS:
        if verb in area.verbs:
            return area.extra
    return None


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(arguments)
    args = parser.parse_args(arguments)
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
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] == "wipeagent":
            raise
        return _missing_extra(args.command, _extra_of(args.command), exc)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
