"""A phone waiting for the technician: "tap Trust", "unlock the phone", "allow USB
debugging". Transports and drivers notice these deep inside a connect or a pairing poll;
the session that runs them shows them on the bench (a SessionEvent with step
"attention"), so the technician sees the instruction instead of "connecting".

The sink is a context variable set by `DeviceSession.run` for its own task, so a call
here from any depth reaches the right session's observers, and nothing happens when no
session listens (a CLI command, a test of a transport).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

# code, message -> None. Codes (stable; the bench page translates them):
TAP_TRUST = "tap_trust"
UNLOCK_PHONE = "unlock_phone"
ALLOW_USB_DEBUGGING = "allow_usb_debugging"

Sink = Callable[[str, str], None]
_sink: ContextVar[Sink | None] = ContextVar("wipeagent_attention", default=None)


def needed(code: str, message: str) -> None:
    """The phone waits for the technician to do `code`."""
    sink = _sink.get()
    if sink is not None:
        sink(code, message)


def cleared() -> None:
    """Whatever the phone waited for was done."""
    sink = _sink.get()
    if sink is not None:
        sink("", "")


@contextmanager
def reporting_to(sink: Sink) -> Iterator[None]:
    """Route `needed` / `cleared` calls made in this context (task) to `sink`."""
    token = _sink.set(sink)
    try:
        yield
    finally:
        _sink.reset(token)
