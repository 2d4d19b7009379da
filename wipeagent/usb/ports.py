"""Which USB port a device is in, from the bus and device number other programs name it by.

usbmuxd names an iPhone by `LocationID`, which on Linux is `(bus << 16) | address`
(libimobiledevice usbmuxd, src/usb.c `usb_get_location`, sent as the Attached message's
LocationID in src/client.c `create_device_attached_plist`), where the address is the USB
device number the kernel gives the device at each enumeration: it changes at every re-plug
and every reboot of the phone. The port path (`1-3.2`) does not: it is where the cable is.
sysfs shows both for every USB device (`/sys/bus/usb/devices/<port>/busnum`, `devnum`), so
the port is found by looking the pair up there; the device's USB serial (`serial`) is
compared too, so a device that took the address meanwhile is never mistaken for the phone.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from wipeagent.usb.slots import is_port_path

SYSFS = Path("/sys")
_MAX_ATTR = 256  # bytes read of one sysfs attribute


def _attr(folder: Path, name: str) -> str | None:
    with contextlib.suppress(OSError, UnicodeDecodeError), open(folder / name, "rb") as f:
        return f.read(_MAX_ATTR).decode("ascii").strip()
    return None


def port_of(bus: int, address: int, *, serial: str | None = None,
            sysfs: Path = SYSFS) -> str | None:
    """The port path of the USB device at `bus`/`address` now, or None (no such device,
    or its USB serial is not `serial`, compared without dashes and case)."""
    if not (0 < bus < 1000 and 0 < address < 1000):
        return None
    devices = sysfs / "bus" / "usb" / "devices"
    try:
        names = os.listdir(devices)
    except OSError:
        return None
    for name in sorted(names):
        if not is_port_path(name):
            continue
        folder = devices / name
        if _attr(folder, "busnum") != str(bus) or _attr(folder, "devnum") != str(address):
            continue
        if serial is not None:
            found = _attr(folder, "serial")
            if found is None or found.replace("-", "").lower() != serial.replace(
                    "-", "").lower():
                return None
        return name
    return None
