"""Bytes on the wire for the simulated iPhone: usbmuxd packets, lockdown frames, TLS.

Two framings are spoken:

- usbmuxd (host <-> usbmuxd): a 16-byte little-endian header
  ``length, version, message, tag`` (``length`` counts the header) and a body.
- lockdown and the services behind it: a u32 big-endian length and an XML or binary plist.

Lockdown upgrades a live connection to TLS (``EnableSessionSSL``) and, after
``StopSession``, falls back to plaintext on the same socket. asyncio's stream TLS cannot be
turned off again, so `PlistChannel` runs TLS itself over `ssl.MemoryBIO`, one TLS record at a
time, so it never reads past the last TLS record the client sent.

Everything a client sends is untrusted: every frame is bounded in size, every read in time.
"""

from __future__ import annotations

import asyncio
import plistlib
import ssl
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from wipeagent.clock import Clock

# --- usbmuxd -------------------------------------------------------------------------------

USBMUXD_HEADER = struct.Struct("<IIII")
"""length, version, message, tag."""

MUX_VERSION_BINARY: Final = 0
MUX_VERSION_PLIST: Final = 1

MUX_MSG_RESULT: Final = 1
MUX_MSG_CONNECT: Final = 2
MUX_MSG_LISTEN: Final = 3
MUX_MSG_DEVICE_ADD: Final = 4
MUX_MSG_DEVICE_REMOVE: Final = 5
MUX_MSG_DEVICE_PAIRED: Final = 6
MUX_MSG_PLIST: Final = 8

MUX_RESULT_OK: Final = 0
MUX_RESULT_BADCOMMAND: Final = 1
MUX_RESULT_BADDEV: Final = 2
MUX_RESULT_CONNREFUSED: Final = 3
MUX_RESULT_BADVERSION: Final = 6
MUX_RESULT_ENOENT: Final = 2  # errno ENOENT, what usbmuxd answers for a missing pair record
MUX_RESULT_EINVAL: Final = 22  # errno EINVAL

MUX_MAX_PACKET: Final = 0x10000
"""usbmuxd's own command buffer (CMD_BUF_SIZE); a longer packet closes the client."""

MUX_BINARY_CONNECT = struct.Struct("<IHH")
"""device_id, port (network byte order, as sent), reserved."""

MUX_DEVICE_RECORD = struct.Struct("<IH256s2xI")
"""device_id, product_id, serial (NUL padded), 2 padding bytes, location."""


class WireError(Exception):
    """A peer broke the framing (oversized, truncated, not a plist). The connection is dropped."""


@dataclass(frozen=True)
class MuxPacket:
    """One usbmuxd request as read from a client."""

    version: int
    message: int
    tag: int
    body: bytes


async def read_mux_packet(reader: asyncio.StreamReader) -> MuxPacket | None:
    """Read one usbmuxd packet; None on a clean end of stream before a header.

    Raises WireError on a length outside [16, MUX_MAX_PACKET] or a stream cut mid-packet.
    """
    try:
        header = await reader.readexactly(USBMUXD_HEADER.size)
    except asyncio.IncompleteReadError as e:
        if not e.partial:
            return None
        raise WireError("usbmuxd header truncated") from e
    length, version, message, tag = USBMUXD_HEADER.unpack(header)
    if length < USBMUXD_HEADER.size or length > MUX_MAX_PACKET:
        raise WireError(f"usbmuxd packet length {length} out of bounds")
    try:
        body = await reader.readexactly(length - USBMUXD_HEADER.size)
    except asyncio.IncompleteReadError as e:
        raise WireError("usbmuxd packet truncated") from e
    return MuxPacket(version, message, tag, body)


def build_mux_packet(version: int, message: int, tag: int, body: bytes) -> bytes:
    """Frame a usbmuxd reply or notification."""
    return USBMUXD_HEADER.pack(USBMUXD_HEADER.size + len(body), version, message, tag) + body


def build_mux_plist(tag: int, payload: Mapping[str, Any]) -> bytes:
    """A version-1 PLIST packet with an XML body, as usbmuxd sends them."""
    return build_mux_packet(MUX_VERSION_PLIST, MUX_MSG_PLIST, tag, plistlib.dumps(dict(payload)))


def build_mux_result(version: int, tag: int, number: int) -> bytes:
    """A Result in the client's protocol: a plist for version 1, a u32 body for version 0."""
    if version == MUX_VERSION_PLIST:
        return build_mux_plist(tag, {"MessageType": "Result", "Number": number})
    return build_mux_packet(MUX_VERSION_BINARY, MUX_MSG_RESULT, tag, struct.pack("<I", number))


def parse_plist_dict(data: bytes) -> dict[str, Any]:
    """Parse an XML or binary plist whose root must be a dictionary.

    plistlib refuses external entities and DTD tricks (it uses expat without entity
    expansion); anything it rejects, or a non-dict root, is a WireError.
    """
    try:
        value = plistlib.loads(data)
    except Exception as e:  # plistlib raises several unrelated types on bad input
        raise WireError(f"not a plist: {type(e).__name__}") from e
    if not isinstance(value, dict):
        raise WireError(f"plist root is {type(value).__name__}, not a dictionary")
    return value


def plist_format_of(data: bytes) -> plistlib.PlistFormat:
    """Answer in the format the client used (lockdownd answers XML to XML)."""
    return plistlib.FMT_BINARY if data.startswith(b"bplist00") else plistlib.FMT_XML


# --- lockdown framing and TLS --------------------------------------------------------------

_TLS_RECORD_TYPES: Final = frozenset({20, 21, 22, 23})
_TLS_MAX_RECORD: Final = 16384 + 2048  # RFC 8446 5.2 upper bound for a ciphertext record


def _looks_like_tls_header(head: bytes) -> bool:
    return len(head) >= 3 and head[0] in _TLS_RECORD_TYPES and head[1] == 3 and head[2] <= 4


class ChannelClosed(Exception):
    """The peer closed the connection (cleanly or not)."""


class PlistChannel:
    """Length-prefixed plist messages over a stream, with switchable TLS (server side).

    `max_frame` bounds one incoming message; `idle_timeout` (bench seconds) bounds every
    wait for the next message and every TLS handshake.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        clock: Clock,
        *,
        max_frame: int = 1 << 20,
        idle_timeout: float = 600.0,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._clock = clock
        self.max_frame = max_frame
        self.idle_timeout = idle_timeout
        self._tls: ssl.SSLObject | None = None
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._plain = bytearray()  # decrypted bytes not yet consumed
        self._after_stop = False  # StopSession sent: the client may close TLS or keep it
        self.last_format: plistlib.PlistFormat = plistlib.FMT_XML

    @property
    def tls_active(self) -> bool:
        """Whether messages are currently carried inside TLS."""
        return self._tls is not None

    # -- raw I/O ----------------------------------------------------------------------------

    async def _raw_exact(self, n: int) -> bytes:
        try:
            return await self._clock.wait_for(self._reader.readexactly(n), self.idle_timeout)
        except asyncio.IncompleteReadError as e:
            raise ChannelClosed("peer closed the connection") from e
        except (ConnectionError, OSError) as e:
            raise ChannelClosed(str(e)) from e

    async def _flush_tls(self) -> None:
        pending = self._outgoing.read()
        if pending:
            await self._raw_write(pending)

    async def _raw_write(self, data: bytes) -> None:
        try:
            self._writer.write(data)
            await self._clock.wait_for(self._writer.drain(), self.idle_timeout)
        except (ConnectionError, OSError) as e:
            raise ChannelClosed(str(e)) from e

    async def _read_tls_record(self, head: bytes = b"") -> None:
        """Feed exactly one TLS record from the socket into the TLS engine."""
        header = head + await self._raw_exact(5 - len(head))
        if not _looks_like_tls_header(header):
            raise WireError(f"expected a TLS record, got {header.hex()}")
        (length,) = struct.unpack(">H", header[3:5])
        if length > _TLS_MAX_RECORD:
            raise WireError(f"TLS record of {length} bytes")
        self._incoming.write(header + await self._raw_exact(length))

    async def _tls_fill(self) -> None:
        """Decrypt at least one more byte of application data into `_plain`."""
        assert self._tls is not None
        while True:
            try:
                data = self._tls.read(65536)
            except ssl.SSLWantReadError:
                await self._flush_tls()
                await self._read_tls_record()
                continue
            except ssl.SSLZeroReturnError:
                data = b""
            except ssl.SSLError as e:
                raise WireError(f"TLS error: {e.reason}") from e
            await self._flush_tls()
            if not data:
                # close_notify (SSLObject.read returns b"" for it): after StopSession this
                # means "back to plaintext" (libimobiledevice's SSL_shutdown); at any other
                # time it ends the connection.
                self._tls = None
                if self._after_stop:
                    self._after_stop = False
                    return
                raise ChannelClosed("TLS closed by peer")
            self._after_stop = False
            self._plain += data
            return

    async def _read_exact(self, n: int) -> bytes:
        while len(self._plain) < n:
            if self._tls is None:
                self._plain += await self._raw_exact(n - len(self._plain))
            else:
                await self._tls_fill()
        out = bytes(self._plain[:n])
        del self._plain[:n]
        return out

    # -- messages ---------------------------------------------------------------------------

    async def recv_frame(self) -> bytes | None:
        """Read one length-prefixed frame; None when the peer closed between frames."""
        try:
            if self._tls is not None and self._after_stop and not self._plain:
                # The client either shuts TLS down (close_notify, then plaintext) or keeps
                # talking TLS (pymobiledevice3 never downgrades). A record header tells which.
                head = await self._raw_exact(5)
                if _looks_like_tls_header(head):
                    await self._read_tls_record(head)
                    await self._tls_fill()
                    if self._tls is None and not self._plain:
                        return await self.recv_frame()
                else:
                    self._tls = None
                    self._after_stop = False
                    self._plain += head
            prefix = await self._read_exact(4)
        except ChannelClosed:
            return None
        (length,) = struct.unpack(">I", prefix)
        if length > self.max_frame:
            raise WireError(f"frame of {length} bytes exceeds {self.max_frame}")
        return await self._read_exact(length)

    async def recv_plist(self) -> dict[str, Any] | None:
        """Read one plist message (dictionary root); None on a clean close."""
        frame = await self.recv_frame()
        if frame is None:
            return None
        self.last_format = plist_format_of(frame)
        return parse_plist_dict(frame)

    async def recv_plist_any(self) -> Any:
        """Read one plist message of any root type (DeviceLink sends arrays)."""
        frame = await self.recv_frame()
        if frame is None:
            return None
        self.last_format = plist_format_of(frame)
        try:
            return plistlib.loads(frame)
        except Exception as e:
            raise WireError(f"not a plist: {type(e).__name__}") from e

    async def send_bytes(self, data: bytes) -> None:
        """Send raw bytes (inside TLS if it is on)."""
        if self._tls is None:
            await self._raw_write(data)
            return
        self._tls.write(data)
        await self._flush_tls()

    async def send_plist(self, value: Any, fmt: plistlib.PlistFormat | None = None) -> None:
        """Send one plist message, by default in the format of the last request."""
        payload = plistlib.dumps(value, fmt=fmt or self.last_format, sort_keys=False)
        await self.send_bytes(struct.pack(">I", len(payload)) + payload)

    async def start_tls(self, context: ssl.SSLContext) -> None:
        """Run the server side of a TLS handshake on this connection."""
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self._flush_tls()
                await self._read_tls_record()
            except ssl.SSLError as e:
                await self._flush_tls()  # deliver our alert
                raise WireError(f"TLS handshake failed: {e.reason}") from e
        await self._flush_tls()
        self._tls = tls
        self._after_stop = False

    def mark_session_stopped(self) -> None:
        """StopSession was answered: the client may now turn TLS off (see recv_frame)."""
        if self._tls is not None:
            self._after_stop = True

    async def close(self) -> None:
        """Close the connection without waiting for the peer."""
        try:
            self._writer.close()
            await self._clock.wait_for(self._writer.wait_closed(), 5.0)
        except (ConnectionError, OSError, TimeoutError):
            self._writer.transport.abort()
