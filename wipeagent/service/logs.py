"""Logs that journald and people can both read: one line per event.

- Under systemd ($JOURNAL_STREAM names our stderr) each line starts with the syslog
  priority (`<3>`, sd-daemon(3)), so `journalctl -p warning` filters by level; journald
  adds the time stamp. In a terminal each line starts with the time and level instead.
- Session events read `[slot|serial] step=erase session=1c2d... msg="..."`: the per-phone
  prefix (as mobly's `[Android|serial]`) then key=value pairs, so `journalctl -u wipeagent
  | grep '|38211FDH2004NJ]'` follows one phone and the rest is machine-splittable.
- Every message is escaped: phones are untrusted, and a serial or model string with a
  newline or terminal escape must not forge a log line or drive the administrator's
  terminal.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Literal, TextIO

from wipeagent.session import SessionEvent
from wipeagent.steps import SessionStep

LogFormat = Literal["auto", "journal", "console"]

MAX_LINE_CHARS = 2000  # one event; a phone's oversized string is cut, not logged whole

# logging level -> syslog priority (sd-daemon(3): SD_ERR "<3>" ...)
_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6,
             logging.DEBUG: 7}


def escape(text: str, limit: int = MAX_LINE_CHARS) -> str:
    """One printable line: control characters as \\n, \\t, \\xNN; cut at `limit`."""
    out: list[str] = []
    for ch in text:
        if ch.isprintable():
            out.append(ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        else:
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
    line = "".join(out)
    return line if len(line) <= limit else line[:limit] + "…[cut]"


def _value(value: object) -> str:
    text = escape(str(value), 500)
    if text and not any(c in text for c in ' "=\\'):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def logfmt(**fields: object) -> str:
    """`key=value` pairs (values quoted when they contain spaces, quotes or '='); None
    values are left out."""
    return " ".join(f"{key}={_value(value)}" for key, value in fields.items()
                    if value is not None)


def phone_prefix(slot: str, serial: str | None) -> str:
    """The per-phone prefix: `[slot|serial]`, or `[slot]` before the phone is identified."""
    slot_text = escape(slot, 80)
    return f"[{slot_text}|{escape(serial, 80)}]" if serial else f"[{slot_text}]"


def journal_stream_is(stream: TextIO) -> bool:
    """True when `stream` is connected to journald ($JOURNAL_STREAM = "dev:inode" of it)."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    if not expected:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError):
        return False
    return expected == f"{st.st_dev}:{st.st_ino}"


class _EscapingFormatter(logging.Formatter):
    def _body(self, record: logging.LogRecord) -> list[str]:
        lines = [f"{record.name}: {escape(record.getMessage())}"]
        if record.exc_info:
            # Tracebacks are ours, not the phone's: keep their lines, one entry each.
            lines.extend("  " + escape(x) for x in
                         self.formatException(record.exc_info).splitlines())
        return lines


class JournalFormatter(_EscapingFormatter):
    """`<priority>logger: message` (journald stores the time and turns the prefix into
    PRIORITY=)."""

    def format(self, record: logging.LogRecord) -> str:
        prio = _PRIORITY.get(record.levelno, 6 if record.levelno < logging.WARNING else 3)
        return "\n".join(f"<{prio}>{line}" for line in self._body(record))


class ConsoleFormatter(_EscapingFormatter):
    """`2026-01-02 03:04:05,678 WARNING logger: message` for a terminal or a file."""

    def format(self, record: logging.LogRecord) -> str:
        head = f"{self.formatTime(record)} {record.levelname}"
        return "\n".join(f"{head} {line}" for line in self._body(record))


def setup_logging(level: int = logging.INFO, fmt: LogFormat = "auto",
                  stream: TextIO | None = None) -> logging.Handler:
    """Replace the root logger's handlers with one line-per-event handler on `stream`
    (stderr by default). Returns the handler."""
    stream = stream or sys.stderr
    journal = fmt == "journal" or (fmt == "auto" and journal_stream_is(stream))
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JournalFormatter() if journal else ConsoleFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Libraries' chatter (per-packet adb-shell debug, aiohttp access lines) is not a
    # bench event; their warnings still get through.
    for noisy in ("adb_shell", "aiohttp.access", "asyncio"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    # wipeagent.session logs each event at INFO too; EventLogger ("wipeagent.bench")
    # writes the same event with the serial, so keep one line per event unless debugging.
    logging.getLogger("wipeagent.session").setLevel(
        logging.DEBUG if level <= logging.DEBUG else logging.WARNING)
    return handler


SerialLookup = Callable[[SessionEvent], str | None]

_WARNING_STEPS = frozenset({SessionStep.PAUSED, SessionStep.NOTICE, SessionStep.MANUAL_RESET})


class EventLogger:
    """A session Observer that logs each event as one line with the phone prefix.

    `serial_of` finds the serial of the phone behind an event (the Agent knows it once
    the phone is identified)."""

    def __init__(self, serial_of: SerialLookup | None = None,
                 logger: logging.Logger | None = None) -> None:
        self.serial_of = serial_of
        self.log = logger or logging.getLogger("wipeagent.bench")

    def __call__(self, event: SessionEvent) -> None:
        serial = self.serial_of(event) if self.serial_of is not None else None
        fields = logfmt(
            step=event.step,
            session=event.session_id[:8] or None,
            outcome=event.outcome.value if event.outcome is not None else None,
            msg=event.message,
        )
        level = logging.INFO
        if event.step in _WARNING_STEPS or (
                event.outcome is not None and event.outcome.value == "not_erased"):
            level = logging.WARNING
        self.log.log(level, "%s %s", phone_prefix(event.slot, serial), fields)
        for number, step in enumerate(event.instructions, start=1):
            self.log.log(level, "%s %s", phone_prefix(event.slot, serial),
                         logfmt(instruction=number, msg=step))
