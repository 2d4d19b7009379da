"""Phones on the bench's USB ports: detection, classification, slots, hotplug events.

    watcher = UsbWatcher(clock, {"1-3.2": "A1"})
    watcher.snapshot()                      # phones present now (coldplug)
    async for event in watcher.events():    # add / change / remove, folded
        ...

Phones are classified from USB descriptors only (see `PhoneKind` for what that cannot
tell: ADB authorisation and iPhone trust are the transport's business).
"""

from wipeagent.usb.classify import RawUsbDevice, classify, read_device
from wipeagent.usb.conflicts import (
    AdbClaimCheck,
    UsbmuxdCheck,
    check_adb_claim,
    check_usbmuxd,
    find_usbfs_holders,
)
from wipeagent.usb.model import DeviceEvent, EventAction, PhoneKind, UsbInterface, UsbPhone
from wipeagent.usb.slots import SlotMap
from wipeagent.usb.watcher import UsbWatcher

__all__ = [
    "AdbClaimCheck",
    "DeviceEvent",
    "EventAction",
    "PhoneKind",
    "RawUsbDevice",
    "SlotMap",
    "UsbInterface",
    "UsbPhone",
    "UsbWatcher",
    "UsbmuxdCheck",
    "check_adb_claim",
    "check_usbmuxd",
    "classify",
    "find_usbfs_holders",
    "read_device",
]
