"""iPhones through usbmuxd and lockdownd, with pymobiledevice3's async API.

This module knows connections, pairing and services; nothing about wiping. Everything
pymobiledevice3 raises is mapped to `wipeagent.errors` (DeviceGone, DeviceTimeout,
NotAuthorised, ProtocolError, BadDeviceData) inside `mapped_errors`, so a platform driver
never sees a library exception.

Pairing never blocks the daemon on the Trust prompt: the lockdown client is created with
``autopair=False`` and the Pair request is re-sent (always the same pair record, like
libimobiledevice's idevicepair) on the bench Clock until the person taps Trust or the pair
timeout passes. The RSA keys of a pair record are generated in a bounded executor so the
event loop stays responsive. Pair records live in the agent's state directory, one file
per UDID, mode 0600: the bench does not depend on what usbmuxd or /var/lib/lockdown hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import plistlib
import re
import socket
import ssl
import threading
import uuid
import xml.parsers.expat
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from pymobiledevice3 import exceptions as pmd
from pymobiledevice3.ca import (
    build_device_certificate,
    build_host_certificate,
    build_root_certificate,
    select_hash_algorithm,
    serialize_cert_pem,
    serialize_private_key_pkcs8_pem,
)
from pymobiledevice3.lockdown import UsbmuxLockdownClient, create_using_usbmux
from pymobiledevice3.service_connection import ServiceConnection
from pymobiledevice3.services.lockdown_service import LockdownService

from wipeagent import attention
from wipeagent.clock import Clock
from wipeagent.errors import (
    BadDeviceData,
    ConfigError,
    DeviceError,
    DeviceGone,
    DeviceTimeout,
    NotAuthorised,
    ProtocolError,
)
from wipeagent.keyfile import read_private_key

log = logging.getLogger(__name__)

TRUST_HINT = "unlock the phone and tap Trust (enter the passcode when asked)"
USBMUXD_HINT = "start usbmuxd: systemctl start usbmuxd"

UDID_RE = re.compile(r"^(?:[0-9A-Fa-f]{8}-[0-9A-Fa-f]{16}|[0-9A-Fa-f]{40})$")

# Pairing is CPU work (the bench's two RSA-2048 keys once, three signatures per phone): a
# small pool keeps the loop responsive without letting many pairings starve the machine.
_KEYGEN = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ios-keygen")

S = TypeVar("S", bound=LockdownService)

MAX_FRAME_BYTES = 4 << 20
# pymobiledevice3 reads a frame of any length up to this class-wide bound (128 MiB by
# default) and documents it as the application's to set. The first frames of a connection
# are read inside create_using_usbmux, before a per-connection bound could be set, so the
# agent sets the class default: one lockdown / service message from a phone is at most
# 4 MiB (the largest legitimate answers, IORegistry entries and value dumps, are tens of KiB).
ServiceConnection.max_frame_size = MAX_FRAME_BYTES


@dataclass(frozen=True)
class UsbmuxAddress:
    """Where usbmuxd listens: TCP ``host:port``, a unix socket path, or the system socket.

    `library` is the form pymobiledevice3's ``usbmux_address`` takes (``None`` = system
    socket; it reads ``USBMUXD_SOCKET_ADDRESS`` in that case, as libusbmuxd does).
    """

    host: str | None = None
    port: int | None = None
    path: str | None = None

    @classmethod
    def parse(cls, text: str) -> UsbmuxAddress:
        """"" -> system socket; "host:port"; "/path" or "UNIX:/path" (libusbmuxd style)."""
        text = text.strip()
        if not text:
            return cls()
        if text.startswith("UNIX:"):
            text = text[len("UNIX:"):]
        if text.startswith("/"):
            return cls(path=text)
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"usbmuxd address must be host:port or a socket path, got {text!r}")
        return cls(host=host, port=int(port))

    @property
    def library(self) -> str | None:
        if self.path is not None:
            return self.path
        if self.host is not None:
            return f"{self.host}:{self.port}"
        return None

    def __str__(self) -> str:
        return self.library or "the system usbmuxd socket"


@dataclass(frozen=True)
class IosSettings:
    """Timeouts (bench seconds) and bounds for one iPhone; defaults match config.IosConfig."""

    connect_timeout_s: float = 30.0
    pair_timeout_s: float = 120.0
    command_timeout_s: float = 30.0
    reboot_timeout_s: float = 900.0
    poll_interval_s: float = 2.0
    # One lockdown / service message (see MAX_FRAME_BYTES).
    max_frame_bytes: int = MAX_FRAME_BYTES


@contextlib.contextmanager
def mapped_errors(what: str, *, usbmuxd: UsbmuxAddress | None = None) -> Iterator[None]:
    """Turn anything pymobiledevice3 (or a malformed answer) raises into a DeviceError.

    A phone is untrusted: a malformed plist shows up as KeyError / TypeError / ValueError
    deep inside the library, and is a ProtocolError of that phone, not a crash.
    """
    try:
        yield
    except DeviceError:
        raise
    except pmd.ConnectionFailedToUsbmuxdError as exc:
        raise DeviceGone(f"{what}: usbmuxd is not reachable at {usbmuxd or 'its socket'}",
                         hint=USBMUXD_HINT) from exc
    except (pmd.PasswordRequiredError, pmd.PasscodeRequiredError) as exc:
        raise NotAuthorised(f"{what}: the phone is locked with a passcode",
                            hint=TRUST_HINT) from exc
    except (pmd.NotPairedError, pmd.InvalidHostIDError, pmd.UserDeniedPairingError,
            pmd.PairingDialogResponsePendingError, pmd.NotTrustedError) as exc:
        raise NotAuthorised(f"{what}: this bench is not trusted by the phone "
                            f"({type(exc).__name__})", hint=TRUST_HINT) from exc
    except TimeoutError as exc:
        raise DeviceTimeout(f"{what}: the phone did not answer in time") from exc
    except (pmd.NoDeviceConnectedError, pmd.DeviceNotFoundError, pmd.BadDevError,
            pmd.ConnectionFailedError, pmd.ConnectionTerminatedError, pmd.MuxException,
            pmd.NotConnectedError, asyncio.IncompleteReadError, EOFError,
            ConnectionError) as exc:
        raise DeviceGone(f"{what}: the phone went away ({type(exc).__name__})") from exc
    except ssl.SSLError as exc:
        raise ProtocolError(f"{what}: TLS with the phone failed: {exc.reason or exc}") from exc
    # ValueError covers bytestruct's BinaryParseError (a malformed usbmuxd / binary frame).
    except (pmd.ProtocolError, plistlib.InvalidFileException,
            xml.parsers.expat.ExpatError, KeyError, TypeError, IndexError, ValueError,
            AssertionError, UnicodeError, OverflowError, RecursionError) as exc:
        raise ProtocolError(f"{what}: the phone sent a malformed answer "
                            f"({type(exc).__name__})") from exc
    except pmd.PyMobileDevice3Exception as exc:
        raise DeviceError(f"{what}: {type(exc).__name__}: {str(exc)[:200]}") from exc
    except OSError as exc:
        raise DeviceGone(f"{what}: connection error ({exc.strerror or exc})") from exc


def _pair_record_path(folder: Path, udid: str) -> Path:
    if not UDID_RE.fullmatch(udid):
        raise BadDeviceData(f"not a UDID: {udid[:64]!r}")
    return folder / f"{udid}.plist"


def load_pair_record(folder: Path, udid: str) -> dict[str, Any] | None:
    """This bench's pair record for `udid`, or None (a damaged file counts as none)."""
    path = _pair_record_path(folder, udid)
    try:
        data = path.read_bytes()
        record = plistlib.loads(data)
    except FileNotFoundError:
        return None
    except (OSError, plistlib.InvalidFileException, ValueError, xml.parsers.expat.ExpatError):
        log.warning("[iOS|%s] ignoring unreadable pair record %s", udid, path)
        return None
    return record if isinstance(record, dict) else None


def save_pair_record(folder: Path, udid: str, record: dict[str, Any]) -> None:
    """Write the pair record atomically, readable by the agent only (it holds keys)."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = _pair_record_path(folder, udid)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(plistlib.dumps(record))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def delete_pair_record(folder: Path, udid: str) -> None:
    """Forget the pair record (after an erase the phone no longer knows it anyway)."""
    with contextlib.suppress(FileNotFoundError):
        _pair_record_path(folder, udid).unlink()


class IosConnection:
    """One lockdown session with one iPhone (paired, TLS on) and the services behind it."""

    def __init__(self, client: UsbmuxLockdownClient, udid: str, clock: Clock,
                 settings: IosSettings, address: UsbmuxAddress) -> None:
        self.client = client
        self.udid = udid
        self.clock = clock
        self.settings = settings
        self.address = address
        self.closed = False
        client.service.max_frame_size = settings.max_frame_bytes

    @property
    def paired(self) -> bool:
        return bool(self.client.paired)

    @property
    def host_id(self) -> str:
        return str(self.client.host_id)

    @property
    def system_buid(self) -> str:
        return str(self.client.system_buid)

    @property
    def values(self) -> dict[str, Any]:
        """The default-domain values read at session start (validated by the caller)."""
        values = self.client.all_values
        if not isinstance(values, dict):
            raise ProtocolError("lockdown values are not a dictionary")
        return values

    async def get_value(self, domain: str | None = None, key: str | None = None) -> Any:
        """GetValue (bounded in time); MissingValue / GetProhibited read as None."""
        what = f"GetValue {domain or ''} {key or ''}".strip()
        try:
            with mapped_errors(what, usbmuxd=self.address):
                return await self.clock.wait_for(self.client.get_value(domain, key),
                                                 self.settings.command_timeout_s)
        except DeviceError as exc:
            cause = exc.__cause__
            if isinstance(cause, pmd.MissingValueError | pmd.GetProhibitedError):
                return None
            raise

    async def refresh_values(self) -> dict[str, Any]:
        """Read the whole default domain again."""
        value = await self.get_value()
        if not isinstance(value, dict):
            raise ProtocolError("GetValue answered something that is not a dictionary")
        return value

    @contextlib.asynccontextmanager
    async def service(self, cls: type[S]) -> AsyncIterator[S]:
        """Start a lockdown service (bounded in time), yield it, always close it."""
        svc = cls(self.client)
        with mapped_errors(f"start {cls.SERVICE_NAME}", usbmuxd=self.address):
            await self.clock.wait_for(svc.connect(), self.settings.command_timeout_s)
        conn = svc._service  # the connected ServiceConnection (None only before connect)
        if conn is not None:
            conn.max_frame_size = self.settings.max_frame_bytes
        try:
            yield svc
        finally:
            with contextlib.suppress(Exception):
                await self.clock.wait_for(svc.close(), 5.0)

    async def unpair(self) -> None:
        """Ask the phone to forget this bench's pairing (lockdown Unpair)."""
        with mapped_errors("Unpair", usbmuxd=self.address):
            await self.clock.wait_for(self.client.unpair(), self.settings.command_timeout_s)

    async def call(self, what: str, aw: Any, timeout_s: float | None = None) -> Any:
        """Await one library call with the command timeout and error mapping."""
        with mapped_errors(what, usbmuxd=self.address):
            return await self.clock.wait_for(aw, timeout_s or self.settings.command_timeout_s)

    async def close(self) -> None:
        """Close the lockdown connection. Never raises."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            await self.clock.wait_for(self.client.close(), 5.0)


PAIRING_KEYS_FILE = "host-keys.pem"
"""This bench's pairing keys, in the pair-record directory (see PairingKeys)."""


class PairingKeys:
    """The bench's root and host RSA keys, shared by every iPhone pairing it makes.

    What lockdown needs from a pairing: a pair record holding a RootCertificate, a
    HostCertificate signed by that root, and a DeviceCertificate for the phone's own
    DevicePublicKey; the host later proves it holds the host key in the TLS handshake of
    StartSession, and the HostID names the pairing on the phone. Nothing ties the keys to
    one phone. libimobiledevice makes two new RSA-2048 keys and a random HostID for every
    pairing (common/userpref.c, pair_record_generate_keys_and_certs; src/lockdown.c,
    generate_uuid); pymobiledevice3 makes a new root key for every pairing, reuses a host
    key when given one (ca.generate_pairing_cert_chain's private_key), and derives one
    HostID per host from its hostname (lockdown.generate_host_id). Two RSA-2048 keys cost
    about 0.25 s of CPU a pairing; this bench makes them once, keeps them 0600 in
    `<pair records>/host-keys.pem` (checked like every private key, wipeagent.keyfile),
    and signs only the three certificates for each phone. The HostID is new for every
    pairing, as libimobiledevice makes it (see `_pair`): the after-erase check asks the
    phone about the pre-erase pairing's HostID (`pairing_known`), and a pairing made after
    the erase must never answer for it.
    """

    def __init__(self, root: RSAPrivateKey, host: RSAPrivateKey) -> None:
        self.root = root
        self.host = host

    @classmethod
    def load_or_create(cls, path: Path) -> PairingKeys:
        """The keys at `path`, made once when absent (blocking: call from a thread)."""
        if not path.is_symlink() and not path.exists():
            cls._create(path)
        data = read_private_key(path, "iPhone pairing key")
        blocks = [f"-----BEGIN{b}" for b in data.decode("ascii", "replace").split(
            "-----BEGIN")[1:]]
        bad = ConfigError(f"iPhone pairing key {path} does not hold two RSA keys",
                          hint=f"move {path} away; new keys are made at the next pairing")
        keys: list[RSAPrivateKey] = []
        for block in blocks:
            try:
                key = serialization.load_pem_private_key(block.encode(), None)
            except (ValueError, TypeError) as exc:
                raise bad from exc
            if not isinstance(key, RSAPrivateKey) or key.key_size < 2048:
                raise bad
            keys.append(key)
        if len(keys) != 2:
            raise bad
        return cls(keys[0], keys[1])

    @staticmethod
    def _create(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        pem = b"".join(serialize_private_key_pkcs8_pem(
            rsa.generate_private_key(public_exponent=65537, key_size=2048)) for _ in (0, 1))
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        log.info("[iOS] made this bench's pairing keys in %s", path)

    def certificates(self, device_public_key_pem: bytes) -> dict[str, bytes]:
        """The pair record's certificates and keys for one phone (three signatures)."""
        device_key = load_pem_public_key(device_public_key_pem)
        if not isinstance(device_key, RSAPublicKey):
            raise ProtocolError("the phone's DevicePublicKey is not an RSA key")
        alg = select_hash_algorithm((4, 0, 0))  # as generate_pairing_cert_chain's default
        root_cert = build_root_certificate(self.root, alg)
        return {
            "DeviceCertificate": serialize_cert_pem(
                build_device_certificate(device_key, root_cert, self.root, alg)),
            "HostCertificate": serialize_cert_pem(
                build_host_certificate(self.host, root_cert, self.root, alg)),
            "RootCertificate": serialize_cert_pem(root_cert),
            "RootPrivateKey": serialize_private_key_pkcs8_pem(self.root),
            "HostPrivateKey": serialize_private_key_pkcs8_pem(self.host),
        }


_pairing_keys: dict[Path, PairingKeys] = {}
_pairing_lock = threading.Lock()  # two first pairings at once make one set of keys


def _load_pairing_keys(path: Path) -> PairingKeys:
    with _pairing_lock:
        keys = _pairing_keys.get(path)
        if keys is None:
            keys = _pairing_keys[path] = PairingKeys.load_or_create(path)
        return keys


async def pairing_keys(record_dir: Path) -> PairingKeys:
    """The bench's pairing keys for this pair-record directory (loaded or made once per
    process, off the event loop)."""
    path = (record_dir / PAIRING_KEYS_FILE).absolute()
    keys = _pairing_keys.get(path)
    if keys is None:
        keys = await asyncio.get_running_loop().run_in_executor(
            _KEYGEN, _load_pairing_keys, path)
    return keys


async def _pair_record_for(client: UsbmuxLockdownClient, record_dir: Path) -> dict[str, Any]:
    """A new pair record for this phone, signed with the bench's pairing keys."""
    public_key = client.all_values.get("DevicePublicKey")
    if not isinstance(public_key, bytes):
        public_key = await client.get_value("", "DevicePublicKey")
    if not isinstance(public_key, bytes) or not 0 < len(public_key) <= 4096:
        raise ProtocolError("the phone did not give a usable DevicePublicKey")
    keys = await pairing_keys(record_dir)
    loop = asyncio.get_running_loop()
    try:
        made = await loop.run_in_executor(_KEYGEN, keys.certificates, public_key)
    except (ValueError, TypeError) as exc:  # an unparseable key from the phone
        raise ProtocolError("the phone's DevicePublicKey is not a PEM RSA key") from exc
    return {
        "DeviceCertificate": made["DeviceCertificate"],
        "HostCertificate": made["HostCertificate"],
        "HostID": client.host_id,
        "RootCertificate": made["RootCertificate"],
        "RootPrivateKey": made["RootPrivateKey"],
        "WiFiMACAddress": client.wifi_mac_address,
        "SystemBUID": client.system_buid,
        "_HostPrivateKey": made["HostPrivateKey"],
    }


async def _pair(client: UsbmuxLockdownClient, udid: str, clock: Clock, *,
                settings: IosSettings, record_dir: Path, address: UsbmuxAddress) -> None:
    """Send Pair until the person taps Trust (poll on the Clock) or pair_timeout passes.

    Every pairing gets a random HostID of its own, like libimobiledevice's (src/lockdown.c,
    generate_uuid); pymobiledevice3 would derive one from the host name, the same for
    every pairing of this bench. The post-erase check asks the
    phone whether it still knows the HostID of the pairing made *before* the erase, and a
    pairing made after the erase must never answer for it."""
    client.host_id = str(uuid.uuid4()).upper()
    record = await _pair_record_for(client, record_dir)
    host_key = record.pop("_HostPrivateKey")
    request: dict[str, Any] = {
        "Label": client.label,
        "Request": "Pair",
        "PairRecord": record,
        "ProtocolVersion": "2",
        "PairingOptions": {"ExtendedPairingErrors": True},
    }
    deadline = clock.monotonic() + settings.pair_timeout_s
    last = "the Trust prompt was not answered"
    prompted = False
    while True:
        with mapped_errors("Pair", usbmuxd=address):
            answer = await clock.wait_for(client.service.send_recv_plist(request),
                                          settings.command_timeout_s)
        if not isinstance(answer, dict):
            raise ProtocolError("Pair: the answer is not a dictionary")
        error = answer.get("Error")
        if error is None:
            break
        if error == "PasswordProtected":
            last = "the phone is locked with a passcode and cannot show the Trust prompt"
            attention.needed(attention.UNLOCK_PHONE, last)
        elif error == "UserDeniedPairing":
            last = "the person tapped Don't Trust"
        elif error == "PairingDialogResponsePending":
            # A refusal seen earlier stays the reason the technician is given.
            if "Don't Trust" not in last:
                last = "the Trust prompt was not answered"
            if not prompted:
                prompted = True
                log.warning("[iOS|%s] waiting for Trust on the phone (%s)", udid, TRUST_HINT)
            attention.needed(attention.TAP_TRUST, "waiting for Trust on the phone")
        else:
            raise NotAuthorised(f"Pair refused by the phone: {str(error)[:80]}",
                                hint=TRUST_HINT)
        if clock.monotonic() + settings.poll_interval_s > deadline:
            raise NotAuthorised(
                f"not paired within {settings.pair_timeout_s:.0f} s: {last}", hint=TRUST_HINT)
        await clock.sleep(settings.poll_interval_s)
    record["HostPrivateKey"] = host_key
    escrow = answer.get("EscrowBag")
    if isinstance(escrow, bytes) and len(escrow) <= 64 * 1024:
        record["EscrowBag"] = escrow
    await asyncio.to_thread(save_pair_record, record_dir, udid, record)
    client.pair_record = record
    attention.cleared()
    log.info("[iOS|%s] paired", udid)


async def pairing_known(
    udid: str,
    address: UsbmuxAddress,
    record_dir: Path,
    clock: Clock,
    settings: IosSettings,
    *,
    host_id: str,
    system_buid: str,
) -> bool:
    """Whether the phone still knows the pairing `host_id`: StartSession with that HostID
    (and the SystemBUID it was made with) on a fresh, unpaired lockdown connection. True:
    the phone accepted it (its pairing store, on the data volume, kept the pairing);
    False: InvalidHostID (it has no such pairing). Needs neither the pair record's keys
    nor a session: the connection is closed before any TLS. ProtocolError for any other
    answer; DeviceGone / DeviceTimeout while the phone does not answer."""
    if not UDID_RE.fullmatch(udid):
        raise BadDeviceData(f"not a UDID: {udid[:64]!r}")
    with mapped_errors("connect to lockdownd", usbmuxd=address):
        client = await clock.wait_for(
            create_using_usbmux(serial=udid, autopair=False, pair_record={},
                                pairing_records_cache_folder=record_dir,
                                usbmux_address=address.library,
                                local_hostname=socket.gethostname()),
            settings.connect_timeout_s)
    conn = IosConnection(client, udid, clock, settings, address)
    try:
        request = {"Label": client.label, "Request": "StartSession", "HostID": host_id,
                   "SystemBUID": system_buid}
        with mapped_errors("StartSession with the pre-erase HostID", usbmuxd=address):
            answer = await clock.wait_for(client.service.send_recv_plist(request),
                                          settings.command_timeout_s)
        if not isinstance(answer, dict):
            raise ProtocolError("StartSession: the answer is not a dictionary")
        error = answer.get("Error")
        if error == "InvalidHostID":
            return False
        if error is None and isinstance(answer.get("SessionID"), str):
            return True
        raise ProtocolError(f"StartSession with the pre-erase HostID answered "
                            f"{str(error)[:60]!r}")
    finally:
        await conn.close()


async def connect_ios(
    udid: str,
    address: UsbmuxAddress,
    record_dir: Path,
    clock: Clock,
    settings: IosSettings,
    *,
    pair: bool = True,
    pair_record: dict[str, Any] | None = None,
) -> IosConnection:
    """Open lockdown to `udid` through usbmuxd and start a TLS session.

    With `pair_record` given, only that record is tried (used to prove an old pairing is
    rejected); otherwise this bench's stored record, else a new pairing when `pair`.
    Returns an unpaired connection when nothing worked and `pair` is False.
    DeviceGone / DeviceTimeout / NotAuthorised / ProtocolError as the case may be.
    """
    if not UDID_RE.fullmatch(udid):
        raise BadDeviceData(f"not a UDID: {udid[:64]!r}")
    record = pair_record if pair_record is not None else await asyncio.to_thread(
        load_pair_record, record_dir, udid)
    with mapped_errors("connect to lockdownd", usbmuxd=address):
        client = await clock.wait_for(
            create_using_usbmux(
                serial=udid,
                autopair=False,
                # An empty dict keeps pymobiledevice3 from falling back to records that
                # usbmuxd or /var/lib/lockdown hold: only this bench's record is tried.
                pair_record=record if record is not None else {},
                pairing_records_cache_folder=record_dir,
                usbmux_address=address.library,
                local_hostname=socket.gethostname(),
            ),
            settings.connect_timeout_s,
        )
    conn = IosConnection(client, udid, clock, settings, address)
    try:
        if client.paired or not pair or pair_record is not None:
            return conn
        if record is not None:
            # The phone no longer knows our record (erased, or "Reset Location & Privacy").
            await asyncio.to_thread(delete_pair_record, record_dir, udid)
        await _pair(client, udid, clock, settings=settings, record_dir=record_dir,
                    address=address)
        with mapped_errors("StartSession", usbmuxd=address):
            ok = await clock.wait_for(client.validate_pairing(), settings.command_timeout_s)
        if not ok:
            # pymobiledevice3 reads a failed TLS handshake at StartSession as "pairing
            # removed on the phone"; right after the phone accepted this very pairing it
            # means the phone broke the session protocol.
            raise ProtocolError("the phone accepted the pairing, then the TLS session "
                                "with it failed")
        conn.client.service.max_frame_size = settings.max_frame_bytes
        return conn
    except BaseException:
        await conn.close()
        raise
