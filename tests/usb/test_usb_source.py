"""UsbSource: what each settled USB event becomes for the Agent; the USB ADB endpoint's rules.

No umockdev here: DeviceEvents are built directly (the watcher that makes them is tested
under umockdev in test_usb_umockdev.py, the whole chain in test_usb_agent.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import usb1
from adb_shell import exceptions as adb_exc

from wipeagent.clock import Clock
from wipeagent.config import AgentConfig, IosConfig, UsbConfig
from wipeagent.errors import ConfigError, DeviceError, DeviceGone
from wipeagent.platforms.android.driver import AndroidDriver, AndroidDriverSettings
from wipeagent.platforms.base import PlatformDriver
from wipeagent.sources import PhoneArrival, PhoneDeparture, PhoneNotice, SourceEvent
from wipeagent.sources.usb import UsbSource, make_usb_source
from wipeagent.transports.adb import (
    ADB_SERVER_HINT,
    AdbHostKey,
    AdbUsbEndpoint,
    UsbInterfaceBusy,
    _usb_error_to_device_error,
)
from wipeagent.usb import DeviceEvent, EventAction, PhoneKind, UsbInterface, UsbPhone, UsbWatcher
from wipeagent.usb.conflicts import UsbmuxdCheck

FAST = Clock(50.0)
ADB = UsbInterface(number=0, cls=0xFF, subclass=0x42, protocol=0x01)
CLAIMED_ADB = ADB.model_copy(update={"driver": "usbfs"})


def phone(port: str = "1-2", serial: str | None = "SER1", kind: PhoneKind = PhoneKind.ANDROID_ADB,
          **kw: Any) -> UsbPhone:
    base: dict[str, Any] = {
        "slot": f"S{port}", "port_path": port, "busnum": 1, "devnum": 5, "vendor_id": 0x18D1,
        "product_id": 0x4EE7, "kind": kind, "serial": serial,
        "interfaces": (ADB,) if kind is PhoneKind.ANDROID_ADB else (),
        "devnode": "/dev/bus/usb/001/005",
    }
    return UsbPhone(**{**base, **kw})


def add(p: UsbPhone) -> DeviceEvent:
    return DeviceEvent(action=EventAction.ADD, phone=p)


def remove(p: UsbPhone) -> DeviceEvent:
    return DeviceEvent(action=EventAction.REMOVE, phone=p)


def change(old: UsbPhone, new: UsbPhone) -> DeviceEvent:
    return DeviceEvent(action=EventAction.CHANGE, phone=new, previous=old)


made: list[str] = []


def factory(p: UsbPhone) -> PlatformDriver:
    made.append(p.serial or "")
    raise RuntimeError("not called by the source itself")  # the Agent calls make_driver


def source(usbmuxd: UsbmuxdCheck | None = None) -> UsbSource:
    async def probe() -> UsbmuxdCheck:
        assert usbmuxd is not None
        return usbmuxd

    return UsbSource(UsbWatcher(FAST), factory, usbmuxd=probe if usbmuxd else None)


def kinds(events: list[SourceEvent]) -> list[str]:
    return [type(e).__name__ for e in events]


async def test_adb_phone_arrives_keyed_by_serial_and_departs() -> None:
    src = source()
    (arrival,) = await src.translate(add(phone()))
    assert isinstance(arrival, PhoneArrival)
    assert (arrival.key, arrival.slot) == ("SER1", "S1-2")
    assert "1-2" in arrival.description
    assert made == []  # the driver is made by the Agent, per session, not by the source
    (departure,) = await src.translate(remove(phone()))
    assert departure == PhoneDeparture("SER1", "S1-2")
    assert await src.translate(remove(phone())) == []  # nothing announced any more


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        (PhoneKind.ANDROID_NO_ADB, "USB debugging"),
        (PhoneKind.ANDROID_FASTBOOT, "fastboot"),
        (PhoneKind.APPLE_RECOVERY, "recovery"),
        (PhoneKind.APPLE_DFU, "DFU"),
        (PhoneKind.IOS_NO_USBMUX, "usbmux"),
    ],
)
async def test_other_kinds_are_notices_never_sessions(kind: PhoneKind, words: str) -> None:
    src = source()
    (notice,) = await src.translate(add(phone(kind=kind, hint="do this")))
    assert isinstance(notice, PhoneNotice)
    assert words in notice.message and notice.hint == "do this"
    assert await src.translate(remove(phone(kind=kind))) == []


async def test_iphone_notice_only_when_usbmuxd_is_down() -> None:
    up = UsbmuxdCheck(address="/x", socket_present=True, answering=True)
    down = UsbmuxdCheck(address="/x", socket_present=False, answering=False,
                        detail="usbmuxd is not running (no socket)")
    iphone = phone(kind=PhoneKind.IOS, vendor_id=0x05AC, product_id=0x12A8)
    assert await source(up).translate(add(iphone)) == []
    (notice,) = await source(down).translate(add(iphone))
    assert isinstance(notice, PhoneNotice)
    assert "usbmuxd is not running" in notice.message and "systemctl" in notice.hint


async def test_phone_without_serial_is_not_processed() -> None:
    (notice,) = await source().translate(add(phone(serial=None)))
    assert isinstance(notice, PhoneNotice) and "serial" in notice.message


async def test_adb_held_by_another_program_is_said_at_once() -> None:
    events = await source().translate(add(phone(interfaces=(CLAIMED_ADB,))))
    assert kinds(events) == ["PhoneNotice", "PhoneArrival"]
    notice = events[0]
    assert isinstance(notice, PhoneNotice) and "adb kill-server" in notice.hint


async def test_second_phone_with_same_serial_waits_for_the_first() -> None:
    src = source()
    first, second = phone("1-1", "0123456789ABCDEF"), phone("1-2", "0123456789ABCDEF")
    assert kinds(await src.translate(add(first))) == ["PhoneArrival"]
    (held,) = await src.translate(add(second))
    assert isinstance(held, PhoneNotice) and "one at a time" in held.hint
    released = await src.translate(remove(first))
    assert kinds(released) == ["PhoneDeparture", "PhoneArrival"]
    assert isinstance(released[1], PhoneArrival) and released[1].slot == "S1-2"
    # A phone moved between ports (the add on the new port settles first) ends up there.
    assert kinds(await src.translate(remove(second))) == ["PhoneDeparture"]


async def test_changes() -> None:
    src = source()
    adb = phone()
    mtp = phone(kind=PhoneKind.ANDROID_NO_ADB)
    fastboot = phone(kind=PhoneKind.ANDROID_FASTBOOT)
    # USB debugging switched on: the phone re-enumerates with ADB and arrives.
    (notice,) = await src.translate(add(mtp))
    assert isinstance(notice, PhoneNotice)
    assert kinds(await src.translate(change(mtp, adb))) == ["PhoneArrival"]
    # Re-enumerated with ADB again (reset, mode switch, a claim): the transport finds it
    # by serial; the Agent is not disturbed.
    assert await src.translate(change(adb, adb.model_copy(update={"devnum": 9}))) == []
    # Rebooted into the bootloader: the ADB phone is gone; the technician is told.
    assert kinds(await src.translate(change(adb, fastboot))) == ["PhoneDeparture", "PhoneNotice"]
    assert await src.translate(remove(fastboot)) == []


def test_usb_endpoint_validates_serial() -> None:
    assert str(AdbUsbEndpoint("R58M12345")) == "usb:R58M12345"
    for bad in ("", "a b", "x;reboot", "../etc", "x" * 65):
        with pytest.raises(ConfigError):
            AdbUsbEndpoint(bad)


def test_busy_interface_says_stop_the_adb_server() -> None:
    for exc in (usb1.USBErrorBusy(), adb_exc.UsbReadFailedError("claim", usb1.USBErrorBusy())):
        err = _usb_error_to_device_error(exc, "ADB connect usb:X", "/dev/bus/usb/001/005")
        assert isinstance(err, UsbInterfaceBusy)
        assert "adb server" in err.message and err.hint == ADB_SERVER_HINT
        assert "adb kill-server" in err.hint
    access = _usb_error_to_device_error(usb1.USBErrorAccess(), "c", "/dev/bus/usb/001/005")
    assert type(access) is DeviceError and "udev rules" in access.hint
    assert isinstance(_usb_error_to_device_error(usb1.USBErrorNoDevice(), "c", ""), DeviceGone)


def test_make_usb_source_from_config(tmp_path: Path) -> None:
    config = AgentConfig(usb=UsbConfig(slots={"1-3.2": "A1"}, fold_window_s=1.5),
                         ios=IosConfig(enabled=False))
    key = AdbHostKey.load_or_create(tmp_path / "adbkey")
    src = make_usb_source(config, FAST, key, AndroidDriverSettings())
    assert src.name == "usb" and src.usbmuxd is None
    assert src.watcher.fold_window == 1.5 and src.watcher.slots.label("1-3.2") == "A1"
    driver = src.make_driver(phone(serial="REAL1"))
    assert isinstance(driver, AndroidDriver) and str(driver.endpoint) == "usb:REAL1"
