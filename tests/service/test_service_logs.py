"""Log lines: one per event, escaped, with the per-phone prefix and journald priority."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from wipeagent.models import Outcome
from wipeagent.service.logs import (
    ConsoleFormatter,
    EventLogger,
    JournalFormatter,
    escape,
    logfmt,
    phone_prefix,
    setup_logging,
)
from wipeagent.session import SessionEvent


def record(msg: str, level: int = logging.WARNING) -> logging.LogRecord:
    return logging.LogRecord("wipeagent.x", level, __file__, 1, msg, None, None)


def test_escape_keeps_one_line_and_bounds_it() -> None:
    assert escape("a\nb\tc\r\x1b[2J\x00") == "a\\nb\\tc\\r\\x1b[2J\\x00"
    assert escape("z" * 50, limit=10) == "z" * 10 + "…[cut]"
    assert escape("华为 Mate") == "华为 Mate"  # printable text is kept as is


def test_logfmt_quotes_what_needs_it() -> None:
    line = logfmt(step="erase", msg='say "hi" a=b', none=None, n=3)
    assert line == 'step=erase msg="say \\"hi\\" a=b" n=3'


def test_phone_prefix() -> None:
    assert phone_prefix("usb:1-3", "38211FDH") == "[usb:1-3|38211FDH]"
    assert phone_prefix("usb:1-3", None) == "[usb:1-3]"
    assert phone_prefix("s", "X\nFAKE") == "[s|X\\nFAKE]"


def test_journal_formatter_prefixes_priority_on_every_line() -> None:
    fmt = JournalFormatter()
    assert fmt.format(record("hello\nforged line")) == "<4>wipeagent.x: hello\\nforged line"
    assert fmt.format(record("x", logging.ERROR)).startswith("<3>")
    assert fmt.format(record("x", logging.INFO)).startswith("<6>")
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        rec = logging.LogRecord("n", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    lines = fmt.format(rec).splitlines()
    assert len(lines) > 2 and all(line.startswith("<3>") for line in lines)
    assert "ValueError: boom" in lines[-1]


def test_console_formatter_has_time_and_level() -> None:
    line = ConsoleFormatter().format(record("hi"))
    assert " WARNING wipeagent.x: hi" in line and line[:4].isdigit()


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """setup_logging changes process-wide state: put it back for the other tests."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    names = ("adb_shell", "aiohttp.access", "asyncio", "wipeagent.session")
    levels = {n: logging.getLogger(n).level for n in names}
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    for name, old in levels.items():
        logging.getLogger(name).setLevel(old)


def test_event_logger_lines(restore_logging: None) -> None:
    stream = io.StringIO()
    setup_logging(logging.INFO, "journal", stream)
    try:
        # The session's own INFO line would repeat the event: only the bench line shows.
        logging.getLogger("wipeagent.session").info("[slot] erase: duplicate")
        events = EventLogger(serial_of=lambda e: "SER\n1")
        events(SessionEvent("tcp:127.0.0.1:5555", "0123456789abcdef", "erase",
                            "cmd testharness enable"))
        events(SessionEvent("tcp:127.0.0.1:5555", "0123456789abcdef", "done", "not_erased",
                            outcome=Outcome.NOT_ERASED))
        events(SessionEvent("slot2", "", "manual_reset", "reset it",
                            instructions=("Open Settings", "Tap Reset")))
    finally:
        stream_text = stream.getvalue()
    lines = stream_text.splitlines()
    assert lines[0] == ('<6>wipeagent.bench: [tcp:127.0.0.1:5555|SER\\n1] step=erase '
                        'session=01234567 msg="cmd testharness enable"')
    assert lines[1].startswith("<4>") and "outcome=not_erased" in lines[1]
    assert lines[3].endswith('instruction=1 msg="Open Settings"')
    assert len(lines) == 5
