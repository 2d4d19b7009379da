"""An emulated USB bench on umockdev: phones, hubs and keyboards as the kernel shows them.

Imported only by `bench_child.py`, which runs under `umockdev-wrapper` (the preload library
must be loaded before the process starts). The real libudev (behind pyudev) and the real
libusb (behind pyusb) then see these devices and their uevents.

Each device gets the sysfs attributes the kernel writes for USB devices and interfaces,
and a `descriptors` file holding its raw device + configuration descriptors (what libusb
reads), so the profiles below say what real phones' descriptors look like.
"""

from __future__ import annotations

import asyncio
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.append("/usr/lib/python3/dist-packages")  # Debian's python3-gi (CPython 3.11 ABI)

import gi

gi.require_version("UMockdev", "1.0")
from gi.repository import UMockdev  # noqa: E402

Intf = tuple[int, int, int, str]  # class, subclass, protocol, interface string


@dataclass(frozen=True)
class Profile:
    vid: int
    pid: int
    manufacturer: str
    product: str
    configs: tuple[tuple[Intf, ...], ...]
    active: int | None = 1  # bConfigurationValue; None = not configured
    device_class: int = 0
    serial: str | None = "SERIAL"


ADB: Intf = (0xFF, 0x42, 0x01, "ADB Interface")
MTP: Intf = (0x06, 0x01, 0x01, "MTP")
PTP_APPLE: Intf = (0x06, 0x01, 0x01, "PTP")
USBMUX: Intf = (0xFF, 0xFE, 0x02, "Apple USB Multiplexor")
APPLE_ETH: Intf = (0xFF, 0xFD, 0x01, "Apple USB Ethernet")
RECOVERY_SERIAL = (
    "CPID:8030 CPRV:11 CPFM:03 SCEP:01 BDID:0C ECID:001A35E22EF8802E IBFL:3C "
    "SRTG:[iBoot-7459.140.15]"
)

PROFILES: dict[str, Profile] = {
    # Pixel with "USB debugging" on and "No data transfer": only the ADB interface.
    "pixel_adb": Profile(0x18D1, 0x4EE7, "Google", "Pixel 7", ((ADB,),)),
    # USB debugging off, file transfer on: MTP only (Android 8+ uses class 06/01/01 "MTP").
    "pixel_mtp": Profile(0x18D1, 0x4EE1, "Google", "Pixel 7", ((MTP,),)),
    # File transfer + USB debugging.
    "pixel_mtp_adb": Profile(0x18D1, 0x4EE2, "Google", "Pixel 7", ((MTP, ADB),)),
    # The phone shows "Allow USB debugging?": USB looks exactly like an authorised phone
    # (the prompt is part of the ADB handshake, not of the descriptors).
    "pixel_auth_prompt": Profile(0x18D1, 0x4EE2, "Google", "Pixel 7", ((MTP, ADB),)),
    "pixel_fastboot": Profile(
        0x18D1, 0x4EE0, "Google", "Android", (((0xFF, 0x42, 0x03, "fastboot"),),)
    ),
    # Older Samsung MTP: vendor-specific class named "MTP", plus a modem interface.
    "samsung_mtp_legacy": Profile(
        0x04E8,
        0x6860,
        "SAMSUNG",
        "SAMSUNG_Android",
        (((0xFF, 0xFF, 0x00, "MTP"), (0x02, 0x02, 0x01, "CDC Abstract Control Model (ACM)")),),
    ),
    # iPhone after usbmuxd selected the usbmux configuration (4 of 4).
    "iphone": Profile(
        0x05AC,
        0x12A8,
        "Apple Inc.",
        "iPhone",
        (
            (PTP_APPLE,),
            ((0x01, 0x01, 0x00, ""),),
            (PTP_APPLE, USBMUX),
            (PTP_APPLE, USBMUX, APPLE_ETH),
        ),
        active=4,
        serial="00008030001A35E22EF8802E",
    ),
    # iPhone as the kernel leaves it without usbmuxd: configuration 1 (PTP only) is active;
    # the usbmux interface is visible only in the full descriptors (pyusb).
    "iphone_no_usbmuxd": Profile(
        0x05AC,
        0x12A8,
        "Apple Inc.",
        "iPhone",
        (
            (PTP_APPLE,),
            ((0x01, 0x01, 0x00, ""),),
            (PTP_APPLE, USBMUX),
            (PTP_APPLE, USBMUX, APPLE_ETH),
        ),
        active=1,
        serial="00008030001A35E22EF8802E",
    ),
    "iphone_recovery": Profile(
        0x05AC,
        0x1281,
        "Apple Inc.",
        "Apple Mobile Device (Recovery Mode)",
        (((0xFF, 0xFF, 0x00, ""), (0xFF, 0xFF, 0x01, "")),),
        serial=RECOVERY_SERIAL,
    ),
    "iphone_dfu": Profile(
        0x05AC,
        0x1227,
        "Apple Inc.",
        "Apple Mobile Device (DFU Mode)",
        (((0xFE, 0x01, 0x00, ""),),),
        serial=RECOVERY_SERIAL,
    ),
    "keyboard": Profile(
        0x046D,
        0xC31C,
        "Logitech",
        "USB Keyboard",
        (((0x03, 0x01, 0x01, ""), (0x03, 0x00, 0x00, "")),),
        serial=None,
    ),
    "hub": Profile(
        0x05E3,
        0x0610,
        "GenesysLogic",
        "USB2.1 Hub",
        (((0x09, 0x00, 0x00, ""),),),
        device_class=0x09,
        serial=None,
    ),
    "camera": Profile(
        0x04A9, 0x3218, "Canon Inc.", "Canon Digital Camera", (((0x06, 0x01, 0x01, ""),),)
    ),
    "apple_keyboard": Profile(
        0x05AC, 0x024F, "Apple Inc.", "Magic Keyboard", (((0x03, 0x01, 0x01, ""),),), serial=None
    ),
}


def _endpoints(cls: int, sub: int, proto: int, number: int) -> list[bytes]:
    """A bulk IN and a bulk OUT endpoint for ADB / fastboot interfaces, as phones have."""
    if (cls, sub) != (0xFF, 0x42):
        return []
    return [struct.pack("<BBBBHB", 7, 5, 0x81 + number, 2, 512, 0),
            struct.pack("<BBBBHB", 7, 5, 0x01 + number, 2, 512, 0)]


def descriptors(p: Profile) -> bytes:
    """Raw device descriptor followed by every configuration descriptor (sysfs `descriptors`)."""
    data = struct.pack(
        "<BBHBBBBHHHBBBB",
        18,
        1,
        0x0200,
        p.device_class,
        0,
        0,
        64,
        p.vid,
        p.pid,
        0x0100,
        1,
        2,
        3 if p.serial else 0,
        len(p.configs),
    )
    for value, intfs in enumerate(p.configs, start=1):
        body = b"".join(
            struct.pack("<BBBBBBBBB", 9, 4, n, 0, len(_endpoints(c, s, pr, n)), c, s, pr, 0)
            + b"".join(_endpoints(c, s, pr, n))
            for n, (c, s, pr, _) in enumerate(intfs)
        )
        data += (
            struct.pack("<BBHBBBBB", 9, 2, 9 + len(body), len(intfs), value, 0, 0x80, 250) + body
        )
    return data


@dataclass
class Plugged:
    port: str
    sys_path: str
    interfaces: list[str] = field(default_factory=list)


class Bench:
    """A USB bench: root hubs per bus, hubs created as needed, devices on port paths."""

    def __init__(self) -> None:
        self.tb = UMockdev.Testbed.new()
        self.roots: dict[int, str] = {}
        self.devices: dict[str, Plugged] = {}
        self.next_devnum: dict[int, int] = {}

    @staticmethod
    async def _pump() -> None:
        """Let the event loop read the uevents just sent (one device's worth, at most 5).

        umockdev delivers uevents over a unix datagram socket, which holds only
        net.unix.max_dgram_qlen (10) messages; a full queue aborts the sender. The kernel's
        netlink socket buffers bytes (hundreds of events), so handing events over device by
        device is closer to a real burst than sending 300 into a 10-slot queue.
        """
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    async def _root(self, bus: int) -> str:
        if bus not in self.roots:
            attrs = [
                "idVendor",
                "1d6b",
                "idProduct",
                "0002",
                "bDeviceClass",
                "09",
                "busnum",
                str(bus),
                "devnum",
                "1",
                "bNumConfigurations",
                "1",
                "bConfigurationValue",
                "1",
                "speed",
                "480",
            ]
            props = ["DEVTYPE", "usb_device", "DEVNAME", f"/dev/bus/usb/{bus:03d}/001"]
            self.roots[bus] = self.tb.add_device(
                "usb", f"pci0000:00/0000:00:14.{bus}/usb{bus}", None, attrs, props
            )
            await self._pump()
            self.next_devnum[bus] = 2
        return self.roots[bus]

    async def _parent(self, port: str) -> str:
        bus = int(port.split("-", maxsplit=1)[0])
        root = await self._root(bus)
        if "." not in port:
            return root
        parent_port = port.rsplit(".", 1)[0]
        if parent_port not in self.devices:
            await self.plug(parent_port, "hub")
        return self.devices[parent_port].sys_path

    async def plug(
        self, port: str, profile: str, serial: str | None = None, **overrides: Any
    ) -> Plugged:
        """Enumerate a device on `port` (udev sees add uevents for it and its interfaces)."""
        p = PROFILES[profile]
        if overrides:
            p = Profile(**{**p.__dict__, **overrides})
        serial = serial if serial is not None else p.serial
        parent = await self._parent(port)
        bus = int(port.split("-", maxsplit=1)[0])
        devnum = self.next_devnum[bus]
        self.next_devnum[bus] = devnum + 1 if devnum < 127 else 2
        attrs = [
            "idVendor",
            f"{p.vid:04x}",
            "idProduct",
            f"{p.pid:04x}",
            "bcdDevice",
            "0100",
            "bDeviceClass",
            f"{p.device_class:02x}",
            "bNumConfigurations",
            str(len(p.configs)),
            "bConfigurationValue",
            "" if p.active is None else str(p.active),
            "busnum",
            str(bus),
            "devnum",
            str(devnum),
            "speed",
            "480",
            "devpath",
            port.split("-", 1)[1],
            "manufacturer",
            p.manufacturer,
            "product",
            p.product,
        ]
        if serial:
            attrs += ["serial", serial]
        props = [
            "DEVTYPE",
            "usb_device",
            "DEVNAME",
            f"/dev/bus/usb/{bus:03d}/{devnum:03d}",
            "PRODUCT",
            f"{p.vid:x}/{p.pid:x}/100",
        ]
        # No await until the device is complete: the kernel creates a device and its
        # interfaces microseconds apart, so the watcher must not get a chance to read a
        # half-built device here either.
        sys_path = self.tb.add_device("usb", port, parent, attrs, props)
        self.tb.set_attribute_binary(sys_path, "descriptors", descriptors(p))
        plugged = Plugged(port, sys_path)
        if p.active is not None:
            for n, (c, s, pr, name) in enumerate(p.configs[p.active - 1]):
                iattrs = [
                    "bInterfaceNumber",
                    f"{n:02x}",
                    "bAlternateSetting",
                    " 0",
                    "bInterfaceClass",
                    f"{c:02x}",
                    "bInterfaceSubClass",
                    f"{s:02x}",
                    "bInterfaceProtocol",
                    f"{pr:02x}",
                    "bNumEndpoints",
                    "00",
                ]
                if name:
                    iattrs += ["interface", name]
                iprops = ["DEVTYPE", "usb_interface", "INTERFACE", f"{c}/{s}/{pr}"]
                plugged.interfaces.append(
                    self.tb.add_device("usb", f"{port}:{p.active}.{n}", sys_path, iattrs, iprops)
                )
        self.tb.uevent(sys_path, "bind")  # the kernel's last event for a new device
        await self._pump()
        self.devices[port] = plugged
        return plugged

    async def claim(self, port: str, interface: int, driver: str = "usbfs") -> None:
        """Bind an interface to a driver (`usbfs`: a user-space program claimed it)."""
        intf = self.devices[port].interfaces[interface]
        self.tb.set_attribute_link(intf, "driver", f"../../../../../../bus/usb/drivers/{driver}")
        self.tb.uevent(intf, "bind")
        await self._pump()

    async def uevent(self, port: str, action: str) -> None:
        self.tb.uevent(self.devices[port].sys_path, action)
        await self._pump()

    async def unplug(self, port: str) -> None:
        """Remove a device (and any devices behind it, if it is a hub)."""
        for child in [p for p in self.devices if p.startswith(port + ".")]:
            if child in self.devices:  # not already gone with its own hub
                await self.unplug(child)
        plugged = self.devices.pop(port)
        # As with the kernel, sysfs is gone by the time anyone reads the remove uevents.
        for intf in plugged.interfaces:
            self.tb.uevent(intf, "remove")
        self.tb.uevent(plugged.sys_path, "remove")
        self.tb.remove_device(plugged.sys_path)
        # umockdev 0.17 leaves the /sys/bus/usb/devices links behind, and then refuses to
        # add a device of the same name again (a phone re-plugged into the same port).
        bus_dir = Path(self.tb.get_root_dir(), "sys/bus/usb/devices")
        for name in [port, *(Path(i).name for i in plugged.interfaces)]:
            link = bus_dir / name
            if link.is_symlink() and not link.exists():
                link.unlink()
        await self._pump()
