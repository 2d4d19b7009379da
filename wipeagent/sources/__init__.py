"""Where phones come from: sources emit arrivals and departures; the Agent runs sessions.

A source knows how to find phones (TCP endpoints that start answering, USB hotplug
events, usbmuxd Attached/Detached messages) and how to make a platform driver for each.
It knows nothing of sessions. The Agent starts one session per arrival `key` and tells
the session about departures.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

from wipeagent.platforms.base import PlatformDriver

DriverFactory = Callable[[], PlatformDriver]


@dataclass(frozen=True)
class PhoneArrival:
    """A phone can be talked to. `key` is stable for one phone on one source (a USB
    serial, a UDID, a TCP endpoint); a second arrival with a key that has a running
    session is ignored (a reboot, a duplicate event)."""

    key: str
    slot: str
    make_driver: DriverFactory
    description: str = ""
    # Already plugged in when the source started (coldplug). Such a phone whose last
    # session ended with a certificate is not processed again until it is re-plugged.
    present_at_start: bool = False
    # A driver already connected (and authenticated) to the phone: the connection the
    # source proved the phone's presence with, handed to the session so that an arrival
    # connects and signs once, not twice. The Agent closes it when it starts no session.
    driver: PlatformDriver | None = None


@dataclass(frozen=True)
class PhoneDeparture:
    """The phone with this key is gone (unplugged, rebooting, re-enumerating)."""

    key: str
    slot: str


@dataclass(frozen=True)
class PhoneNotice:
    """Something a technician should see about a slot that is not a session yet
    (e.g. "tap Allow USB debugging", "enable USB debugging", "usbmuxd is not running")."""

    slot: str
    message: str
    hint: str = ""


SourceEvent = PhoneArrival | PhoneDeparture | PhoneNotice


class DeviceSource(Protocol):
    """A stream of phone events; runs until cancelled."""

    name: str

    def events(self) -> AsyncIterator[SourceEvent]:
        """Yield events as phones come and go. Must not raise for one bad phone."""
        ...
