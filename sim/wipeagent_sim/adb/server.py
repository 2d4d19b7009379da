"""A fake adbd: the device side of the ADB protocol over TCP, in front of a simulated phone.

Real clients (adb-shell, Debian's `adb`) talk to it unchanged. It implements CNXN version
and maxdata negotiation, RSA AUTH (TOKEN / SIGNATURE / RSAPUBLICKEY), multiplexed
streams with flow control, and the services `shell:` (v1), `shell,v2,...:` (shell
protocol v2), `exec:`, `sync:` and `reboot:`. It can inject protocol faults on request of
the phone profile, and it goes offline for the duration of a simulated power cycle.

Everything a client sends is untrusted: headers are validated, every payload is bounded
by the negotiated maxdata, every read has a deadline on the backend's Clock, and a
client that breaks the protocol is disconnected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import socket
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Protocol, Self, TypeVar, runtime_checkable

from cryptography.hazmat.primitives.asymmetric import rsa

from wipeagent.clock import Clock
from wipeagent_sim.adb.backend import AdbDeviceBackend
from wipeagent_sim.adb.protocol import (
    A_AUTH,
    A_CLSE,
    A_CNXN,
    A_OKAY,
    A_OPEN,
    A_VERSION,
    A_VERSION_MIN,
    A_VERSION_SKIP_CHECKSUM,
    A_WRTE,
    AUTH_RSAPUBLICKEY,
    AUTH_SIGNATURE,
    AUTH_TOKEN,
    HEADER,
    HEADER_SIZE,
    MAX_PAYLOAD,
    MAX_PAYLOAD_V1,
    MAX_PUBKEY_MESSAGE,
    SHELL_ID_EXIT,
    SHELL_ID_STDERR,
    SHELL_ID_STDOUT,
    TOKEN_SIZE,
    InvalidAndroidKey,
    PacketHeader,
    checksum,
    decode_android_pubkey,
    header_problem,
    pack_packet,
    parse_header,
    shell_packet,
    verify_auth_signature,
)
from wipeagent_sim.adb.sync import serve_sync

log = logging.getLogger(__name__)

T = TypeVar("T")

SUPPORTED_FEATURES: Final[tuple[str, ...]] = ("shell_v2", "cmd", "stat_v2", "ls_v2")
"""Features this server implements; a phone's banner must advertise exactly these
(`features=` + ",".join(SUPPORTED_FEATURES)). Clients pick protocols from this list:
shell_v2 -> exit codes and separate stderr; stat_v2 -> STA2/LST2; ls_v2 -> LIS2/DNT2."""

KNOWN_FAULTS: Final = frozenset(
    {"malformed_packet", "wrong_checksum", "oversized_payload", "hang", "disconnect"}
)

INTERACTIVE_REFUSAL: Final = (
    b"wipeagent simulator: interactive shells are not supported; run one command per shell\n"
)

_REBOOT_TARGET = re.compile(r"[A-Za-z0-9_,-]{0,64}")


def banner_features(banner: bytes) -> list[str]:
    """The `features=` list of a CNXN banner (`device::k=v;k=v;features=a,b`)."""
    _, _, props = banner.partition(b"::")
    for item in props.split(b";"):
        key, _, value = item.partition(b"=")
        if key == b"features":
            return [f for f in value.decode("utf-8", "replace").split(",") if f]
    return []


@runtime_checkable
class ListsAuthorisedKeys(Protocol):
    """Optional backend extension: the RSAPUBLICKEY strings in the phone's adb_keys.

    Without it the server can only verify signatures from keys it has seen offered on
    some connection (RSAPUBLICKEY) since it started; with it, a key authorised in an
    earlier run (persisted by the phone) passes the SIGNATURE step as on a real phone."""

    def authorised_keys(self) -> Sequence[bytes | str]:
        """Every authorised key line, `base64 [user@host]` (bytes or ASCII text)."""
        ...


@runtime_checkable
class StopsAdbd(Protocol):
    """Optional backend extension: the phone turns USB debugging off by itself (`settings
    put global adb_enabled 0`); adbd stops, so the server drops its connections when the
    phone calls the handler it registered."""

    def set_adb_off_handler(self, handler: Callable[[], None]) -> None:
        """Register the call that drops every connection."""
        ...


@dataclass(frozen=True)
class ServerLimits:
    """Bounds on what a client can make the server wait for or hold, in bench seconds."""

    idle_timeout: float = 3600.0
    """Longest gap between two packets from a client before the connection is dropped."""
    io_timeout: float = 120.0
    """Longest wait for the rest of a started packet, a drain, an OKAY or sync data."""
    command_timeout: float = 3600.0
    """Longest a single backend call (a shell command) may run."""
    max_connections: int = 16
    max_streams: int = 64
    max_auth_attempts: int = 32
    stream_buffer: int = 1024 * 1024
    """Client bytes buffered per stream before OKAYs are held back (flow control)."""
    max_push_bytes: int = 64 * 1024 * 1024


class _Drop(Exception):
    """The client broke the protocol (or a fault was injected): drop the connection."""


class _StreamGone(Exception):
    """The stream was closed (by the client or the connection going away)."""


StreamHandler = Callable[["_Stream"], Awaitable[None]]


class _Stream:
    """One multiplexed stream: local (device) id, remote (client) id, both directions."""

    def __init__(self, conn: _Connection, local_id: int, remote_id: int, service: str,
                 *, discard_input: bool) -> None:
        self.conn = conn
        self.local_id = local_id
        self.remote_id = remote_id
        self.service = service
        self.discard_input = discard_input
        self.closed = False
        self.task: asyncio.Task[None] | None = None
        self._inbox = bytearray()
        self._data_event = asyncio.Event()
        # adbd may write right after its OKAY to OPEN; after that one WRTE is in flight
        # until the client's OKAY.
        self._ready = asyncio.Event()
        self._ready.set()
        self._okay_owed = False

    # -- from the connection's read loop --------------------------------------------
    def on_okay(self) -> None:
        self._ready.set()

    def on_data(self, data: bytes) -> bool:
        """Buffer client bytes; True if the OKAY may be sent now (else it is owed)."""
        if self.discard_input:
            return True
        self._inbox += data
        self._data_event.set()
        if len(self._inbox) <= self.conn.limits.stream_buffer:
            return True
        if len(self._inbox) > self.conn.limits.stream_buffer + self.conn.maxdata:
            # A second WRTE before our OKAY: the client ignores flow control.
            raise _Drop(f"stream {self.local_id}: client overran the flow-control window")
        self._okay_owed = True
        return False

    def on_remote_close(self) -> None:
        self.closed = True
        self._ready.set()
        self._data_event.set()

    # -- from the service ------------------------------------------------------------
    async def write(self, data: bytes) -> None:
        """Send `data` as WRTE packets of at most maxdata, one in flight at a time."""
        step = self.conn.maxdata
        for offset in range(0, len(data), step):
            if self.closed:
                raise _StreamGone
            await self.conn.clock.wait_for(self._ready.wait(), self.conn.limits.io_timeout)
            if self.closed:
                raise _StreamGone
            self._ready.clear()
            await self.conn.send(A_WRTE, self.local_id, self.remote_id,
                                 data[offset : offset + step])

    async def read_exactly(self, n: int) -> bytes:
        """Exactly `n` client bytes, waiting at most io_timeout for each arrival."""
        while len(self._inbox) < n:
            if self.closed:
                raise _StreamGone
            self._data_event.clear()
            await self.conn.clock.wait_for(self._data_event.wait(), self.conn.limits.io_timeout)
        out = bytes(self._inbox[:n])
        del self._inbox[:n]
        if self._okay_owed and len(self._inbox) <= self.conn.limits.stream_buffer:
            self._okay_owed = False
            await self.conn.send(A_OKAY, self.local_id, self.remote_id)
        return out

    async def close(self) -> None:
        """Close from the device side: CLSE(local, remote), once."""
        if self.closed:
            return
        self.closed = True
        self.conn.streams.pop(self.local_id, None)
        with contextlib.suppress(ConnectionError, _Drop):
            await self.conn.send(A_CLSE, self.local_id, self.remote_id)


class _Connection:
    """One client TCP connection: handshake, auth, packet dispatch, its streams."""

    def __init__(self, server: AdbServer, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.backend = server.backend
        self.clock: Clock = server.backend.clock
        self.limits = server.limits
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.log_prefix = f"[sim-adb|{self.backend.serial}|{self.peer}]"
        self.version = A_VERSION_MIN  # until CNXN: check every checksum, as adbd does
        self.maxdata = MAX_PAYLOAD
        self.cnxn_received = False
        self.online = False
        self.token = b""
        self.auth_attempts = 0
        self.prompt_task: asyncio.Task[None] | None = None
        self.streams: dict[int, _Stream] = {}
        self._next_local_id = 0
        self._write_lock = asyncio.Lock()
        self.dead = False

    # -- plumbing --------------------------------------------------------------------
    async def send(self, command: int, arg0: int, arg1: int, data: bytes = b"") -> None:
        """Write one packet and wait (bounded) until the kernel takes it."""
        await self.send_raw(pack_packet(command, arg0, arg1, data))

    async def send_raw(self, packet: bytes) -> None:
        if self.dead:
            raise ConnectionResetError("connection already dropped")
        async with self._write_lock:
            self.writer.write(packet)
            try:
                await self.clock.wait_for(self.writer.drain(), self.limits.io_timeout)
            except (TimeoutError, ConnectionError) as exc:
                self.abort()
                raise ConnectionResetError(f"client stopped reading: {exc!r}") from exc

    def abort(self) -> None:
        """Drop the TCP connection now (the read loop then ends on EOF)."""
        self.dead = True
        self.writer.transport.abort()

    def _new_local_id(self) -> int:
        while True:
            self._next_local_id = (self._next_local_id % 0xFFFFFFFF) + 1
            if self._next_local_id not in self.streams:
                return self._next_local_id

    # -- main loop -------------------------------------------------------------------
    async def run(self) -> None:
        try:
            if not self.backend.adb_enabled():
                log.info("%s refused: USB debugging is off", self.log_prefix)
                return
            while True:
                header, data = await self._read_packet()
                await self._dispatch(header, data)
        except _Drop as exc:
            log.warning("%s dropping connection: %s", self.log_prefix, exc)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            log.debug("%s connection closed: %r", self.log_prefix, exc)
        except TimeoutError:
            log.info("%s dropping idle or stalled connection", self.log_prefix)
        finally:
            await self._teardown()

    async def _teardown(self) -> None:
        self.dead = True
        tasks = [s.task for s in self.streams.values() if s.task is not None]
        for stream in self.streams.values():
            stream.on_remote_close()
        self.streams.clear()
        if self.prompt_task is not None:
            tasks.append(self.prompt_task)
        for task in tasks:
            task.cancel()
        self.writer.close()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _read_packet(self) -> tuple[PacketHeader, bytes]:
        raw = await self.clock.wait_for(self.reader.readexactly(HEADER_SIZE),
                                        self.limits.idle_timeout)
        header = parse_header(raw)
        problem = header_problem(header, self.maxdata)
        if problem is not None:
            raise _Drop(problem)
        data = b""
        if header.data_length:
            data = await self.clock.wait_for(self.reader.readexactly(header.data_length),
                                             self.limits.io_timeout)
        # Checksums are required only while the version is below SKIP_CHECKSUM. For CNXN
        # that is the version the client offers: Debian's adb reconnecting to a device it
        # already knew sends CNXN with data_check 0 and version 0x01000001.
        version = header.arg0 if header.command == A_CNXN else self.version
        if version < A_VERSION_SKIP_CHECKSUM and checksum(data) != header.data_check:
            raise _Drop(f"{header.name}: bad data checksum 0x{header.data_check:08x}")
        return header, data

    async def _dispatch(self, h: PacketHeader, data: bytes) -> None:
        if h.command == A_CNXN:
            await self._on_cnxn(h, data)
        elif h.command == A_AUTH:
            await self._on_auth(h, data)
        elif not self.online:
            raise _Drop(f"{h.name} before the connection is authorised")
        elif h.command == A_OPEN:
            await self._on_open(h, data)
        elif h.command == A_OKAY:
            stream = self._stream_for(h)
            if stream is not None:
                stream.on_okay()
        elif h.command == A_WRTE:
            stream = self._stream_for(h)
            if stream is not None and stream.on_data(data):
                await self.send(A_OKAY, stream.local_id, stream.remote_id)
        elif h.command == A_CLSE:
            stream = self._stream_for(h)
            if stream is not None:
                # The client closed: stop the service and confirm (adb-shell waits for it).
                self.streams.pop(stream.local_id, None)
                stream.on_remote_close()
                if stream.task is not None:
                    stream.task.cancel()
                await self.send(A_CLSE, stream.local_id, stream.remote_id)
        else:  # A_SYNC: obsolete, never sent by a host
            raise _Drop(f"unexpected {h.name}")

    def _stream_for(self, h: PacketHeader) -> _Stream | None:
        # Packets for streams that are already gone are normal (CLSE races); ignore them.
        stream = self.streams.get(h.arg1)
        if stream is None or stream.remote_id != h.arg0:
            return None
        return stream

    # -- handshake and auth ----------------------------------------------------------
    async def _on_cnxn(self, h: PacketHeader, data: bytes) -> None:
        if self.cnxn_received:
            raise _Drop("second CNXN on one connection")
        if h.arg0 < A_VERSION_MIN:
            raise _Drop(f"unsupported protocol version 0x{h.arg0:08x}")
        if h.arg1 < MAX_PAYLOAD_V1:
            raise _Drop(f"client maxdata {h.arg1} is below the minimum {MAX_PAYLOAD_V1}")
        if not self.backend.adb_enabled():
            raise _Drop("USB debugging is off")
        self.cnxn_received = True
        self.version = min(h.arg0, A_VERSION)
        self.maxdata = min(h.arg1, MAX_PAYLOAD)
        log.debug("%s CNXN version 0x%08x maxdata %d banner %r", self.log_prefix,
                  self.version, self.maxdata, data[:200])
        await self._send_token()

    async def _send_token(self) -> None:
        self.token = secrets.token_bytes(TOKEN_SIZE)
        await self.send(A_AUTH, AUTH_TOKEN, 0, self.token)

    async def _go_online(self) -> None:
        if self.online or self.dead:
            return
        self.online = True
        log.info("%s authorised; online", self.log_prefix)
        await self.send(A_CNXN, self.version, self.maxdata, self.backend.banner())

    async def _on_auth(self, h: PacketHeader, data: bytes) -> None:
        if not self.cnxn_received:
            raise _Drop("AUTH before CNXN")
        if self.online:
            return  # late duplicates after success are harmless
        self.auth_attempts += 1
        if self.auth_attempts > self.limits.max_auth_attempts:
            raise _Drop("too many AUTH attempts")
        if h.arg0 == AUTH_SIGNATURE:
            if self.server.signature_is_authorised(self.token, data):
                await self._go_online()
            else:
                await self._send_token()
        elif h.arg0 == AUTH_RSAPUBLICKEY:
            if len(data) > MAX_PUBKEY_MESSAGE:
                raise _Drop("RSAPUBLICKEY too long")
            message = data.split(b"\0", 1)[0].strip()
            try:
                key = decode_android_pubkey(message)
            except InvalidAndroidKey as exc:
                raise _Drop(f"invalid RSAPUBLICKEY: {exc}") from exc
            self.server.remember_key(message, key)
            if self.backend.is_key_authorised(message):
                await self._go_online()
            elif self.prompt_task is None or self.prompt_task.done():
                # The prompt may wait for a long time; keep reading packets meanwhile.
                self.prompt_task = asyncio.create_task(self._prompt(message))
        else:
            raise _Drop(f"unknown AUTH type {h.arg0}")

    async def _prompt(self, message: bytes) -> None:
        try:
            accepted = await self.backend.ask_user_to_authorise(message)
        except Exception:
            log.exception("%s authorisation prompt failed", self.log_prefix)
            return
        if accepted:
            with contextlib.suppress(ConnectionError):
                await self._go_online()
        else:
            # adbd says nothing when the person taps Deny; the client times out.
            log.info("%s the simulated person refused the key", self.log_prefix)

    # -- streams and services --------------------------------------------------------
    async def _on_open(self, h: PacketHeader, data: bytes) -> None:
        remote_id = h.arg0
        if remote_id == 0:
            raise _Drop("OPEN with local-id 0")
        raw = data.rstrip(b"\0")
        route: tuple[StreamHandler, bool] | None = None
        service = ""
        if b"\0" not in raw and len(self.streams) < self.limits.max_streams:
            try:
                service = raw.decode("utf-8")
            except UnicodeDecodeError:
                service = ""
            route = self._route(service) if service else None
        if route is None:
            log.info("%s refusing service %r", self.log_prefix, raw[:200])
            await self.send(A_CLSE, 0, remote_id)  # adbd's answer to an unknown service
            return
        fault = self.backend.protocol_fault(service)
        if fault is not None:
            await self._inject_fault(fault, remote_id, service)
            return
        handler, discard_input = route
        stream = _Stream(self, self._new_local_id(), remote_id, service,
                         discard_input=discard_input)
        self.streams[stream.local_id] = stream
        await self.send(A_OKAY, stream.local_id, remote_id)
        stream.task = asyncio.create_task(self._run_stream(stream, handler))

    def _route(self, service: str) -> tuple[StreamHandler, bool] | None:
        """The handler for a service name and whether its client input is ignored."""
        head, colon, rest = service.partition(":")
        if not colon:
            return None
        name, *args = head.split(",")
        if name == "shell":
            v2 = "v2" in args
            pty = "pty" in args or ("raw" not in args and rest == "")

            async def shell(stream: _Stream) -> None:
                await self._serve_shell(stream, rest, v2=v2, pty=pty)

            return shell, True
        if name == "exec" and not args:

            async def exec_(stream: _Stream) -> None:
                await self._serve_shell(stream, rest, v2=False, pty=False)

            return exec_, True
        if name == "sync" and not args and rest == "":
            return self._serve_sync, False
        if name == "reboot" and not args and _REBOOT_TARGET.fullmatch(rest):

            async def reboot(stream: _Stream) -> None:
                await self._serve_reboot(stream, rest)

            return reboot, True
        return None

    async def _run_stream(self, stream: _Stream, handler: StreamHandler) -> None:
        try:
            await handler(stream)
        except _StreamGone:
            pass
        except TimeoutError:
            log.info("%s %s: timed out; closing the stream", self.log_prefix, stream.service)
        except ConnectionError as exc:
            log.debug("%s %s: connection lost: %r", self.log_prefix, stream.service, exc)
        except _Drop as exc:
            log.warning("%s dropping connection: %s", self.log_prefix, exc)
            self.abort()
        except Exception:
            log.exception("%s %s: service failed", self.log_prefix, stream.service)
        finally:
            if not self.dead:
                await stream.close()

    async def _call_backend(self, coro: Coroutine[Any, Any, T]) -> T:
        # The phone's work runs as a server task: if this connection drops (a reboot the
        # command itself triggered, an impatient client), the phone still finishes what it
        # started, as a real phone would.
        task = self.server.spawn(coro)
        try:
            return await self.clock.wait_for(asyncio.shield(task), self.limits.command_timeout)
        except TimeoutError:
            task.cancel()
            raise

    async def _serve_shell(self, stream: _Stream, command: str, *, v2: bool, pty: bool) -> None:
        if not command.strip():
            if v2:
                await stream.write(shell_packet(SHELL_ID_STDERR, INTERACTIVE_REFUSAL)
                                   + shell_packet(SHELL_ID_EXIT, b"\x01"))
            else:
                await stream.write(INTERACTIVE_REFUSAL)
            return
        result = await self._call_backend(self.backend.shell(command))
        if not v2:
            # Protocol v1 / exec: one byte stream, stderr merged, no exit status.
            await stream.write(result.stdout + result.stderr)
            return
        stdout, stderr = result.stdout, result.stderr
        if pty:  # a terminal merges the two streams
            stdout, stderr = stdout + stderr, b""
        # One shell packet per WRTE keeps packets aligned for clients that read per packet.
        step = self.maxdata - 5
        out = bytearray()
        for packet_id, payload in ((SHELL_ID_STDOUT, stdout), (SHELL_ID_STDERR, stderr)):
            for offset in range(0, len(payload), step):
                out += shell_packet(packet_id, payload[offset : offset + step])
        out += shell_packet(SHELL_ID_EXIT, bytes([result.exit_code & 0xFF]))
        await stream.write(bytes(out))

    async def _serve_sync(self, stream: _Stream) -> None:
        await serve_sync(stream, self.backend, max_push_bytes=self.limits.max_push_bytes)

    async def _serve_reboot(self, stream: _Stream, target: str) -> None:
        # Close the stream first so clients that wait for CLSE (adb-shell) return cleanly;
        # then the phone goes down, and its power-cycle handler drops this connection.
        await stream.close()
        self.server.spawn(self.backend.request_reboot(target))

    async def _inject_fault(self, fault: str, remote_id: int, service: str) -> None:
        log.warning("%s injecting fault %r on %r", self.log_prefix, fault, service)
        if fault == "hang":
            return  # never answer this OPEN; the connection itself stays up
        if fault not in KNOWN_FAULTS:
            raise _Drop(f"unknown fault {fault!r} in the profile's fault plan")
        local_id = self._new_local_id()
        await self.send(A_OKAY, local_id, remote_id)
        if fault == "malformed_packet":
            # An unknown command with a magic that does not match it.
            await self.send_raw(HEADER.pack(0x4B4C4F47, local_id, remote_id, 0, 0, 0))
        elif fault == "wrong_checksum":
            data = b"this payload's checksum is wrong\n"
            await self.send_raw(pack_packet(A_WRTE, local_id, remote_id, data,
                                            data_check=(checksum(data) + 1) & 0xFFFFFFFF))
        elif fault == "oversized_payload":
            data = b"X" * (self.maxdata + 4096)
            await self.send_raw(pack_packet(A_WRTE, local_id, remote_id, data))
        # "disconnect" (and each fault above): drop the TCP connection mid-stream.
        raise _Drop(f"injected fault {fault!r}")


class AdbServer:
    """The fake adbd for one simulated phone, listening on TCP.

    `async with AdbServer(phone) as server: ... server.port`. A power cycle requested by
    the phone closes the listener and every connection, awaits
    `phone.finish_power_cycle()`, and listens again on the same host and port.
    """

    def __init__(self, backend: AdbDeviceBackend, host: str = "127.0.0.1", port: int = 0,
                 *, limits: ServerLimits | None = None) -> None:
        self.backend = backend
        self.host = host
        self._port = port
        self.limits = limits or ServerLimits()
        self._server: asyncio.Server | None = None
        self._connections: dict[_Connection, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._cycle_task: asyncio.Task[None] | None = None
        self._online = asyncio.Event()
        self._closed = False
        self._keys: dict[bytes, rsa.RSAPublicKey] = {}
        self.power_cycles = 0
        """How many power cycles have completed (for tests and logs)."""
        self._reserved: socket.socket | None = None  # the port, kept during a power cycle
        self.power_listeners: list[Callable[[bool], None]] = []
        """Called with False when a power cycle takes the phone offline and with True when
        it listens again (benchmarks time the phone's own reboot with it)."""

    @property
    def port(self) -> int:
        """The TCP port (the real one once started, also when constructed with 0)."""
        return self._port

    @property
    def online(self) -> bool:
        """True while listening (False during a power cycle and after close)."""
        return self._online.is_set()

    async def start(self) -> None:
        """Listen and register the power-cycle handler with the phone."""
        unsupported = sorted(set(banner_features(self.backend.banner())) - set(SUPPORTED_FEATURES))
        if unsupported:
            # Clients choose protocols from the banner; a feature we do not implement
            # would make them speak something this server cannot answer.
            log.warning("[sim-adb|%s] the banner advertises features this server does not "
                        "implement: %s", self.backend.serial, ", ".join(unsupported))
        self.backend.set_power_cycle_handler(self._on_power_cycle)
        if isinstance(self.backend, StopsAdbd):
            self.backend.set_adb_off_handler(self.drop_connections)
        await self._listen()

    async def wait_online(self, within: float) -> None:
        """Wait (bench seconds) until the server listens again after a power cycle."""
        await self.backend.clock.wait_for(self._online.wait(), within)

    async def close(self) -> None:
        """Stop listening, drop every connection and cancel everything still running."""
        self._closed = True
        self._online.clear()
        if self._server is not None:
            self._server.close()
        if self._reserved is not None:
            self._reserved.close()
            self._reserved = None
        self.drop_connections()
        pending = [*self._tasks]
        if self._cycle_task is not None:
            pending.append(self._cycle_task)
        for task in pending:
            task.cancel()
        # Aborted connections end on their own (EOF); wait for them, boundedly.
        conn_tasks = list(self._connections.values())
        if conn_tasks:
            await asyncio.wait(conn_tasks, timeout=self._grace())
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    # -- used by connections ---------------------------------------------------------
    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run `coro` as a server-owned task (cancelled on close, never garbage-collected)."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("[sim-adb|%s] background task failed", self.backend.serial,
                      exc_info=task.exception())

    def remember_key(self, message: bytes, key: rsa.RSAPublicKey) -> None:
        """Keep a key offered by a client, to check later signatures against it."""
        if message not in self._keys and len(self._keys) < 1024:
            self._keys[message] = key

    def signature_is_authorised(self, token: bytes, signature: bytes) -> bool:
        """Does `signature` sign `token` with a key the phone has authorised?"""
        if isinstance(self.backend, ListsAuthorisedKeys):
            for line in self.backend.authorised_keys():
                message = line.encode("ascii", "replace") if isinstance(line, str) else line
                message = message.split(b"\0", 1)[0].strip()
                if message not in self._keys:
                    try:
                        self.remember_key(message, decode_android_pubkey(message))
                    except InvalidAndroidKey:
                        continue
        return any(
            verify_auth_signature(key, token, signature)
            and self.backend.is_key_authorised(message)
            for message, key in self._keys.items()
        )

    # -- listening and power cycles --------------------------------------------------
    async def _listen(self) -> None:
        reserved, self._reserved = self._reserved, None
        if reserved is not None:
            # Listen on the very socket that kept the port during the power cycle.
            self._server = await asyncio.start_server(self._on_client, sock=reserved)
        else:
            self._server = await asyncio.start_server(
                self._on_client, self.host, self._port, reuse_address=True
            )
        self._port = self._server.sockets[0].getsockname()[1]
        self._online.set()
        log.info("[sim-adb|%s] listening on %s:%d", self.backend.serial, self.host, self._port)

    async def _on_client(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        if (not self._online.is_set() or self._closed
                or len(self._connections) >= self.limits.max_connections):
            writer.transport.abort()
            return
        conn = _Connection(self, reader, writer)
        task = asyncio.current_task()
        assert task is not None
        self._connections[conn] = task
        try:
            await conn.run()
        except asyncio.CancelledError:
            # Python 3.11's start_server calls task.exception() on this task when it ends,
            # which raises (and logs an error) if the task ended cancelled. Connections
            # are stopped by aborting their transport; a cancel here only comes from the
            # event loop shutting down, so ending quietly is right.
            pass
        finally:
            self._connections.pop(conn, None)

    def drop_connections(self) -> None:
        """Abort every client connection now (a pulled cable); the listener stays open."""
        for conn in list(self._connections):
            conn.abort()

    async def _on_power_cycle(self) -> None:
        """The phone's PowerCycleHandler: returns once the server listens again.

        Going offline (listener closed, every connection aborted) happens before the first
        await, so nothing can connect once the phone has called this. The rest runs in a
        server task that this call only waits for (shielded): the phone may call it from
        inside a shell command this server is serving (backend calls run as server tasks,
        see `_Connection._call_backend`), and a caller being cancelled must not leave the
        server offline."""
        if self._closed:
            return
        if self._cycle_task is None or self._cycle_task.done():
            log.info("[sim-adb|%s] power cycle: going offline", self.backend.serial)
            self._online.clear()
            self.drop_connections()
            if self._server is not None:
                self._server.close()
            self._reserve_port()
            self._notify_power(False)
            self._cycle_task = asyncio.create_task(self._power_cycle())
        try:
            await asyncio.shield(self._cycle_task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # our caller is being cancelled
            # Otherwise the server was closed mid-cycle: there is nothing left to wait for.

    async def _power_cycle(self) -> None:
        conn_tasks = list(self._connections.values())
        if conn_tasks:
            await asyncio.wait(conn_tasks, timeout=self._grace())
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        try:
            await self.backend.finish_power_cycle()
        except Exception:
            # A phone that fails to "boot" is a simulator bug; log it and come back anyway.
            log.exception("[sim-adb|%s] finish_power_cycle failed", self.backend.serial)
        for _ in range(20):
            if self._closed:
                return
            try:
                await self._listen()
            except OSError as exc:
                log.warning("[sim-adb|%s] cannot listen on %s:%d again (%s); retrying",
                            self.backend.serial, self.host, self._port, exc)
                await self.backend.clock.sleep(1.0)
            else:
                self.power_cycles += 1
                self._notify_power(True)
                return
        log.error("[sim-adb|%s] gave up listening again; the phone stays offline",
                  self.backend.serial)

    def _reserve_port(self) -> None:
        """Keep the port while the phone is off: a socket bound to it but not listening
        (a connection is refused, as with the phone off), which listens again once the
        phone is back. Closing the port instead let any other program on the machine take
        it meanwhile — another simulator's phone, or an outgoing connection using it as its
        source port — and the phone could not come back on its own port."""
        if self._reserved is not None:
            return
        try:
            family, kind, proto, _name, address = socket.getaddrinfo(
                self.host, self._port, type=socket.SOCK_STREAM)[0]
            sock = socket.socket(family, kind, proto)
        except OSError:
            return
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
        except OSError as exc:
            sock.close()
            log.warning("[sim-adb|%s] could not keep port %d while off: %s",
                        self.backend.serial, self._port, exc)
            return
        self._reserved = sock

    def _notify_power(self, online: bool) -> None:
        for listener in list(self.power_listeners):
            try:
                listener(online)
            except Exception:  # an observer must never break the simulated phone
                log.exception("[sim-adb|%s] power listener failed", self.backend.serial)

    def _grace(self) -> float:
        # Real seconds for aborted connections to finish their teardown.
        return self.backend.clock.real_seconds(self.limits.io_timeout)
