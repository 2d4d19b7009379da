"""ADB transport on adb-shell's async API: host key, connect + auth, shell (v2), push/pull.

What this module adds to adb-shell, and why:

- A guarded TCP transport (`_GuardedTcpTransport`) that checks every packet header the
  phone sends *before* adb-shell reads the payload: magic, known command, payload no
  larger than the negotiated maximum. adb-shell itself checks none of these and would
  read a 4 GiB "payload" into memory. It also captures the phone's CNXN banner (adb-shell
  discards it), which tells us whether the phone speaks shell protocol v2.
- Shell protocol v2 (`shell,v2,raw:`), which adb-shell lacks: separate stdout/stderr and
  the exit code, decoded here with a bounded parser (`ShellV2Decoder`).
- A USB transport (`_GuardedUsbTransport`, `AdbUsbEndpoint`): adb-shell's blocking libusb1
  UsbTransport run in a bounded thread pool, the phone found by serial at each connect,
  the same header guard, and a clear UsbInterfaceBusy when an `adb` server holds the
  interface (only one process can claim it).
- Every wait in bench seconds through the Clock, and every adb-shell/socket exception
  mapped onto `wipeagent.errors` (DeviceGone, NotAuthorised, DeviceTimeout, ProtocolError).

After a timeout or a protocol error in the middle of a stream, the connection's state is
unknown, so it is closed: the caller reconnects rather than reading a stale stream.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import os
import re
import shutil
import socket
import stat
import struct
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pyudev
import usb1
from adb_shell import constants as adb_constants
from adb_shell import exceptions as adb_exc
from adb_shell.adb_device_async import AdbDeviceAsync
from adb_shell.adb_message import AdbMessage
from adb_shell.auth.keygen import keygen, write_public_keyfile
from adb_shell.auth.sign_cryptography import CryptographySigner
from adb_shell.transport.base_transport_async import BaseTransportAsync
from adb_shell.transport.tcp_transport_async import TcpTransportAsync
from cryptography.hazmat.primitives import serialization

from wipeagent import attention
from wipeagent.clock import Clock
from wipeagent.errors import (
    ConfigError,
    DeviceError,
    DeviceGone,
    DeviceTimeout,
    NotAuthorised,
    ProtocolError,
    UsbInterfaceBusy,
    WipeAgentError,
)
from wipeagent.keyfile import read_private_key

if TYPE_CHECKING:
    # Imported lazily at run time: importing it opens a process-wide libusb context.
    from adb_shell.transport.usb_transport import UsbTransport

log = logging.getLogger(__name__)
_T = TypeVar("_T")

# What we advertise in our CNXN (adb-shell sends MAX_ADB_DATA): the phone must not send
# a larger payload than this, nor larger than what it advertised itself.
HOST_MAX_PAYLOAD = adb_constants.MAX_ADB_DATA
# Before the phone's CNXN only AUTH tokens (20 bytes) and the CNXN banner arrive; adbd's
# pre-negotiation limit is 4096 (MAX_PAYLOAD_V1). Allow some slack, but not megabytes.
PRE_CNXN_MAX_PAYLOAD = 64 * 1024
MAX_BANNER_BYTES = 4096
CLOSE_TIMEOUT_S = 5.0  # bench seconds to close a socket before giving up on it

_HEADER = struct.Struct("<6I")
_KNOWN_COMMANDS = frozenset(
    struct.unpack("<I", name)[0]
    for name in (b"SYNC", b"CNXN", b"AUTH", b"OPEN", b"OKAY", b"CLSE", b"WRTE", b"STLS")
)
_CNXN = struct.unpack("<I", b"CNXN")[0]

NOT_AUTHORISED_HINT = "unlock the phone and tap Allow USB debugging (tick Always allow)"


# --------------------------------------------------------------------------------------
# Endpoint and host key
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AdbEndpoint:
    """Where a phone's adbd listens on TCP (USB phones: AdbUsbEndpoint)."""

    host: str
    port: int = 5555

    def __post_init__(self) -> None:
        if not self.host or any(c.isspace() for c in self.host):
            raise ConfigError(f"invalid ADB host {self.host!r}", hint="use host:port")
        if not 0 < self.port < 65536:
            raise ConfigError(f"invalid ADB port {self.port}", hint="use a port 1-65535")

    @classmethod
    def parse(cls, text: str) -> AdbEndpoint:
        """Parse "host:port" (or "[v6addr]:port", or a bare host meaning port 5555)."""
        text = text.strip()
        host, port_text = text, "5555"
        if text.startswith("["):
            end = text.find("]")
            if end < 0:
                raise ConfigError(f"invalid ADB endpoint {text!r}", hint="use [addr]:port")
            host, rest = text[1:end], text[end + 1 :]
            if rest:
                if not rest.startswith(":"):
                    raise ConfigError(f"invalid ADB endpoint {text!r}", hint="use [addr]:port")
                port_text = rest[1:]
        elif text.count(":") == 1:
            host, port_text = text.split(":")
        if not port_text.isdigit():
            raise ConfigError(f"invalid ADB port in {text!r}", hint="use host:port")
        return cls(host, int(port_text))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


_USB_SERIAL_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")  # as wipeagent.usb.model


@dataclass(frozen=True)
class AdbUsbEndpoint:
    """A phone on USB, named by its USB serial (what `adb devices` shows).

    The phone is looked up by serial at every connect, not by bus/device number: a phone
    that resets or re-enumerates (new device number, maybe another port) is found again,
    and a different phone that took its old device number is never talked to.
    """

    serial: str

    def __post_init__(self) -> None:
        if not _USB_SERIAL_RE.match(self.serial):
            raise ConfigError(f"invalid USB serial {self.serial[:80]!r}",
                              hint="1-64 letters, digits, . _ : -")

    def __str__(self) -> str:
        return f"usb:{self.serial}"


AnyAdbEndpoint = AdbEndpoint | AdbUsbEndpoint
"""Where connect_adb finds a phone: TCP (host:port) or USB (serial)."""


class _HostKeySigner(CryptographySigner):  # type: ignore[misc]
    """adb-shell's signer, from key bytes already read and checked (its own constructor
    would open the file again by name)."""

    def __init__(self, private_pem: bytes, public_key: bytes) -> None:
        self.public_key = public_key
        self.rsa_key = serialization.load_pem_private_key(private_pem, None)


class AdbHostKey:
    """The bench's ADB RSA key pair (adb-shell's keygen format, as ~/.android/adbkey).

    The phone remembers the public key when the person taps "Always allow"; keeping one
    key per bench means a phone is asked only once. The private key file must be 0600
    and owned by us: a readable key would let anyone impersonate the bench to every phone
    that trusts it.
    """

    def __init__(self, path: Path, signer: CryptographySigner) -> None:
        self.path = path
        self.signer = signer

    @property
    def public_key(self) -> bytes:
        """The Android-format public key (base64 + " user@host"), as phones store it."""
        key = self.signer.GetPublicKey()
        return bytes(key) if not isinstance(key, str) else key.encode()

    @classmethod
    def load_or_create(cls, path: Path | str) -> AdbHostKey:
        """Load the key at `path` (public half at `path`.pub), creating it once if absent."""
        path = Path(path)
        pub = Path(f"{path}.pub")
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.is_symlink() and not path.exists():
            cls._create(path, pub)
        # The key-file checks of every key (wipeagent.keyfile), on the bytes then used.
        private = read_private_key(path, "ADB host key")
        try:
            if not pub.exists():
                write_public_keyfile(str(path), str(pub))
            signer = _HostKeySigner(private, pub.read_bytes())
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"ADB host key {path} is not a PEM RSA key: {exc}",
                hint=f"move {path} away; a new key is created at the next start",
            ) from exc
        return cls(path, signer)

    @staticmethod
    def _create(path: Path, pub: Path) -> None:
        # keygen writes with the process umask; generate inside a private (0700) temp dir,
        # tighten the mode, then rename into place so the key is never readable by others.
        tmp = Path(tempfile.mkdtemp(prefix=".adbkey-", dir=path.parent))
        try:
            key = tmp / "adbkey"
            keygen(str(key))
            key.chmod(0o600)
            Path(f"{key}.pub").chmod(0o644)
            os.replace(f"{key}.pub", pub)
            os.replace(key, path)  # last: a present private key implies a public one
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------
# Shell output and the shell protocol v2 decoder
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShellOutput:
    """What one shell command produced. `exit_code` is None over shell protocol v1."""

    stdout: bytes
    stderr: bytes
    exit_code: int | None


class ShellV2Decoder:
    """Incremental, bounded parser of shell protocol v2 (AOSP adb/shell_protocol.h).

    Each packet: id (u8), length (u32 LE), data. Ids: 0 stdin, 1 stdout, 2 stderr,
    3 exit (1 byte), 4 close-stdin, 5 window-size. Raises ProtocolError on an unknown id,
    a bad exit packet, data after the exit packet, or more than `max_output_bytes` of
    stdout + stderr together.
    """

    STDOUT, STDERR, EXIT = 1, 2, 3

    def __init__(self, max_output_bytes: int) -> None:
        self.max_output_bytes = max_output_bytes
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.exit_code: int | None = None
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        """Consume bytes from the stream."""
        self._buf += data
        while len(self._buf) >= 5:
            if self.exit_code is not None:
                raise ProtocolError("shell v2: data after the exit packet")
            ident = self._buf[0]
            (length,) = struct.unpack_from("<I", self._buf, 1)
            if ident in (self.STDOUT, self.STDERR):
                if len(self.stdout) + len(self.stderr) + length > self.max_output_bytes:
                    raise ProtocolError(
                        f"shell output exceeds {self.max_output_bytes} bytes; stream aborted"
                    )
            elif ident == self.EXIT:
                if length != 1:
                    raise ProtocolError(f"shell v2: exit packet of {length} bytes")
            else:
                raise ProtocolError(f"shell v2: unexpected packet id {ident}")
            if len(self._buf) < 5 + length:
                return
            payload = bytes(self._buf[5 : 5 + length])
            del self._buf[: 5 + length]
            if ident == self.STDOUT:
                self.stdout += payload
            elif ident == self.STDERR:
                self.stderr += payload
            else:
                self.exit_code = payload[0]
        if self.exit_code is not None and self._buf:
            raise ProtocolError("shell v2: data after the exit packet")

    def finish(self) -> ShellOutput:
        """The result, once the stream closed; ProtocolError if it ended mid-packet or
        without an exit status."""
        if self._buf:
            raise ProtocolError("shell v2: stream ended inside a packet")
        if self.exit_code is None:
            raise ProtocolError("shell v2: stream ended without an exit status")
        return ShellOutput(bytes(self.stdout), bytes(self.stderr), self.exit_code)


# --------------------------------------------------------------------------------------
# The guarded transport
# --------------------------------------------------------------------------------------


class _PacketGuard:
    """Follows the phone's ADB packet stream as adb-shell reads it, checking each header.

    adb-shell reads a packet as header (24 bytes) then payload, through `bulk_read`
    only, in order; so the concatenation of what bulk_read returns is exactly the
    phone's packet stream, and a transport can follow its framing here (TCP and USB).
    """

    banner: bytes | None
    max_payload: int

    def _reset(self) -> None:
        self._header = bytearray()
        self._payload_left = 0
        self._capturing = False
        self.banner = None
        self._banner_buf = bytearray()
        self.max_payload = PRE_CNXN_MAX_PAYLOAD

    def _inspect(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._payload_left:
                take = min(self._payload_left, len(view))
                if self._capturing:
                    self._banner_buf += view[:take]
                self._payload_left -= take
                view = view[take:]
                if self._capturing and not self._payload_left:
                    self.banner = bytes(self._banner_buf)
                    self._capturing = False
                continue
            take = min(24 - len(self._header), len(view))
            self._header += view[:take]
            view = view[take:]
            if len(self._header) == 24:
                self._check_header(bytes(self._header))
                self._header.clear()

    def _check_header(self, header: bytes) -> None:
        cmd, arg0, arg1, length, _crc, magic = _HEADER.unpack(header)
        if magic != cmd ^ 0xFFFFFFFF:
            raise ProtocolError(f"malformed ADB packet: magic {magic:#x} for command {cmd:#x}")
        if cmd not in _KNOWN_COMMANDS:
            raise ProtocolError(f"malformed ADB packet: unknown command {cmd:#x}")
        if length > self.max_payload:
            raise ProtocolError(
                f"ADB packet payload of {length} bytes exceeds the negotiated {self.max_payload}"
            )
        if cmd == _CNXN:
            if length > MAX_BANNER_BYTES:
                raise ProtocolError(f"ADB CNXN banner of {length} bytes is too long")
            if arg1 < 256:
                raise ProtocolError(f"ADB CNXN with an implausible maxdata {arg1}")
            self.max_payload = min(HOST_MAX_PAYLOAD, arg1)
            self._banner_buf = bytearray()
            self._capturing = length > 0
            if not length:
                self.banner = b""
        self._payload_left = length
        del arg0


class _GuardedTcpTransport(_PacketGuard, TcpTransportAsync):  # type: ignore[misc]
    """adb-shell's TCP transport, watching the byte stream it hands to adb-shell."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        self._reset()
        self._held: bytes | None = None

    async def connect(self, transport_timeout_s: float | None) -> None:
        self._reset()
        self._held = None
        await super().connect(transport_timeout_s)

    async def bulk_read(self, numbytes: int, transport_timeout_s: float | None) -> bytes:
        if self._reader is None:
            raise DeviceGone("the ADB connection is closed")
        data: bytes = await super().bulk_read(numbytes, transport_timeout_s)
        if numbytes > 0 and not data:
            # EOF. adb-shell would spin on empty reads until its read timeout.
            raise DeviceGone("the phone closed the ADB connection")
        self._inspect(data)
        return data

    async def bulk_write(self, data: bytes, transport_timeout_s: float | None) -> int:
        """adb-shell writes a packet as two calls, header then payload: a header that
        announces a payload is held and sent with it, one system call instead of two
        (most of what the agent sends is OPEN and WRTE packets with a payload)."""
        if self._writer is None:  # adb-shell would fail with an AttributeError
            raise DeviceGone("the ADB connection is closed")
        if self._held is None and len(data) == _HEADER.size:
            if _HEADER.unpack(data)[3]:  # data_length: its payload is the next call
                self._held = bytes(data)
                return len(data)
        elif self._held is not None:
            header, self._held = self._held, None
            sent: int = await super().bulk_write(header + bytes(data), transport_timeout_s)
            return sent - len(header)
        sent = await super().bulk_write(data, transport_timeout_s)
        return sent


ADB_SERVER_HINT = (
    "stop the adb server: adb kill-server (and keep Android Studio / scrcpy closed); "
    "then unplug and plug the phone in again"
)
USB_ACCESS_HINT = (
    "install the udev rules (scripts/install-udev-rules) and add the agent's user to the "
    "wipeagent group; then unplug and plug the phone in again"
)
# A blocking libusb call holds a thread for at most this long (real seconds); a longer
# wait is a loop of such slices, so a small pool serves a full bench and a cancelled
# wait frees its thread quickly.
USB_IO_SLICE_S = 0.25
USB_IO_THREADS = 32
_ADB_TRIPLE = (0xFF, 0x42, 0x01)

_usb_pool: ThreadPoolExecutor | None = None


def _usb_executor() -> ThreadPoolExecutor:
    """The bounded pool every blocking libusb call runs in (created on first use)."""
    global _usb_pool  # noqa: PLW0603 - one pool per process, created lazily
    if _usb_pool is None:
        _usb_pool = ThreadPoolExecutor(max_workers=USB_IO_THREADS, thread_name_prefix="adb-usb")
    return _usb_pool


async def _blocking(func: Callable[[], _T]) -> _T:
    return await asyncio.get_running_loop().run_in_executor(_usb_executor(), func)


@dataclass(frozen=True)
class _UsbLocation:
    busnum: int
    devnum: int
    port_path: str
    devnode: str


def locate_usb_serial(serial: str, context: pyudev.Context | None = None) -> _UsbLocation:
    """Where the USB device with this serial is now, from sysfs (readable by anyone).

    DeviceGone when no device has the serial; UsbInterfaceBusy's sibling DeviceError when
    two have it: the agent must never guess which phone it is talking to.
    """
    ctx = context or pyudev.Context()
    found: list[_UsbLocation] = []
    for dev in ctx.list_devices(subsystem="usb", DEVTYPE="usb_device"):
        try:
            if dev.attributes.get("serial") != serial.encode():
                continue
            bus = int(dev.attributes.asstring("busnum"))
            num = int(dev.attributes.asstring("devnum"))
        except (KeyError, ValueError, OSError, UnicodeError):
            continue  # half-removed, or not a device with numbers
        found.append(_UsbLocation(bus, num, str(dev.sys_name), f"/dev/bus/usb/{bus:03d}/{num:03d}"))
        if len(found) > 1:
            raise DeviceError(
                f"two USB devices have the serial {serial}",
                hint="the phones cannot be told apart: process them one at a time",
            )
    if not found:
        raise DeviceGone(f"no phone with serial {serial} on USB")
    return found[0]


def _usb_error_to_device_error(exc: BaseException, what: str, devnode: str) -> WipeAgentError:
    """Claim/open failures as errors a technician can act on."""
    err = getattr(exc, "usb_error", None) or exc  # adb-shell wraps the usb1 error
    if isinstance(err, usb1.USBErrorBusy):
        return UsbInterfaceBusy(
            f"{what}: another program holds the phone's ADB interface ({devnode}); "
            "usually a running adb server", hint=ADB_SERVER_HINT)
    if isinstance(err, usb1.USBErrorAccess):
        return DeviceError(f"{what}: no permission to open {devnode}", hint=USB_ACCESS_HINT)
    if isinstance(err, usb1.USBErrorNoDevice | usb1.USBErrorNotFound | usb1.USBErrorIO):
        return DeviceGone(f"{what}: the phone left USB ({type(err).__name__})")
    if isinstance(err, usb1.USBErrorTimeout):
        return DeviceTimeout(f"{what}: the phone did not answer on USB in time")
    if isinstance(err, usb1.USBErrorOverflow | usb1.USBErrorPipe):
        return ProtocolError(
            f"{what}: the phone sent more than was asked for ({type(err).__name__})")
    return _map_exception(exc, what)


class _GuardedUsbTransport(_PacketGuard, BaseTransportAsync):  # type: ignore[misc]
    """adb-shell's (blocking, libusb1) UsbTransport behind the async transport interface.

    adb-shell 0.4 has no async USB transport, so each blocking call runs in a bounded
    thread pool, in slices of USB_IO_SLICE_S. The phone is found by serial at connect;
    the packet guard checks every header as on TCP.
    """

    def __init__(self, endpoint: AdbUsbEndpoint) -> None:
        self.endpoint = endpoint
        self._usb: UsbTransport | None = None
        self._context: usb1.USBContext | None = None
        self.devnode = ""
        # Held by the pool thread during every libusb call on this device: closing the
        # handle waits for an in-flight slice (<= USB_IO_SLICE_S) instead of racing it.
        self._io_lock = threading.Lock()
        self._reset()

    async def connect(self, transport_timeout_s: float | None) -> None:
        await self.close()
        self._reset()
        where = locate_usb_serial(self.endpoint.serial)
        self.devnode = where.devnode
        timeout_s = transport_timeout_s or 10.0
        self._usb, self._context = await _blocking(lambda: self._open(where, timeout_s))

    def _open(self, where: _UsbLocation, timeout_s: float
              ) -> tuple[UsbTransport, usb1.USBContext]:
        # A context of our own for this connection: adb-shell's class-wide one keeps a
        # device list for the life of the process, and closing ours frees everything.
        from adb_shell.transport.usb_transport import UsbTransport

        what = f"ADB connect {self.endpoint}"
        context = usb1.USBContext()
        try:
            context.open()
            for device in context.getDeviceIterator(skip_on_error=True):
                if (device.getBusNumber(), device.getDeviceAddress()) != (
                        where.busnum, where.devnum):
                    continue
                setting = next((s for s in device.iterSettings() if (
                    s.getClass(), s.getSubClass(), s.getProtocol()) == _ADB_TRIPLE), None)
                if setting is None:
                    raise DeviceGone(f"{what}: the phone has no ADB interface now",
                                     hint="turn USB debugging on")
                directions = {e.getAddress() & usb1.ENDPOINT_DIR_MASK
                              for e in setting.iterEndpoints()}
                if directions != {usb1.ENDPOINT_IN, usb1.ENDPOINT_OUT}:
                    # adb-shell would fail an assert; say what is wrong with the phone.
                    raise ProtocolError(f"{what}: the phone's ADB interface lacks its bulk "
                                        "IN / OUT endpoints")
                transport = UsbTransport(device, setting, usb_info=str(self.endpoint),
                                         default_transport_timeout_s=timeout_s)
                try:
                    transport.connect(timeout_s)
                    # Same device number, but is it still the same phone? Re-read the
                    # serial through the open device before a byte of ADB is sent.
                    actual = transport.serial_number
                except Exception as exc:
                    transport.close()
                    raise _usb_error_to_device_error(exc, what, where.devnode) from exc
                if actual != self.endpoint.serial:
                    transport.close()
                    raise DeviceGone(f"{what}: a different device now has {where.devnode}")
                return transport, context
            raise DeviceGone(f"{what}: the phone left USB while connecting")
        except BaseException:
            context.close()
            raise

    async def close(self) -> None:
        usb, context = self._usb, self._context
        self._usb = self._context = None
        if usb is None or context is None:
            return

        def release() -> None:
            with self._io_lock:
                try:
                    usb.close()
                finally:
                    context.close()

        await _blocking(release)

    def _deadline(self, transport_timeout_s: float | None) -> float:
        return time.monotonic() + (transport_timeout_s or 10.0)

    async def bulk_read(self, numbytes: int, transport_timeout_s: float | None) -> bytes:
        deadline = self._deadline(transport_timeout_s)
        while True:
            usb = self._usb
            if usb is None:
                raise DeviceGone("the ADB connection is closed")
            slice_s = max(0.001, min(USB_IO_SLICE_S, deadline - time.monotonic()))
            data = await _blocking(functools.partial(self._read_slice, usb, numbytes, slice_s))
            if data:
                self._inspect(data)
                return data
            if time.monotonic() >= deadline:
                raise DeviceTimeout(f"{self.endpoint}: the phone sent nothing in time")

    def _read_slice(self, usb: UsbTransport, numbytes: int, slice_s: float) -> bytes:
        try:
            with self._io_lock:
                if self._usb is None or usb is not self._usb:
                    raise DeviceGone("the ADB connection is closed")
                return bytes(usb.bulk_read(numbytes, slice_s))
        except adb_exc.UsbReadFailedError as exc:
            if isinstance(exc.usb_error, usb1.USBErrorTimeout):
                # Whatever arrived before the slice ended is part of the stream.
                return bytes(getattr(exc.usb_error, "received", b""))
            raise _usb_error_to_device_error(exc, "ADB read", "") from exc

    async def bulk_write(self, data: bytes, transport_timeout_s: float | None) -> int:
        deadline = self._deadline(transport_timeout_s)
        sent = 0
        while sent < len(data):
            usb = self._usb
            if usb is None:
                raise DeviceGone("the ADB connection is closed")
            slice_s = max(0.001, min(USB_IO_SLICE_S, deadline - time.monotonic()))
            chunk = bytes(data[sent:])
            sent += await _blocking(functools.partial(self._write_slice, usb, chunk, slice_s))
            if sent < len(data) and time.monotonic() >= deadline:
                raise DeviceTimeout(f"{self.endpoint}: the phone did not take data in time")
        return sent

    def _write_slice(self, usb: UsbTransport, chunk: bytes, slice_s: float) -> int:
        try:
            with self._io_lock:
                if self._usb is None or usb is not self._usb:
                    raise DeviceGone("the ADB connection is closed")
                return int(usb.bulk_write(chunk, slice_s))
        except adb_exc.UsbWriteFailedError as exc:
            if isinstance(exc.usb_error, usb1.USBErrorTimeout):
                return int(getattr(exc.usb_error, "transferred", 0))
            raise _usb_error_to_device_error(exc, "ADB write", "") from exc


class _BoundedBytesIO(BytesIO):
    """A pull target that refuses to grow past `limit` bytes."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def write(self, data: Any) -> int:
        if self.tell() + len(data) > self.limit:
            raise ProtocolError(f"pulled file exceeds {self.limit} bytes")
        return super().write(data)


# --------------------------------------------------------------------------------------
# Error mapping
# --------------------------------------------------------------------------------------

_PROTOCOL_EXC: tuple[type[BaseException], ...] = (
    adb_exc.InvalidChecksumError,
    adb_exc.InvalidCommandError,
    adb_exc.InvalidResponseError,
    struct.error,
    UnicodeDecodeError,
    KeyError,  # adb-shell's FILESYNC_WIRE_TO_ID lookup of an unknown sync id
)
_TIMEOUT_EXC: tuple[type[BaseException], ...] = (
    TimeoutError,
    adb_exc.TcpTimeoutException,
    adb_exc.AdbTimeoutError,
)
_GONE_EXC: tuple[type[BaseException], ...] = (
    ConnectionError,
    OSError,
    EOFError,
    asyncio.IncompleteReadError,
    adb_exc.AdbConnectionError,
)


def _map_exception(exc: BaseException, what: str) -> WipeAgentError:
    """The wipeagent error for an exception raised by adb-shell or the socket."""
    if isinstance(exc, WipeAgentError):
        return exc
    if isinstance(exc, _TIMEOUT_EXC):
        return DeviceTimeout(f"{what}: the phone did not answer in time")
    if isinstance(exc, adb_exc.DeviceAuthError):
        return NotAuthorised(f"{what}: the phone has not authorised this bench")
    if isinstance(exc, _PROTOCOL_EXC):
        return ProtocolError(f"{what}: invalid data from the phone ({type(exc).__name__})")
    if isinstance(exc, ValueError) and "unpack" in str(exc).lower():
        return ProtocolError(f"{what}: malformed ADB packet")
    if isinstance(exc, _GONE_EXC):
        return DeviceGone(f"{what}: connection lost ({type(exc).__name__})")
    if isinstance(exc, adb_exc.AdbCommandFailureException | adb_exc.PushFailedError):
        return DeviceError(f"{what}: the phone refused: {str(exc)[:200]!r}")
    return DeviceError(f"{what}: unexpected ADB failure ({type(exc).__name__})")


# --------------------------------------------------------------------------------------
# Connection
# --------------------------------------------------------------------------------------


class AdbConnection:
    """One authorised ADB session with one phone. Not shared between phones.

    Commands on one connection run one at a time (a lock): the agent never needs
    parallel streams to one phone, and a failure then leaves no other stream dangling.
    """

    def __init__(
        self,
        endpoint: AnyAdbEndpoint,
        device: AdbDeviceAsync,
        transport: _PacketGuard,
        clock: Clock,
        banner: bytes,
    ) -> None:
        self.endpoint = endpoint
        self._device = device
        self._transport = transport
        self._clock = clock
        self.banner = banner
        self._lock = asyncio.Lock()
        self._closed = False
        self.features = parse_banner_features(banner)
        # Bench time the last operation on this connection succeeded: a connection that
        # just carried a command needs no presence check (AndroidDriver.answers).
        self._last_ok = clock.monotonic()

    def banner_features(self) -> frozenset[str]:
        """The features the phone advertised in its CNXN banner (e.g. shell_v2)."""
        return self.features

    @property
    def closed(self) -> bool:
        """True once the connection was closed (by us or after an error)."""
        return self._closed

    @property
    def in_use(self) -> bool:
        """True while a command runs on this connection."""
        return self._lock.locked()

    @property
    def idle_s(self) -> float:
        """Bench seconds since an operation on this connection last succeeded."""
        return self._clock.monotonic() - self._last_ok

    @asynccontextmanager
    async def _operation(self, what: str, timeout_s: float) -> AsyncIterator[None]:
        if self._closed:
            raise DeviceGone(f"{what}: the ADB connection is closed", hint="reconnect")
        async with self._lock:
            if self._closed:
                # Closed by the operation this one waited for (a timeout aborts the
                # connection): adb-shell would write to a closed transport.
                raise DeviceGone(f"{what}: the ADB connection is closed", hint="reconnect")
            try:
                async with self._clock.timeout(timeout_s):
                    yield
                self._last_ok = self._clock.monotonic()
            except asyncio.CancelledError:
                await self._abort()
                raise
            except DeviceError as exc:
                if type(exc) is DeviceError:  # a refusal: the connection is still fine
                    raise
                await self._abort()
                if exc.message.startswith(what):
                    raise
                # Raised inside the transport: say which operation it interrupted.
                raise type(exc)(f"{what}: {exc.message}", hint=exc.hint) from exc
            except Exception as exc:
                mapped = _map_exception(exc, what)
                if type(mapped) is not DeviceError:
                    await self._abort()
                raise mapped from exc

    async def _abort(self) -> None:
        self._closed = True
        with suppress(Exception):
            async with self._clock.timeout(CLOSE_TIMEOUT_S):
                await self._device.close()

    async def shell(
        self, cmd: str, timeout_s: float = 30.0, max_output_bytes: int = 1 << 20
    ) -> ShellOutput:
        """Run one shell command line; stdout, stderr and exit code when shell_v2.

        Over shell protocol v1 (phones without shell_v2) stdout and stderr are merged
        into `stdout` and `exit_code` is None. Raises ProtocolError (and closes the
        connection) when the output exceeds `max_output_bytes`.
        """
        real = self._clock.real_seconds(timeout_s)
        command = cmd.encode()
        what = f"adb shell {cmd[:60]!r}"
        async with self._operation(what, timeout_s):
            if "shell_v2" in self.features:
                decoder = ShellV2Decoder(max_output_bytes)
                stream = self._device._streaming_service(
                    b"shell,v2,raw", command, real, real, decode=False
                )
                try:
                    async for chunk in stream:
                        decoder.feed(chunk)
                finally:
                    await stream.aclose()
                return decoder.finish()
            out = bytearray()
            stream = self._device._streaming_service(b"shell", command, real, real, decode=False)
            try:
                async for chunk in stream:
                    if len(out) + len(chunk) > max_output_bytes:
                        raise ProtocolError(
                            f"shell output exceeds {max_output_bytes} bytes; stream aborted"
                        )
                    out += chunk
            finally:
                await stream.aclose()
            return ShellOutput(bytes(out), b"", None)

    async def push(
        self, data: bytes, device_path: str, *, mode: int = 0o644, timeout_s: float = 30.0,
        max_bytes: int = 1 << 20,
    ) -> None:
        """Write a small file on the phone (sync SEND)."""
        if len(data) > max_bytes:
            raise ValueError(f"push of {len(data)} bytes exceeds {max_bytes}")
        real = self._clock.real_seconds(timeout_s)
        async with self._operation(f"adb push {device_path!r}", timeout_s):
            await self._device.push(
                BytesIO(data), device_path, st_mode=stat.S_IFREG | mode,
                mtime=int(self._clock.now().timestamp()), transport_timeout_s=real,
                read_timeout_s=real,
            )

    async def pull(
        self, device_path: str, *, timeout_s: float = 30.0, max_bytes: int = 1 << 20
    ) -> bytes:
        """Read a small file from the phone (sync RECV); ProtocolError beyond max_bytes."""
        real = self._clock.real_seconds(timeout_s)
        target = _BoundedBytesIO(max_bytes)
        async with self._operation(f"adb pull {device_path!r}", timeout_s):
            await self._device.pull(
                device_path, target, transport_timeout_s=real, read_timeout_s=real
            )
        return target.getvalue()

    async def close(self) -> None:
        """Close the connection. Never raises."""
        self._closed = True
        with suppress(Exception):
            async with self._clock.timeout(CLOSE_TIMEOUT_S):
                await self._device.close()


def parse_banner_features(banner: bytes) -> frozenset[str]:
    """The `features=` list of a CNXN banner ("device::k=v;k=v;features=a,b;").

    The banner is untrusted: anything undecodable or implausible yields no features,
    which only makes us fall back to shell v1.
    """
    try:
        text = banner.rstrip(b"\0").decode("ascii")
    except UnicodeDecodeError:
        return frozenset()
    _, _, props = text.partition("::")
    for item in props.split(";"):
        key, _, value = item.partition("=")
        if key == "features":
            return frozenset(
                f for f in value.split(",") if f and len(f) <= 64 and f.isprintable()
            )
    return frozenset()


_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST
_HELLO = b"host::\0"
_CNXN_PING = AdbMessage(adb_constants.CNXN, adb_constants.VERSION, adb_constants.MAX_ADB_DATA,
                        _HELLO).pack() + _HELLO


async def adb_answers(endpoint: AdbEndpoint, clock: Clock, *, timeout_s: float
                      ) -> bool | None:
    """Does an ADB daemon answer at this TCP endpoint? Sends CNXN and waits for the first
    packet header (AUTH or CNXN) and nothing more: no key is used, nothing runs on the
    phone. A cheap presence check for an endpoint whose phone is not connected.

    True: an ADB daemon answered. False: evidence that none is there (connection refused
    or reset, closed without a packet, not ADB). None: no answer within `timeout_s` —
    no evidence either way, since a busy agent (or a busy simulator) answers late too.

    Made on a bare non-blocking socket (no stream objects): the agent runs it several
    times a second per phone it is waiting for, and a refused connect (a phone rebooting
    or unplugged) then costs a few system calls."""
    loop = asyncio.get_running_loop()
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(endpoint.host).version == 6 \
            else socket.AF_INET
        address: Any = (endpoint.host, endpoint.port)
    except ValueError:  # a host name: resolve it (in asyncio's executor)
        try:
            infos = await loop.getaddrinfo(endpoint.host, endpoint.port,
                                           type=socket.SOCK_STREAM)
        except OSError:
            return False
        family, _kind, _proto, _name, address = infos[0]
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError:
        return False
    header = bytearray()
    try:
        sock.setblocking(False)
        # Closed with a reset: a probe several times a second per endpoint would otherwise
        # leave a TIME_WAIT socket behind each time.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        async with clock.timeout(timeout_s):
            await loop.sock_connect(sock, address)
            await loop.sock_sendall(sock, _CNXN_PING)
            while len(header) < 24:
                chunk = await loop.sock_recv(sock, 24 - len(header))
                if not chunk:
                    return False
                header += chunk
    except TimeoutError:
        return None
    except OSError:
        return False
    finally:
        sock.close()
    command, *_rest, magic = _HEADER.unpack(bytes(header))
    wire = adb_constants.WIRE_TO_ID.get(command)
    return wire in (adb_constants.AUTH, adb_constants.CNXN) and magic == command ^ 0xFFFFFFFF


async def connect_adb(
    endpoint: AnyAdbEndpoint,
    key: AdbHostKey,
    clock: Clock,
    *,
    connect_timeout_s: float = 10.0,
    auth_timeout_s: float = 60.0,
) -> AdbConnection:
    """Open a TCP or USB connection to adbd, authenticate with the bench key, return the
    session.

    `auth_timeout_s` is how long the person has to tap "Allow USB debugging" when the
    phone does not know our key yet; running out of it (or the phone refusing) raises
    NotAuthorised. Other failures: DeviceGone (nothing listening / connection dropped),
    DeviceTimeout, ProtocolError.
    """
    transport: _GuardedTcpTransport | _GuardedUsbTransport
    if isinstance(endpoint, AdbUsbEndpoint):
        transport = _GuardedUsbTransport(endpoint)
    else:
        transport = _GuardedTcpTransport(endpoint.host, endpoint.port)
    # Our own banner instead of the hostname adb-shell would look up.
    device = AdbDeviceAsync(transport, banner=b"wipeagent")
    prompted = False

    def on_prompt(_io: object) -> None:
        nonlocal prompted
        prompted = True
        log.info("[Android|%s] waiting for the person to tap Allow USB debugging", endpoint)
        attention.needed(attention.ALLOW_USB_DEBUGGING, "waiting for Allow USB debugging")

    what = f"ADB connect {endpoint}"
    try:
        async with clock.timeout(connect_timeout_s + auth_timeout_s):
            await device.connect(
                rsa_keys=[key.signer],
                transport_timeout_s=clock.real_seconds(connect_timeout_s),
                auth_timeout_s=clock.real_seconds(auth_timeout_s),
                read_timeout_s=clock.real_seconds(connect_timeout_s),
                auth_callback=on_prompt,
            )
    except asyncio.CancelledError:
        with suppress(Exception):
            await device.close()
        raise
    except Exception as exc:
        with suppress(Exception):
            await device.close()
        mapped = _map_exception(exc, what)
        if prompted and isinstance(mapped, DeviceTimeout | DeviceGone):
            # The phone showed the prompt; nobody accepted it in time (or it was refused).
            raise NotAuthorised(
                f"{what}: USB debugging was not allowed on the phone", hint=NOT_AUTHORISED_HINT
            ) from exc
        raise mapped from exc
    if prompted:
        attention.cleared()
    banner = transport.banner
    if banner is None:
        await device.close()
        raise ProtocolError(f"{what}: connected without a CNXN banner")
    return AdbConnection(endpoint, device, transport, clock, banner)
