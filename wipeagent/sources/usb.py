"""Phones on the bench's USB ports, as a DeviceSource (over wipeagent.usb.UsbWatcher).

What each settled USB event becomes:

- an Android phone with its ADB interface (`android_adb`) arriving: PhoneArrival with
  key = its USB serial, the slot of its port, and a driver that reaches it over ADB on USB
  (AdbUsbEndpoint: found by serial at every connect, so a reset that re-enumerates it is
  reconnected, never confused with the phone that takes its old device number);
- that phone leaving its port: PhoneDeparture (the Agent pauses the session unless it
  waits for the reboot its erase causes; the phone's next arrival resumes it);
- everything else a technician must act on: PhoneNotice with the classifier's hint
  (USB debugging off, fastboot, Apple recovery / DFU, an iPhone while usbmuxd is not
  running, an adb server holding the phone, two phones with one serial).

iPhones themselves are not announced here: they are reached through usbmuxd, whose own
source announces them; this source only says so when usbmuxd cannot be reached.

A USB serial is the only thing that names a phone across re-plugs, so a second phone with
the serial of one already present is held back (with a notice) until the first leaves:
two sessions must never talk to "the phone with serial X" at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import cast

from wipeagent.clock import Clock
from wipeagent.config import AgentConfig
from wipeagent.platforms.android.driver import AndroidDriver, AndroidDriverSettings
from wipeagent.platforms.base import PlatformDriver
from wipeagent.sources import PhoneArrival, PhoneDeparture, PhoneNotice, SourceEvent
from wipeagent.transports.adb import AdbHostKey, AdbUsbEndpoint
from wipeagent.usb.classify import ADB
from wipeagent.usb.conflicts import UsbmuxdCheck, check_usbmuxd
from wipeagent.usb.model import DeviceEvent, EventAction, PhoneKind, UsbPhone
from wipeagent.usb.watcher import UsbWatcher

log = logging.getLogger(__name__)

UsbDriverFactory = Callable[[UsbPhone], PlatformDriver]
"""Makes the driver for an ADB phone on USB (tests map the serial to a simulated phone)."""

UsbmuxdProbe = Callable[[], Awaitable[UsbmuxdCheck]]

USBMUXD_HINT = "start it: sudo systemctl start usbmuxd (Debian package usbmuxd)"
ADB_CLAIMED_MESSAGE = "another program (usually an adb server) holds this phone's ADB interface"
ADB_CLAIMED_HINT = "stop it: adb kill-server; then unplug and plug the phone in again"


def _we_hold(devnode: str, fd_dir: str = "/proc/self/fd") -> bool:
    """Whether this process has the phone's usbfs node open (our own claim, not a rival's)."""
    if not devnode:
        return False
    with contextlib.suppress(OSError):
        for name in os.listdir(fd_dir)[:65536]:
            with contextlib.suppress(OSError):
                if os.readlink(os.path.join(fd_dir, name)) == devnode:
                    return True
    return False


def adb_claimed_by_another(phone: UsbPhone) -> bool:
    """True when the phone's ADB interface is bound to usbfs by some other process.

    The kernel shows a user-space claim as the interface's driver `usbfs`; the agent's own
    claim (a connected session) looks the same, so our own open file is excluded.
    """
    claimed = any(
        (i.cls, i.subclass, i.protocol) == ADB and i.driver == "usbfs" for i in phone.interfaces
    )
    return claimed and not _we_hold(phone.devnode)


class UsbSource:
    """A DeviceSource over a UsbWatcher: ADB phones arrive and depart, the rest are notices.

    `make_driver(phone)` builds the driver for an `android_adb` phone (default in
    make_usb_source: AndroidDriver over AdbUsbEndpoint(phone.serial)). `usbmuxd` probes
    usbmuxd when an iPhone appears (None: iPhones are left to their own source silently).
    """

    name = "usb"

    def __init__(
        self,
        watcher: UsbWatcher,
        make_driver: UsbDriverFactory,
        *,
        usbmuxd: UsbmuxdProbe | None = None,
    ) -> None:
        self.watcher = watcher
        self.make_driver = make_driver
        self.usbmuxd = usbmuxd
        self._announced: dict[str, str] = {}  # port path -> key (serial) announced there
        self._held_back: dict[str, UsbPhone] = {}  # port path -> duplicate-serial phone

    # -- the stream ------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[SourceEvent]:
        # The watcher's events() is an async generator; close it deterministically so its
        # udev monitor is released when the Agent stops this source.
        stream = cast(AsyncGenerator[DeviceEvent, None], self.watcher.events())
        async with contextlib.aclosing(stream) as device_events:
            async for event in device_events:
                try:
                    out = await self.translate(event)
                except Exception:
                    # One odd event must not stop detection for the whole bench.
                    log.exception("[%s] could not handle USB event %s", event.slot,
                                  event.action.value)
                    continue
                for item in out:
                    yield item

    async def translate(self, event: DeviceEvent) -> list[SourceEvent]:
        """The source events for one settled USB event (public for tests and tools)."""
        port = event.port_path
        if event.action is EventAction.REMOVE:
            return self._gone(port, event.phone)
        if event.action is EventAction.CHANGE:
            was_adb = port in self._announced or port in self._held_back
            if event.kind is PhoneKind.ANDROID_ADB and was_adb:
                # Re-enumerated with ADB (a reset, a USB mode switch, a claim): the
                # transport finds the phone again by serial; the slot is unchanged.
                if port in self._held_back:
                    self._held_back[port] = event.phone
                return []
            out = self._gone(port, event.phone) if was_adb else []
            return out + await self._arrived(event.phone)
        out = await self._arrived(event.phone)
        if event.coldplug:
            # Plugged in before the agent started: see PhoneArrival.present_at_start.
            out = [dataclasses.replace(e, present_at_start=True)
                   if isinstance(e, PhoneArrival) else e for e in out]
        return out

    # -- helpers ---------------------------------------------------------------------------

    async def _arrived(self, phone: UsbPhone) -> list[SourceEvent]:
        kind = phone.kind
        if kind is PhoneKind.ANDROID_ADB:
            return self._adb_arrived(phone)
        if kind is PhoneKind.IOS:
            return await self._iphone(phone)
        return [PhoneNotice(phone.slot, f"{phone.display_name}: {_KIND_TEXT[kind]}", phone.hint)]

    def _adb_arrived(self, phone: UsbPhone) -> list[SourceEvent]:
        if phone.serial is None:
            return [PhoneNotice(
                phone.slot, f"{phone.display_name}: no usable USB serial number",
                "the phone cannot be told apart from others; it cannot be processed here")]
        out: list[SourceEvent] = []
        if adb_claimed_by_another(phone):
            # Still announced: the session's connect fails with the same clear reason,
            # which is recorded; the notice tells the technician at once.
            out.append(PhoneNotice(phone.slot, ADB_CLAIMED_MESSAGE, ADB_CLAIMED_HINT))
        elsewhere = [p for p, key in self._announced.items() if key == phone.serial]
        if elsewhere and elsewhere != [phone.port_path]:
            self._held_back[phone.port_path] = phone
            return [*out, PhoneNotice(
                phone.slot,
                f"another phone with serial {phone.serial} is already being processed "
                f"(port {elsewhere[0]})",
                "phones with the same serial cannot be told apart: process them one at a time")]
        self._announced[phone.port_path] = phone.serial
        driver_factory = self._driver_factory(phone)
        out.append(PhoneArrival(
            key=phone.serial, slot=phone.slot, make_driver=driver_factory,
            description=f"{phone.display_name} ({phone.vid_pid}) on USB port {phone.port_path}",
        ))
        return out

    def _driver_factory(self, phone: UsbPhone) -> Callable[[], PlatformDriver]:
        make = self.make_driver
        return lambda: make(phone)

    def _gone(self, port: str, phone: UsbPhone) -> list[SourceEvent]:
        self._held_back.pop(port, None)
        key = self._announced.pop(port, None)
        if key is None:
            return []
        out: list[SourceEvent] = [PhoneDeparture(key, phone.slot)]
        # A phone with the same serial waiting on another port may go now.
        for other_port, waiting in list(self._held_back.items()):
            if waiting.serial == key:
                del self._held_back[other_port]
                out += self._adb_arrived(waiting)
                break
        return out

    async def _iphone(self, phone: UsbPhone) -> list[SourceEvent]:
        if self.usbmuxd is None:
            return []
        check = await self.usbmuxd()
        if check.answering:
            return []  # the usbmuxd source announces it
        return [PhoneNotice(
            phone.slot, f"{phone.display_name}: usbmuxd is not running, so iPhones cannot "
            f"be reached ({check.detail})", USBMUXD_HINT)]


_KIND_TEXT: dict[PhoneKind, str] = {
    PhoneKind.ANDROID_NO_ADB: "USB debugging is off (file transfer only)",
    PhoneKind.ANDROID_FASTBOOT: "in the bootloader (fastboot)",
    PhoneKind.IOS_NO_USBMUX: "iPhone without its usbmux interface",
    PhoneKind.APPLE_RECOVERY: "in recovery mode",
    PhoneKind.APPLE_DFU: "in DFU mode",
    PhoneKind.ANDROID_ADB: "ADB",
    PhoneKind.IOS: "iPhone",
}


def make_usb_source(
    config: AgentConfig,
    clock: Clock,
    adb_key: AdbHostKey,
    driver_settings: AndroidDriverSettings,
    *,
    make_driver: UsbDriverFactory | None = None,
    watcher: UsbWatcher | None = None,
) -> UsbSource:
    """The USB source from the agent's configuration ([usb] and [ios] sections).

    `make_driver` replaces the default AndroidDriver-over-USB (tests point it at simulated
    phones); `watcher` replaces the UsbWatcher built from config.usb.
    """
    usb = config.usb
    if watcher is None:
        watcher = UsbWatcher(clock, usb.slots, fold_window=usb.fold_window_s,
                             max_fold=max(usb.max_fold_s, usb.fold_window_s))

    def adb_over_usb(phone: UsbPhone) -> PlatformDriver:
        assert phone.serial is not None  # only android_adb phones with a serial get here
        endpoint = AdbUsbEndpoint(phone.serial)
        # AndroidDriver is annotated for TCP endpoints; connect_adb takes either kind.
        return AndroidDriver(endpoint, adb_key, clock, driver_settings)

    usbmuxd: UsbmuxdProbe | None = None
    if config.ios.enabled:
        address = config.ios.usbmuxd or None

        async def probe() -> UsbmuxdCheck:
            return await check_usbmuxd(clock, address)

        usbmuxd = probe
    return UsbSource(watcher, make_driver or adb_over_usb, usbmuxd=usbmuxd)


__all__ = [
    "UsbDriverFactory",
    "UsbSource",
    "adb_claimed_by_another",
    "make_usb_source",
]
