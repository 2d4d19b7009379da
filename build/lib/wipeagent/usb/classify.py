"""Read a USB device from sysfs (pyudev) and decide whether, and what kind of, phone it is.

The decision uses interface class triples, which the kernel exposes per interface of the
*active* configuration. A device may hide the interface that matters in another
configuration (an iPhone's usbmux interface lives in a configuration usbmuxd selects), or
have no active configuration at all; then the full descriptor set is read with libusb
(python-libusb1, the binding adb-shell already uses; pyusb caches libusb's device list for
the life of the process, which misses hotplugged devices).

Every value here was written by the phone: strings are bounded and sanitised, numbers are
range-checked, and nothing read here is ever used in a shell command or file path.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import pyudev

from wipeagent.usb.ids import UsbIds, load_ids
from wipeagent.usb.model import SERIAL_PATTERN, PhoneKind, UsbInterface, UsbPhone
from wipeagent.usb.slots import SlotMap, is_port_path

log = logging.getLogger(__name__)

ADB = (0xFF, 0x42, 0x01)
FASTBOOT = (0xFF, 0x42, 0x03)
USBMUX = (0xFF, 0xFE, 0x02)
STILL_IMAGE = (0x06, 0x01, 0x01)  # PTP, and MTP on Android 8+ (MtpDescriptors.cpp)
LEGACY_MTP = (0xFF, 0xFF, 0x00)  # older Android MTP (f_mtp), told apart by its "MTP" name
APPLE_VID = 0x05AC

_MAX_ATTR = 256  # sysfs strings are <= 126 UTF-16 units; anything longer is not trusted
_SERIAL_RE = re.compile(SERIAL_PATTERN)
_ECID_RE = re.compile(r"(?:^|\s)ECID:([0-9A-Fa-f]{1,16})(?:\s|$)")
_UNSAFE = set("<>\"'`\\{}$[]|;")

HINTS: dict[PhoneKind, str] = {
    PhoneKind.ANDROID_ADB: (
        "ADB interface present; whether this bench is authorised shows only when connecting: "
        "if the phone asks 'Allow USB debugging?', tap Allow"
    ),
    PhoneKind.ANDROID_FASTBOOT: "phone is in the bootloader (fastboot): choose 'Start' to boot it",
    PhoneKind.ANDROID_NO_ADB: (
        "USB debugging is off: Settings > About phone > tap Build number 7 times, "
        "then Developer options > USB debugging"
    ),
    PhoneKind.IOS: "unlock the iPhone and tap Trust if asked",
    PhoneKind.IOS_NO_USBMUX: "unlock the iPhone (USB Restricted Mode hides it) and replug it",
    PhoneKind.APPLE_RECOVERY: "iPhone is in recovery mode: it must be restored before erasing",
    PhoneKind.APPLE_DFU: "iPhone is in DFU mode: it must be restored before erasing",
}


def clean_text(raw: bytes | str | None, limit: int = 64) -> str:
    """A device-supplied string made safe to show: printable, no markup/shell characters."""
    if raw is None:
        return ""
    text = raw[:_MAX_ATTR].decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    kept = "".join(ch for ch in text[:_MAX_ATTR] if ch.isprintable() and ch not in _UNSAFE)
    return " ".join(kept.split())[:limit]


def clean_serial(raw: bytes | str | None) -> str | None:
    """The serial if it looks like one (safe charset, 1-64 chars), else None."""
    text = clean_text(raw, _MAX_ATTR)
    return text if _SERIAL_RE.match(text) else None


@dataclass(frozen=True)
class RawUsbDevice:
    """What sysfs (and libusb where needed) say about one USB device, bounded and parsed."""

    port_path: str
    busnum: int
    devnum: int
    vendor_id: int
    product_id: int
    device_class: int = 0
    serial: bytes | None = None
    manufacturer: bytes | None = None
    product: bytes | None = None
    num_configurations: int = 1
    active_configuration: int | None = None
    interfaces: tuple[UsbInterface, ...] = field(default=())


def _attr(device: pyudev.Device, name: str) -> bytes | None:
    try:
        value = device.attributes.get(name)
    except (OSError, UnicodeError):
        return None
    if not isinstance(value, bytes):
        return None
    return value[:_MAX_ATTR].strip()


def _int_attr(device: pyudev.Device, name: str, base: int, limit: int) -> int | None:
    raw = _attr(device, name)
    if not raw:
        return None
    try:
        value = int(raw.decode("ascii"), base)
    except (UnicodeDecodeError, ValueError):
        return None
    return value if 0 <= value <= limit else None


def _interface_from_udev(intf: pyudev.Device) -> UsbInterface | None:
    cls = _int_attr(intf, "bInterfaceClass", 16, 255)
    sub = _int_attr(intf, "bInterfaceSubClass", 16, 255)
    proto = _int_attr(intf, "bInterfaceProtocol", 16, 255)
    number = _int_attr(intf, "bInterfaceNumber", 16, 255)
    if cls is None or sub is None or proto is None:
        return None
    try:
        driver = intf.driver or ""
    except (OSError, UnicodeError):
        driver = ""
    return UsbInterface(
        number=number or 0,
        cls=cls,
        subclass=sub,
        protocol=proto,
        name=clean_text(_attr(intf, "interface")),
        driver=clean_text(driver),
    )


def _interfaces_from_libusb(
    busnum: int, devnum: int, active: int | None
) -> tuple[UsbInterface, ...]:
    """All interfaces of all configurations, from the descriptors libusb reads in sysfs.

    Reading descriptors does not open the device, so it works while another process (an
    adb server) has claimed it, and it never changes the device's configuration. A fresh
    libusb context each time: a long-lived one keeps a device list that only libusb's own
    hotplug thread updates, and this is called rarely (devices udev cannot classify).
    """
    try:
        import usb1

        found: list[UsbInterface] = []
        with usb1.USBContext() as ctx:
            for dev in ctx.getDeviceIterator(skip_on_error=True):
                if (dev.getBusNumber(), dev.getDeviceAddress()) != (busnum, devnum):
                    continue
                for cfg in list(dev.iterConfigurations())[:8]:
                    value = int(cfg.getConfigurationValue()) & 0xFF
                    for intf in list(cfg)[:32]:
                        for setting in list(intf)[:1]:  # alternate settings share the class
                            found.append(
                                UsbInterface(
                                    number=int(setting.getNumber()) & 0xFF,
                                    cls=int(setting.getClass()) & 0xFF,
                                    subclass=int(setting.getSubClass()) & 0xFF,
                                    protocol=int(setting.getProtocol()) & 0xFF,
                                    configuration=value,
                                    active=value == active,
                                )
                            )
                break
        return tuple(found)
    except Exception as exc:
        log.debug("libusb could not read descriptors of %s/%s: %s", busnum, devnum, exc)
        return ()


def read_device(device: pyudev.Device, *, use_libusb: bool = True) -> RawUsbDevice | None:
    """Read a `usb_device` from sysfs; None for root hubs, interfaces and unreadable devices."""
    if device.device_type != "usb_device" or not is_port_path(device.sys_name):
        return None
    vid = _int_attr(device, "idVendor", 16, 0xFFFF)
    pid = _int_attr(device, "idProduct", 16, 0xFFFF)
    busnum = _int_attr(device, "busnum", 10, 999)
    devnum = _int_attr(device, "devnum", 10, 999)
    if vid is None or pid is None or busnum is None or devnum is None:
        return None  # half-created or half-removed: the next uevent will bring it back
    prefix = device.sys_name + ":"
    interfaces: list[UsbInterface] = []
    for child in device.children:
        if child.device_type == "usb_interface" and child.sys_name.startswith(prefix):
            intf = _interface_from_udev(child)
            if intf is not None:
                interfaces.append(intf)
            if len(interfaces) >= 32:
                break
    interfaces.sort(key=lambda i: i.number)
    num_configs = _int_attr(device, "bNumConfigurations", 10, 255) or 1
    raw = RawUsbDevice(
        port_path=device.sys_name,
        busnum=busnum,
        devnum=devnum,
        vendor_id=vid,
        product_id=pid,
        device_class=_int_attr(device, "bDeviceClass", 16, 255) or 0,
        serial=_attr(device, "serial"),
        manufacturer=_attr(device, "manufacturer"),
        product=_attr(device, "product"),
        num_configurations=num_configs,
        active_configuration=_int_attr(device, "bConfigurationValue", 10, 255),
        interfaces=tuple(interfaces),
    )
    if use_libusb and _wants_full_descriptors(raw):
        extra = _interfaces_from_libusb(busnum, devnum, raw.active_configuration)
        if extra:
            # Keep udev's view of the active configuration (it knows names and drivers) and
            # add the interfaces only the descriptors know about.
            seen = {(i.number, i.triple) for i in raw.interfaces}
            more = tuple(i for i in extra if not i.active or (i.number, i.triple) not in seen)
            raw = RawUsbDevice(**{**raw.__dict__, "interfaces": raw.interfaces + more})
    return raw


def _wants_full_descriptors(raw: RawUsbDevice) -> bool:
    if raw.device_class == 0x09:
        return False  # a hub is never a phone; do not pay for libusb enumeration
    if not raw.interfaces:
        return True  # unconfigured: udev has no interfaces at all
    triples = {(i.cls, i.subclass, i.protocol) for i in raw.interfaces}
    # Only phone-relevant devices with other configurations: an iPhone before usbmuxd
    # switched it to the usbmux configuration.
    return raw.num_configurations > 1 and not triples & {ADB, FASTBOOT, USBMUX}


def classify(raw: RawUsbDevice, slots: SlotMap, ids: UsbIds | None = None) -> UsbPhone | None:
    """The phone on this USB device, or None for anything that is not a phone."""
    ids = ids or load_ids()
    kind = _kind(raw, ids)
    if kind is None:
        return None
    serial = clean_serial(raw.serial)
    ecid: str | None = None
    if kind in (PhoneKind.APPLE_RECOVERY, PhoneKind.APPLE_DFU):
        # iBoot's serial string is "CPID:8030 ... ECID:001A35E22EF8802E ... SRTG:[iBoot-...]".
        match = _ECID_RE.search((raw.serial or b"")[:_MAX_ATTR].decode("ascii", "replace"))
        ecid = match.group(1).upper() if match else None
        serial = None
    return UsbPhone(
        slot=slots.label(raw.port_path),
        port_path=raw.port_path,
        busnum=raw.busnum,
        devnum=raw.devnum,
        vendor_id=raw.vendor_id,
        product_id=raw.product_id,
        kind=kind,
        serial=serial,
        ecid=ecid,
        vendor_name=clean_text(ids.vendor_name(raw.vendor_id)),
        product_name=clean_text(ids.product_name(raw.vendor_id, raw.product_id)),
        usb_manufacturer=clean_text(raw.manufacturer),
        usb_product=clean_text(raw.product),
        hint=HINTS[kind],
        interfaces=raw.interfaces,
        devnode=f"/dev/bus/usb/{raw.busnum:03d}/{raw.devnum:03d}",
    )


def _kind(raw: RawUsbDevice, ids: UsbIds) -> PhoneKind | None:
    triples = {(i.cls, i.subclass, i.protocol) for i in raw.interfaces}
    if raw.vendor_id == APPLE_VID:
        if raw.product_id in ids.apple_dfu:
            return PhoneKind.APPLE_DFU
        if raw.product_id in ids.apple_recovery:
            return PhoneKind.APPLE_RECOVERY
        if USBMUX in triples:
            return PhoneKind.IOS
        if ids.is_apple_mobile(raw.product_id):
            return PhoneKind.IOS_NO_USBMUX
        return None  # keyboards, adapters, displays
    if FASTBOOT in triples:
        return PhoneKind.ANDROID_FASTBOOT
    if ADB in triples:
        return PhoneKind.ANDROID_ADB
    # An interface named "MTP" is Android's MTP function; a bare PTP interface counts only
    # from a phone maker (a camera's PTP interface must stay ignored).
    mtp_named = any(
        (i.cls, i.subclass, i.protocol) in (STILL_IMAGE, LEGACY_MTP) and i.name.upper() == "MTP"
        for i in raw.interfaces
    )
    if mtp_named or (STILL_IMAGE in triples and ids.is_phone_maker(raw.vendor_id)):
        return PhoneKind.ANDROID_NO_ADB
    return None
