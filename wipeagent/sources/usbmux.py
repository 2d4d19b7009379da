"""iPhones announced by usbmuxd: Listen, then Attached / Detached as phones come and go.

The listen connection is read here rather than through pymobiledevice3's mux client,
because that client drops the attachment properties (LocationID, ConnectionType) and
reads packets of any announced length; here every packet is bounded and validated. The
Listen request itself is built with pymobiledevice3's framing helper.

An iPhone's slot is its USB port's, labelled by [usb.slots] like a USB Android phone's:
LocationID is `(bus << 16) | USB address` on Linux (usbmuxd src/usb.c, usb_get_location),
and the address changes at every re-plug and reboot, so the port is looked up in sysfs
(wipeagent.usb.ports); the same port gives the same slot, and the certificate names it.

When usbmuxd is not reachable the source says so once (a PhoneNotice with the command to
start it) and reconnects with back-off; when usbmuxd restarts, every phone it had
announced departs (its session pauses, resumable) and arrives again once re-announced.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import plistlib
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pymobiledevice3.usbmux import UsbmuxdMessageType, UsbmuxdVersion, build_usbmuxd_request

from wipeagent.clock import Clock
from wipeagent.config import AgentConfig
from wipeagent.errors import ConfigError, UsbmuxWireError
from wipeagent.platforms.ios.driver import IosDriver
from wipeagent.sources import PhoneArrival, PhoneDeparture, PhoneNotice, SourceEvent
from wipeagent.transports.ios import UDID_RE, USBMUXD_HINT, IosSettings, UsbmuxAddress
from wipeagent.usb.ports import SYSFS, port_of
from wipeagent.usb.slots import SlotMap

log = logging.getLogger(__name__)

HEADER = struct.Struct("<IIII")  # length (with header), version, message, tag
MAX_PACKET = 256 * 1024
SOURCE_SLOT = "usbmuxd"


@dataclass(frozen=True)
class Attachment:
    """One Attached message, validated."""

    device_id: int
    udid: str
    location: int | None
    connection_type: str


def slot_label(udid: str) -> str:
    """The slot of an iPhone whose USB port cannot be found (no sysfs entry for its
    LocationID): named after the phone, so at least a replug of the same phone keeps it."""
    return f"ios:{udid.replace('-', '')[-16:]}"


def parse_attached(message: dict[str, Any]) -> Attachment:
    """Validate an Attached message (UsbmuxWireError when a field is wrong)."""
    device_id = message.get("DeviceID")
    props = message.get("Properties")
    if isinstance(device_id, bool) or not isinstance(device_id, int) or not isinstance(
            props, dict):
        raise UsbmuxWireError("Attached without DeviceID / Properties")
    udid = props.get("SerialNumber")
    if isinstance(udid, str) and len(udid) == 24 and "-" not in udid:
        udid = f"{udid[:8]}-{udid[8:]}"  # usbmuxd may drop the dash of <ChipID>-<ECID>
    if not isinstance(udid, str) or not UDID_RE.fullmatch(udid):
        raise UsbmuxWireError(f"Attached with a bad SerialNumber {str(udid)[:64]!r}")
    location = props.get("LocationID")
    if isinstance(location, bool) or not isinstance(location, int) or not (
            0 <= location <= 0xFFFFFFFF):
        location = None
    kind = props.get("ConnectionType")
    return Attachment(device_id, udid, location, kind if isinstance(kind, str) else "USB")


async def read_packet(reader: asyncio.StreamReader, *, typed: bool = True
                      ) -> dict[str, Any]:
    """One PLIST packet from usbmuxd, bounded; UsbmuxWireError if malformed. `typed`:
    require a MessageType (every message but the ListDevices answer has one)."""
    try:
        header = await reader.readexactly(HEADER.size)
        length, version, message, _tag = HEADER.unpack(header)
        if not HEADER.size <= length <= MAX_PACKET:
            raise UsbmuxWireError(f"usbmuxd packet of {length} bytes")
        body = await reader.readexactly(length - HEADER.size)
    except asyncio.IncompleteReadError as exc:
        raise ConnectionError("usbmuxd closed the connection") from exc
    if version != UsbmuxdVersion.PLIST or message != UsbmuxdMessageType.PLIST:
        raise UsbmuxWireError(f"usbmuxd packet version {version} message {message}")
    try:
        value = plistlib.loads(body)
    except Exception as exc:  # plistlib raises several unrelated types on bad input
        raise UsbmuxWireError(f"usbmuxd sent a bad plist ({type(exc).__name__})") from exc
    if not isinstance(value, dict):
        raise UsbmuxWireError("usbmuxd message is not a dictionary")
    if typed and not isinstance(value.get("MessageType"), str):
        raise UsbmuxWireError("usbmuxd message without MessageType")
    return value


DriverMaker = Callable[[str], IosDriver]


class UsbmuxSource:
    """A DeviceSource of iPhones attached to usbmuxd (USB only; Wi-Fi pairs are ignored)."""

    name = "usbmux"

    def __init__(self, address: UsbmuxAddress, make_driver: DriverMaker, clock: Clock, *,
                 connect_timeout_s: float = 5.0, max_backoff_s: float = 30.0,
                 slots: SlotMap | None = None, sysfs: Path = SYSFS) -> None:
        self.address = address
        self.make_driver = make_driver
        self.clock = clock
        self.connect_timeout_s = connect_timeout_s
        self.max_backoff_s = max_backoff_s
        # An iPhone's slot is its USB port's, as for Android phones on USB ([usb.slots]):
        # LocationID is bus and address (new at every re-plug), sysfs gives the port.
        self.slots = slots or SlotMap()
        self.sysfs = sysfs
        self._slots: dict[int, str] = {}  # DeviceID -> slot, while attached

    def slot_for(self, att: Attachment) -> str:
        """The slot of an attached iPhone: its USB port's label (configured, or
        `usb-<port path>`), else `slot_label(udid)`. Found once per attachment."""
        slot = self._slots.get(att.device_id)
        if slot is None:
            port = None
            if att.location:
                port = port_of(att.location >> 16, att.location & 0xFFFF, serial=att.udid,
                               sysfs=self.sysfs)
            if port is None:
                log.info("[usbmuxd] no USB port found for %s (LocationID %s); slot named "
                         "after the phone", att.udid, att.location)
            slot = self.slots.label(port) if port is not None else slot_label(att.udid)
            self._slots[att.device_id] = slot
        return slot

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        a = self.address
        if a.host is not None and a.port is not None:
            opening = asyncio.open_connection(a.host, a.port)
        else:
            path = a.path or "/var/run/usbmuxd"
            opening = asyncio.open_unix_connection(path)
        return await self.clock.wait_for(opening, self.connect_timeout_s)

    async def _attached_now(self) -> set[str]:
        """UDIDs attached right now (ListDevices on its own connection). Phones that were
        already attached when the source (re)connected are announced as present at start,
        so a phone certified before an agent restart is not processed again unasked."""
        reader, writer = await self._open()
        try:
            request = plistlib.dumps({"MessageType": "ListDevices",
                                      "ClientVersionString": "wipeagent",
                                      "ProgName": "wipeagent", "kLibUSBMuxVersion": 3})
            writer.write(build_usbmuxd_request(UsbmuxdVersion.PLIST,
                                               UsbmuxdMessageType.PLIST, 1, request))
            await self.clock.wait_for(writer.drain(), self.connect_timeout_s)
            answer = await self.clock.wait_for(read_packet(reader, typed=False),
                                               self.connect_timeout_s)
        finally:
            writer.close()
        found: set[str] = set()
        devices = answer.get("DeviceList")
        for entry in devices if isinstance(devices, list) else []:
            if isinstance(entry, dict):
                try:
                    found.add(parse_attached({"MessageType": "Attached", **entry}).udid)
                except UsbmuxWireError:
                    continue
        return found

    async def _listen(self, writer: asyncio.StreamWriter, reader: asyncio.StreamReader) -> None:
        request = plistlib.dumps({"MessageType": "Listen", "ClientVersionString": "wipeagent",
                                  "ProgName": "wipeagent", "kLibUSBMuxVersion": 3})
        writer.write(build_usbmuxd_request(UsbmuxdVersion.PLIST, UsbmuxdMessageType.PLIST, 1,
                                           request))
        await self.clock.wait_for(writer.drain(), self.connect_timeout_s)
        answer = await self.clock.wait_for(read_packet(reader), self.connect_timeout_s)
        if answer.get("MessageType") != "Result" or answer.get("Number") != 0:
            raise UsbmuxWireError(f"usbmuxd refused Listen: {str(answer)[:100]}")

    def _arrival(self, att: Attachment) -> PhoneArrival:
        udid = att.udid
        return PhoneArrival(key=f"ios:{udid}", slot=self.slot_for(att),
                            make_driver=lambda: self.make_driver(udid),
                            description=f"iPhone {udid} ({att.connection_type})")

    async def events(self) -> AsyncIterator[SourceEvent]:
        """Arrivals / departures from usbmuxd; notices while it is unreachable."""
        backoff = 1.0
        warned = False
        while True:
            try:
                reader, writer = await self._open()
            except (OSError, TimeoutError) as exc:
                if not warned:
                    warned = True
                    yield PhoneNotice(SOURCE_SLOT,
                                      f"usbmuxd is not reachable at {self.address} "
                                      f"({type(exc).__name__}); iPhones cannot be seen",
                                      USBMUXD_HINT)
                await self.clock.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
                continue
            attached: dict[int, Attachment] = {}
            try:
                initial = await self._attached_now()
                await self._listen(writer, reader)
                if warned:
                    yield PhoneNotice(SOURCE_SLOT, f"usbmuxd reachable again at {self.address}")
                warned = False
                backoff = 1.0
                while True:
                    # A listen connection is idle until a phone comes or goes, for hours on
                    # a quiet bench: no timeout on this wait (cancellation ends it). Each
                    # packet once started is bounded in size.
                    message = await read_packet(reader)
                    kind = message["MessageType"]
                    if kind == "Attached":
                        try:
                            att = parse_attached(message)
                        except UsbmuxWireError as exc:
                            log.warning("[usbmuxd] ignoring a bad Attached message: %s", exc)
                            continue
                        if att.connection_type != "USB":
                            continue  # Wi-Fi: never erase a phone that is not on the bench
                        attached[att.device_id] = att
                        arrival = self._arrival(att)
                        if att.udid in initial:
                            initial.discard(att.udid)  # only its first Attached
                            arrival = dataclasses.replace(arrival, present_at_start=True)
                        yield arrival
                    elif kind == "Detached":
                        device_id = message.get("DeviceID")
                        if isinstance(device_id, bool) or not isinstance(device_id, int):
                            # It names no phone we know: no session can be ended for it
                            # (a phone really gone shows as gone to its own session).
                            log.warning("[usbmuxd] ignoring a Detached message whose "
                                        "DeviceID is not an integer: %.60r", device_id)
                            continue
                        gone = attached.pop(device_id, None)
                        if gone is not None:
                            yield PhoneDeparture(f"ios:{gone.udid}", self.slot_for(gone))
                            self._slots.pop(device_id, None)
            except (OSError, TimeoutError, UsbmuxWireError) as exc:
                log.warning("[usbmuxd] listen connection lost: %s", exc)
                for att in attached.values():
                    yield PhoneDeparture(f"ios:{att.udid}", self.slot_for(att))
                self._slots.clear()  # a restarted usbmuxd numbers its devices anew
                if not warned:
                    warned = True
                    yield PhoneNotice(SOURCE_SLOT, f"lost usbmuxd at {self.address}; "
                                      "reconnecting", USBMUXD_HINT)
                await self.clock.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await self.clock.wait_for(writer.wait_closed(), 2.0)


def ios_settings(config: AgentConfig) -> IosSettings:
    """IosSettings from the [ios] config section."""
    i = config.ios
    # Reaching lockdown (usbmuxd, QueryType, values, TLS) is bounded like one command.
    return IosSettings(connect_timeout_s=i.command_timeout_s, pair_timeout_s=i.pair_timeout_s,
                       command_timeout_s=i.command_timeout_s,
                       reboot_timeout_s=i.reboot_timeout_s)


def make_usbmux_source(config: AgentConfig, clock: Clock, state_dir: Path, *,
                       sysfs: Path = SYSFS) -> UsbmuxSource:
    """The usbmuxd source for an agent: pair records under `state_dir`/ios-pair-records,
    slots from [usb.slots] by USB port (`sysfs`: where to look ports up; simulators keep
    their own)."""
    try:
        address = UsbmuxAddress.parse(config.ios.usbmuxd)
    except ValueError as exc:
        raise ConfigError(f"ios.usbmuxd: {exc}") from exc
    settings = ios_settings(config)
    records = state_dir / "ios-pair-records"

    def make_driver(udid: str) -> IosDriver:
        return IosDriver(udid, address, records, clock, settings)

    return UsbmuxSource(address, make_driver, clock, slots=SlotMap(config.usb.slots),
                        sysfs=sysfs)
