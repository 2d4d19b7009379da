"""What USB detection reports: frozen records for a phone on a port and for a change.

Everything here comes from USB descriptors, which the phone writes: strings are already
sanitised (`wipeagent.usb.classify.clean_text`) and bounded before a record is built, and
the models re-validate them (parsing is validating).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import Field, computed_field, model_validator

from wipeagent.models import Frozen, Platform

PORT_PATH_PATTERN = r"^[0-9]{1,3}-[0-9]{1,3}(\.[0-9]{1,3}){0,6}$"
"""A physical port as the kernel names the device on it (`1-3.2`: bus 1, port 3, hub port 2)."""

SERIAL_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"
"""What a USB serial number may look like before the agent uses it as an identifier."""

SLOT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 ._:-]{0,31}$"


class PhoneKind(StrEnum):
    """What a phone on USB can do right now, as far as its USB descriptors tell.

    Not knowable from descriptors: whether this bench's ADB key is authorised. A phone
    showing "Allow USB debugging?" exposes exactly the same ADB interface (ff/42/01) as one
    that already trusts the bench; only the ADB handshake (CNXN vs AUTH) tells them apart,
    so that is the transport's job. The same holds for an iPhone's Trust prompt (lockdown).
    """

    ANDROID_ADB = "android_adb"  # ADB interface ff/42/01 (authorised or not: see above)
    ANDROID_FASTBOOT = "android_fastboot"  # bootloader / fastbootd, interface ff/42/03
    ANDROID_NO_ADB = "android_no_adb"  # MTP/PTP only: USB debugging is off
    IOS = "ios"  # usbmux interface ff/fe/02 in some configuration
    IOS_NO_USBMUX = "ios_no_usbmux"  # Apple mobile product id without a usbmux interface
    APPLE_RECOVERY = "apple_recovery"  # iBoot recovery mode (05ac:1280..1283)
    APPLE_DFU = "apple_dfu"  # DFU / WTF mode (05ac:1227, 05ac:1222)

    @property
    def platform(self) -> Platform:
        """The platform a phone of this kind runs."""
        return Platform.ANDROID if self.value.startswith("android") else Platform.IOS

    @property
    def usable(self) -> bool:
        """Whether a transport can talk to the phone in this mode (ADB or usbmux)."""
        return self in (PhoneKind.ANDROID_ADB, PhoneKind.IOS)


class UsbInterface(Frozen):
    """One USB interface: class triple, optional name string, bound kernel driver."""

    number: int = Field(ge=0, le=255)
    cls: int = Field(ge=0, le=255)
    subclass: int = Field(ge=0, le=255)
    protocol: int = Field(ge=0, le=255)
    configuration: int | None = Field(default=None, ge=0, le=255)
    active: bool = True  # in the configuration the device is using now
    name: str = Field(default="", max_length=64)
    # "usbfs" means a user-space program (adb server, fastboot, another agent) claimed it.
    driver: str = Field(default="", max_length=64)

    @property
    def triple(self) -> str:
        """The class/subclass/protocol triple as `ff/42/01`."""
        return f"{self.cls:02x}/{self.subclass:02x}/{self.protocol:02x}"


class UsbPhone(Frozen):
    """A phone on a bench port, as seen on USB (before any transport talked to it)."""

    slot: str = Field(pattern=SLOT_PATTERN)
    port_path: str = Field(pattern=PORT_PATH_PATTERN)
    busnum: int = Field(ge=0, le=999)
    devnum: int = Field(ge=0, le=999)
    vendor_id: int = Field(ge=0, le=0xFFFF)
    product_id: int = Field(ge=0, le=0xFFFF)
    kind: PhoneKind
    serial: str | None = Field(default=None, pattern=SERIAL_PATTERN)
    # Apple recovery / DFU devices carry no usable serial; their chip ECID identifies them.
    ecid: str | None = Field(default=None, pattern=r"^[0-9A-F]{1,16}$")
    vendor_name: str = Field(default="", max_length=64)
    product_name: str = Field(default="", max_length=64)
    usb_manufacturer: str = Field(default="", max_length=64)
    usb_product: str = Field(default="", max_length=64)
    hint: str = Field(default="", max_length=300)
    interfaces: tuple[UsbInterface, ...] = ()
    devnode: str = Field(default="", pattern=r"^(/dev/bus/usb/[0-9]{3}/[0-9]{3})?$")

    @model_validator(mode="before")
    @classmethod
    def _drop_computed(cls, data: Any) -> Any:
        # model_dump() includes the computed fields; accept them back (journal round trip).
        if isinstance(data, dict) and ("vid_pid" in data or "platform" in data):
            return {k: v for k, v in data.items() if k not in ("vid_pid", "platform")}
        return data

    @computed_field  # type: ignore[prop-decorator]
    @property
    def vid_pid(self) -> str:
        """`18d1:4ee7`."""
        return f"{self.vendor_id:04x}:{self.product_id:04x}"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def platform(self) -> Platform:
        """Android or iOS."""
        return self.kind.platform

    @property
    def identity(self) -> str | None:
        """What recognises this phone across re-plugs: the serial, else the Apple ECID."""
        if self.serial:
            return self.serial
        return f"ecid:{self.ecid}" if self.ecid else None

    @property
    def display_name(self) -> str:
        """A name for people: data-file name, else the (sanitised) USB string, else vid:pid."""
        return self.product_name or self.usb_product or self.vid_pid

    def same_enumeration(self, other: UsbPhone) -> bool:
        """True when `other` is this very enumeration again (a duplicate event)."""
        return self.model_dump(exclude={"slot", "hint"}) == other.model_dump(
            exclude={"slot", "hint"}
        )


class EventAction(StrEnum):
    ADD = "add"  # a phone appeared on a port
    CHANGE = "change"  # the same phone (same serial/ECID) re-enumerated or changed mode
    REMOVE = "remove"  # the phone left the port (after the fold window, so not a blip)


class DeviceEvent(Frozen):
    """A settled change on one port, after folding bursts of raw udev events.

    `phone` is the new state for add/change and the last known state for remove.
    """

    action: EventAction
    phone: UsbPhone
    # For change: the state before; the transport must reopen (busnum/devnum may differ).
    previous: UsbPhone | None = None
    coldplug: bool = False  # reported from the start-up enumeration, not a hotplug
    # Same serial/ECID seen earlier in this run (re-plugged, moved, or back from a reset).
    replug: bool = False
    previous_slot: str | None = Field(default=None, pattern=SLOT_PATTERN)
    previous_port_path: str | None = Field(default=None, pattern=PORT_PATH_PATTERN)
    at: float = Field(default=0.0, description="bench seconds (Clock.monotonic) when settled")

    @property
    def slot(self) -> str:
        return self.phone.slot

    @property
    def port_path(self) -> str:
        return self.phone.port_path

    @property
    def serial(self) -> str | None:
        return self.phone.serial

    @property
    def kind(self) -> PhoneKind:
        return self.phone.kind

    @property
    def moved(self) -> bool:
        """The phone was last seen on a different port: check it is the phone you expect."""
        return self.previous_port_path is not None and self.previous_port_path != (
            self.phone.port_path
        )
