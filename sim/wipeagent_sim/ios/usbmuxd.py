"""A fake usbmuxd that real clients (pymobiledevice3, libusbmuxd) accept unchanged.

It listens on TCP (``USBMUXD_SOCKET_ADDRESS=host:port``) and/or a unix socket
(``USBMUXD_SOCKET_ADDRESS=UNIX:/path`` for libusbmuxd, a bare path for pymobiledevice3) and
answers like libimobiledevice's usbmuxd (src/client.c):

- version 1 PLIST messages: ReadBUID, ListDevices, Listen (then Attached / Detached / Paired
  pushed as phones come and go), Connect (PortNumber in network byte order; Result 0, then
  the socket is a raw pipe to the phone's port), ReadPairRecord / SavePairRecord /
  DeletePairRecord (results are errno values: ENOENT for a missing record).
- version 0 binary messages: LISTEN (binary DEVICE_ADD / DEVICE_REMOVE records) and
  CONNECT; any other message type is answered BADCOMMAND, any other version BADVERSION.

A packet over 64 KiB (usbmuxd's buffer) or a body that is not a plist dictionary closes that
client's connection; nothing a client sends can stop the daemon.

One simulator extension: PLIST ``{"MessageType": "WipeagentSimControl", "Action": ...,
"UDID": ...}`` lets another process (``wipeagent sim ios trust UDID``) act as the person at
the bench (trust, deny, unlock, unplug, plug). Real usbmuxd answers BADCOMMAND to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import plistlib
import re
import shutil
import socket
import stat
import struct
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wipeagent.clock import Clock
from wipeagent_sim.ios.phone import SimIPhone
from wipeagent_sim.ios.wire import (
    MUX_BINARY_CONNECT,
    MUX_DEVICE_RECORD,
    MUX_MSG_CONNECT,
    MUX_MSG_DEVICE_ADD,
    MUX_MSG_DEVICE_REMOVE,
    MUX_MSG_LISTEN,
    MUX_MSG_PLIST,
    MUX_RESULT_BADCOMMAND,
    MUX_RESULT_BADDEV,
    MUX_RESULT_BADVERSION,
    MUX_RESULT_CONNREFUSED,
    MUX_RESULT_EINVAL,
    MUX_RESULT_ENOENT,
    MUX_RESULT_OK,
    MUX_VERSION_BINARY,
    MUX_VERSION_PLIST,
    WireError,
    build_mux_packet,
    build_mux_plist,
    build_mux_result,
    parse_plist_dict,
    read_mux_packet,
)

log = logging.getLogger(__name__)

CONTROL_MESSAGE = "WipeagentSimControl"
CONTROL_ACTIONS = frozenset({"trust", "deny", "unlock", "unplug", "plug"})
_RECORD_ID = re.compile(r"^[0-9A-Za-z-]{1,64}$")
_MAX_LISTENER_BACKLOG = 1 << 20
COMMAND_IDLE_TIMEOUT = 3600.0
"""Bench seconds a command connection may sit idle before usbmuxd drops it."""


SIM_BUS = 3
"""The USB bus the simulated iPhones sit on (ports 3-1.1 ... 3-1.7, 3-2.1 ...)."""
HUB_PORTS = 7
MAX_ADDRESS = 127  # a USB address is 7 bits; 0 is the default address, 1 the root hub


def default_port(index: int) -> str:
    """The port path of the `index`-th phone added without one: seven-port hubs on
    bus SIM_BUS."""
    return f"{SIM_BUS}-{1 + index // HUB_PORTS}.{1 + index % HUB_PORTS}"


def _bus_of(port: str) -> int:
    return int(port.split("-", 1)[0])


@dataclass
class _Attachment:
    device_id: int
    location: int
    port: str


class _Listener:
    def __init__(self, writer: asyncio.StreamWriter, version: int) -> None:
        self.writer = writer
        self.version = version

    def push(self, data: bytes) -> None:
        if self.writer.is_closing():
            return
        if self.writer.transport.get_write_buffer_size() > _MAX_LISTENER_BACKLOG:
            # A client that stops reading does not get to grow our memory without bound.
            self.writer.transport.abort()
            return
        self.writer.write(data)


def _remove_stale_socket(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)


class FakeUsbmuxd:
    """The usbmuxd daemon of a simulated bench. Add phones with `add_phone`."""

    def __init__(
        self, clock: Clock, *, buid: str | None = None, pair_record_dir: Path | None = None,
        sysfs_root: Path | None = None,
    ) -> None:
        self.clock = clock
        self.buid = buid or str(uuid.uuid4()).upper()
        self.pair_record_dir = pair_record_dir
        # With a directory: the kernel's view of the phones' USB devices, as sysfs shows it
        # (<root>/bus/usb/devices/<port>/{busnum,devnum,serial,idVendor,idProduct}), so an
        # agent can find the port behind a LocationID as it does on a real bench.
        self.sysfs_root = sysfs_root
        self.phones: dict[str, SimIPhone] = {}
        self.ports: dict[str, str] = {}  # UDID -> the USB port path it is plugged into
        self._attached: dict[str, _Attachment] = {}
        self._next_id = 1
        self._last_address: dict[int, int] = {}  # bus -> the address it gave out last
        self._records: dict[str, bytes] = {}
        self._listeners: set[_Listener] = set()
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._unix_paths: list[str] = []
        if pair_record_dir is not None:
            pair_record_dir.mkdir(parents=True, exist_ok=True)
            for path in pair_record_dir.glob("*.plist"):
                if _RECORD_ID.match(path.stem):
                    self._records[path.stem] = path.read_bytes()

    # --- servers ----------------------------------------------------------------------------

    async def start_tcp(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Listen on TCP; returns the bound (host, port)."""
        server = await asyncio.start_server(self._client, host, port)
        self._servers.append(server)
        bound = server.sockets[0].getsockname()
        return str(bound[0]), int(bound[1])

    async def start_unix(self, path: str) -> None:
        """Listen on a unix socket (replacing a stale socket file)."""
        _remove_stale_socket(path)
        server = await asyncio.start_unix_server(self._client, path)
        os.chmod(path, 0o666)  # noqa: S103 - usbmuxd's socket is world-connectable too
        self._servers.append(server)
        self._unix_paths.append(path)

    async def close(self) -> None:
        """Stop listening and drop every client."""
        for server in self._servers:
            server.close()
        for listener in list(self._listeners):
            listener.writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for server in self._servers:
            with contextlib.suppress(Exception):
                await self.clock.wait_for(server.wait_closed(), 5.0)
        for path in self._unix_paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        self._servers.clear()

    # --- devices ----------------------------------------------------------------------------

    def add_phone(self, phone: SimIPhone, port: str | None = None) -> None:
        """Put a phone on the bench, in USB port `port` (a kernel port path such as
        "3-1.2"; default: the next free one), Attached now if it is plugged in and on."""
        taken = set(self.ports.values())
        if port is None:
            port = next(p for p in map(default_port, range(len(taken) + 1)) if p not in taken)
        elif port in taken:
            raise ValueError(f"USB port {port} already has a phone")
        self.ports[phone.udid] = port
        self.phones[phone.udid] = phone
        phone.add_visibility_listener(self._visibility_changed)
        if phone.visible:
            self._attach(phone)

    def remove_phone(self, udid: str) -> None:
        """Take a phone off the bench entirely."""
        phone = self.phones.pop(udid, None)
        if phone is not None:
            phone.remove_visibility_listener(self._visibility_changed)
            self._detach(phone)
            self.ports.pop(udid, None)

    def device_id(self, udid: str) -> int | None:
        """The usbmuxd DeviceID of an attached phone (a new one on every attach)."""
        att = self._attached.get(udid)
        return att.device_id if att else None

    def location(self, udid: str) -> int | None:
        """The LocationID announced for an attached phone (None when not attached):
        (bus << 16) | USB address, new at every attach, like usbmuxd's."""
        att = self._attached.get(udid)
        return att.location if att else None

    def _visibility_changed(self, phone: SimIPhone, visible: bool) -> None:
        if visible:
            self._attach(phone)
        else:
            self._detach(phone)

    def _address(self, bus: int) -> int:
        """The next free USB address on `bus`, as the kernel hands them out (after the last
        one given, wrapping, skipping those in use): a re-plugged phone gets a new one."""
        used = {a.location & 0xFFFF for a in self._attached.values()
                if a.location >> 16 == bus}
        address = self._last_address.get(bus, 1)
        for _ in range(MAX_ADDRESS):
            address = address % MAX_ADDRESS + 1
            if address > 1 and address not in used:
                self._last_address[bus] = address
                return address
        raise RuntimeError(f"USB bus {bus} has no free address")

    def _attach(self, phone: SimIPhone) -> None:
        if phone.udid in self._attached:
            return
        port = self.ports[phone.udid]
        bus = _bus_of(port)
        # What usbmuxd reports on Linux: LocationID = (bus << 16) | USB address
        # (usbmuxd src/usb.c, usb_get_location), not the port.
        att = _Attachment(self._next_id, (bus << 16) | self._address(bus), port)
        self._next_id += 1
        self._attached[phone.udid] = att
        self._write_sysfs(phone, att)
        log.info("[usbmuxd] Attached %s as %d", phone.udid, att.device_id)
        for listener in list(self._listeners):
            listener.push(self._attached_packet(listener.version, phone, att))

    def _detach(self, phone: SimIPhone) -> None:
        att = self._attached.pop(phone.udid, None)
        if att is None:
            return
        self._remove_sysfs(att)
        log.info("[usbmuxd] Detached %s (%d)", phone.udid, att.device_id)
        for listener in list(self._listeners):
            if listener.version == MUX_VERSION_PLIST:
                data = build_mux_plist(0, {"MessageType": "Detached", "DeviceID": att.device_id})
            else:
                data = build_mux_packet(
                    MUX_VERSION_BINARY, MUX_MSG_DEVICE_REMOVE, 0, struct.pack("<I", att.device_id)
                )
            listener.push(data)

    def _sysfs_dir(self, port: str) -> Path | None:
        if self.sysfs_root is None:
            return None
        return self.sysfs_root / "bus" / "usb" / "devices" / port

    def _write_sysfs(self, phone: SimIPhone, att: _Attachment) -> None:
        folder = self._sysfs_dir(att.port)
        if folder is None:
            return
        folder.mkdir(parents=True, exist_ok=True)
        attributes = {
            "busnum": f"{att.location >> 16}",
            "devnum": f"{att.location & 0xFFFF}",
            "idVendor": "05ac",
            "idProduct": f"{phone.profile.identity.usb_product_id:04x}",
            # The USB serial: a 24-digit UDID without its dash (usbmuxd adds it back).
            "serial": phone.udid.replace("-", ""),
        }
        for name, value in attributes.items():
            (folder / name).write_text(value + "\n", encoding="ascii")

    def _remove_sysfs(self, att: _Attachment) -> None:
        folder = self._sysfs_dir(att.port)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    def port(self, udid: str) -> str | None:
        """The USB port path the phone is plugged into (None if not on the bench)."""
        return self.ports.get(udid)

    def _attached_plist(self, phone: SimIPhone, att: _Attachment) -> dict[str, Any]:
        return {
            "MessageType": "Attached",
            "DeviceID": att.device_id,
            "Properties": {
                "ConnectionSpeed": 480000000,
                "ConnectionType": "USB",
                "DeviceID": att.device_id,
                "LocationID": att.location,
                "ProductID": phone.profile.identity.usb_product_id,
                "SerialNumber": phone.udid,
                "USBSerialNumber": phone.udid.replace("-", ""),
            },
        }

    def _attached_packet(self, version: int, phone: SimIPhone, att: _Attachment) -> bytes:
        if version == MUX_VERSION_PLIST:
            return build_mux_plist(0, self._attached_plist(phone, att))
        record = MUX_DEVICE_RECORD.pack(
            att.device_id,
            phone.profile.identity.usb_product_id,
            phone.udid.encode()[:255],
            att.location,
        )
        return build_mux_packet(MUX_VERSION_BINARY, MUX_MSG_DEVICE_ADD, 0, record)

    def broadcast(self, message: dict[str, Any]) -> None:
        """Push one PLIST message to every Listen client as it is, whatever it says (tests
        of a host's defences against a misbehaving usbmuxd, e.g. a malformed Detached)."""
        for listener in list(self._listeners):
            if listener.version == MUX_VERSION_PLIST:
                listener.push(build_mux_plist(0, message))

    def _phone_by_device_id(self, device_id: int) -> SimIPhone | None:
        for udid, att in self._attached.items():
            if att.device_id == device_id:
                return self.phones.get(udid)
        return None

    # --- pair records (host side) -------------------------------------------------------------

    def pair_record(self, record_id: str) -> bytes | None:
        """A stored host pair record (plist bytes), as ReadPairRecord serves it."""
        return self._records.get(record_id)

    def _save_record(self, record_id: str, data: bytes) -> None:
        self._records[record_id] = data
        if self.pair_record_dir is not None:
            path = self.pair_record_dir / f"{record_id}.plist"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)

    def _delete_record(self, record_id: str) -> bool:
        found = self._records.pop(record_id, None) is not None
        if self.pair_record_dir is not None:
            with contextlib.suppress(FileNotFoundError):
                (self.pair_record_dir / f"{record_id}.plist").unlink()
        return found

    # --- clients ----------------------------------------------------------------------------

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve_client(reader, writer)
        except (WireError, TimeoutError) as e:
            log.info("[usbmuxd] dropping client: %s", e)
        except (ConnectionError, OSError):
            pass
        except Exception:
            # A simulator bug must not take the daemon down; this client alone is dropped.
            log.exception("[usbmuxd] client handler failed")
        finally:
            self._tasks.discard(task)
            writer.transport.abort()

    async def _send(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        await self.clock.wait_for(writer.drain(), 60.0)

    async def _serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            packet = await self.clock.wait_for(read_mux_packet(reader), COMMAND_IDLE_TIMEOUT)
            if packet is None:
                return
            if packet.version not in (MUX_VERSION_BINARY, MUX_VERSION_PLIST):
                await self._send(
                    writer, build_mux_result(MUX_VERSION_BINARY, packet.tag, MUX_RESULT_BADVERSION)
                )
                continue
            if packet.message == MUX_MSG_PLIST:
                request = parse_plist_dict(packet.body)
                kind = request.get("MessageType")
                if not isinstance(kind, str):
                    raise WireError("PLIST message without a MessageType string")
                done = await self._plist_command(kind, request, packet.tag, reader, writer)
            elif packet.message == MUX_MSG_LISTEN:
                await self._send(
                    writer, build_mux_result(packet.version, packet.tag, MUX_RESULT_OK)
                )
                await self._listen(reader, writer, packet.version)
                done = True
            elif packet.message == MUX_MSG_CONNECT:
                if len(packet.body) < MUX_BINARY_CONNECT.size:
                    raise WireError("binary CONNECT body too short")
                device_id, port_be, _ = MUX_BINARY_CONNECT.unpack_from(packet.body)
                done = await self._connect(
                    device_id=device_id,
                    port=socket.ntohs(port_be),
                    version=packet.version,
                    tag=packet.tag,
                    reader=reader,
                    writer=writer,
                )
            else:
                await self._send(
                    writer, build_mux_result(packet.version, packet.tag, MUX_RESULT_BADCOMMAND)
                )
                done = False
            if done:
                return

    async def _plist_command(
        self,
        kind: str,
        req: dict[str, Any],
        tag: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        """Answer one PLIST command; True when the connection changed role (listen/pipe)."""
        v = MUX_VERSION_PLIST
        if kind == "ReadBUID":
            await self._send(writer, build_mux_plist(tag, {"BUID": self.buid}))
        elif kind == "ListDevices":
            devices = [
                self._attached_plist(self.phones[udid], att)
                for udid, att in self._attached.items()
                if udid in self.phones
            ]
            await self._send(writer, build_mux_plist(tag, {"DeviceList": devices}))
        elif kind == "Listen":
            await self._send(writer, build_mux_result(v, tag, MUX_RESULT_OK))
            await self._listen(reader, writer, v)
            return True
        elif kind == "Connect":
            device_id = req.get("DeviceID")
            port_be = req.get("PortNumber")
            if not isinstance(device_id, int) or isinstance(device_id, bool):
                await self._send(writer, build_mux_result(v, tag, MUX_RESULT_BADDEV))
            elif not isinstance(port_be, int) or not 0 <= port_be <= 0xFFFF:
                await self._send(writer, build_mux_result(v, tag, MUX_RESULT_BADCOMMAND))
            else:
                return await self._connect(
                    device_id=device_id,
                    port=socket.ntohs(port_be),
                    version=v,
                    tag=tag,
                    reader=reader,
                    writer=writer,
                )
        elif kind == "ReadPairRecord":
            record_id = req.get("PairRecordID")
            if not isinstance(record_id, str):
                await self._send(writer, build_mux_result(v, tag, MUX_RESULT_EINVAL))
            elif (data := self._records.get(record_id)) is None:
                await self._send(writer, build_mux_result(v, tag, MUX_RESULT_ENOENT))
            else:
                await self._send(writer, build_mux_plist(tag, {"PairRecordData": data}))
        elif kind == "SavePairRecord":
            await self._send(writer, build_mux_result(v, tag, self._save_pair_record(req)))
        elif kind == "DeletePairRecord":
            record_id = req.get("PairRecordID")
            if not isinstance(record_id, str) or not _RECORD_ID.match(record_id):
                result = MUX_RESULT_EINVAL
            else:
                result = MUX_RESULT_OK if self._delete_record(record_id) else MUX_RESULT_ENOENT
            await self._send(writer, build_mux_result(v, tag, result))
        elif kind == CONTROL_MESSAGE:
            await self._send(writer, build_mux_result(v, tag, self._control(req)))
        else:
            await self._send(writer, build_mux_result(v, tag, MUX_RESULT_BADCOMMAND))
        return False

    def _save_pair_record(self, req: dict[str, Any]) -> int:
        record_id = req.get("PairRecordID")
        data = req.get("PairRecordData")
        if not isinstance(record_id, str) or not _RECORD_ID.match(record_id):
            return MUX_RESULT_EINVAL
        if not isinstance(data, bytes):
            return MUX_RESULT_EINVAL
        try:
            parse_plist_dict(data)
        except WireError:
            return MUX_RESULT_EINVAL
        self._save_record(record_id, data)
        device_id = req.get("DeviceID")
        if isinstance(device_id, int) and self._phone_by_device_id(device_id) is not None:
            for listener in list(self._listeners):
                if listener.version == MUX_VERSION_PLIST:
                    listener.push(
                        build_mux_plist(0, {"MessageType": "Paired", "DeviceID": device_id})
                    )
        return MUX_RESULT_OK

    def _control(self, req: dict[str, Any]) -> int:
        action = req.get("Action")
        udid = req.get("UDID")
        if action not in CONTROL_ACTIONS or not isinstance(udid, str):
            return MUX_RESULT_BADCOMMAND
        phone = self.phones.get(udid)
        if phone is None:
            return MUX_RESULT_BADDEV
        if action == "trust":
            phone.trust()
        elif action == "deny":
            phone.deny()
        elif action == "unlock":
            phone.unlock()
        elif action == "unplug":
            phone.unplug()
        elif action == "plug":
            phone.plug()
        return MUX_RESULT_OK

    async def _listen(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, version: int
    ) -> None:
        listener = _Listener(writer, version)
        for udid, att in list(self._attached.items()):
            phone = self.phones.get(udid)
            if phone is not None:
                listener.push(self._attached_packet(version, phone, att))
        self._listeners.add(listener)
        try:
            # A listening client only receives; anything it sends is ignored, EOF ends it.
            while await reader.read(4096):
                pass
        finally:
            self._listeners.discard(listener)

    async def _connect(
        self,
        *,
        device_id: int,
        port: int,
        version: int,
        tag: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        phone = self._phone_by_device_id(device_id)
        if phone is None:
            await self._send(writer, build_mux_result(version, tag, MUX_RESULT_BADDEV))
            return False
        handler = phone.accept(port)
        if handler is None:
            await self._send(writer, build_mux_result(version, tag, MUX_RESULT_CONNREFUSED))
            return False
        await self._send(writer, build_mux_result(version, tag, MUX_RESULT_OK))
        await handler(reader, writer)
        return True


async def send_control(address: str, action: str, udid: str, *, clock: Clock | None = None) -> None:
    """Ask a running simulator (at a USBMUXD_SOCKET_ADDRESS-style address) to act.

    `action` is one of trust, deny, unlock, unplug, plug. Raises LookupError for an
    unknown UDID, ValueError for a refused action, TimeoutError after 10 bench seconds.
    """
    clk = clock or Clock()
    if address.startswith("UNIX:"):
        address = address[len("UNIX:") :]
    if ":" in address:
        host, _, port = address.rpartition(":")
        reader, writer = await clk.wait_for(asyncio.open_connection(host, int(port)), 10.0)
    else:
        reader, writer = await clk.wait_for(asyncio.open_unix_connection(address), 10.0)
    try:
        writer.write(
            build_mux_plist(1, {"MessageType": CONTROL_MESSAGE, "Action": action, "UDID": udid})
        )
        await clk.wait_for(writer.drain(), 10.0)
        packet = await clk.wait_for(read_mux_packet(reader), 10.0)
        if packet is None:
            raise ConnectionError("simulator closed the connection")
        reply = plistlib.loads(packet.body)
        number = reply.get("Number") if isinstance(reply, dict) else None
        if number == MUX_RESULT_BADDEV:
            raise LookupError(f"no simulated iPhone {udid}")
        if number != MUX_RESULT_OK:
            raise ValueError(f"simulator refused {action!r}: result {number}")
    finally:
        writer.close()
