"""ADB wire format: packet headers, commands, version constants and Android RSA keys.

Everything here is pure (no I/O) so it can be checked on its own. The layouts follow AOSP
`adb/protocol.txt`, `adb/adb.h`, `adb/file_sync_protocol.h`, `adb/shell_protocol.h` and
`libcrypto_utils/android_pubkey.cpp`.
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils


def _cmd(name: bytes) -> int:
    """A 4-letter command as the little-endian u32 that goes on the wire."""
    return int.from_bytes(name, "little")


A_SYNC: Final = _cmd(b"SYNC")
A_CNXN: Final = _cmd(b"CNXN")
A_AUTH: Final = _cmd(b"AUTH")
A_OPEN: Final = _cmd(b"OPEN")
A_OKAY: Final = _cmd(b"OKAY")
A_CLSE: Final = _cmd(b"CLSE")
A_WRTE: Final = _cmd(b"WRTE")

COMMAND_NAMES: Final = {
    A_SYNC: "SYNC",
    A_CNXN: "CNXN",
    A_AUTH: "AUTH",
    A_OPEN: "OPEN",
    A_OKAY: "OKAY",
    A_CLSE: "CLSE",
    A_WRTE: "WRTE",
}

A_VERSION_MIN: Final = 0x01000000
"""The original protocol version; every packet's data checksum must be checked."""
A_VERSION_SKIP_CHECKSUM: Final = 0x01000001
"""From this version on, peers may leave the checksum at 0 and do not check it."""
A_VERSION: Final = A_VERSION_SKIP_CHECKSUM
"""The newest version this device speaks."""

MAX_PAYLOAD_V1: Final = 4 * 1024
MAX_PAYLOAD: Final = 256 * 1024
"""The device side's largest packet payload (adbd's MAX_PAYLOAD for USB/TCP)."""

AUTH_TOKEN: Final = 1
AUTH_SIGNATURE: Final = 2
AUTH_RSAPUBLICKEY: Final = 3
TOKEN_SIZE: Final = 20

HEADER = struct.Struct("<6I")
HEADER_SIZE: Final = HEADER.size  # 24


@dataclass(frozen=True)
class PacketHeader:
    """A parsed 24-byte ADB message header (fields as on the wire)."""

    command: int
    arg0: int
    arg1: int
    data_length: int
    data_check: int
    magic: int

    @property
    def name(self) -> str:
        """The command's 4-letter name, or its hex value if unknown (for logs)."""
        return COMMAND_NAMES.get(self.command, f"0x{self.command:08x}")


def parse_header(raw: bytes) -> PacketHeader:
    """Unpack a header; no validation (see `header_problem`)."""
    return PacketHeader(*HEADER.unpack(raw))


def checksum(data: bytes) -> int:
    """ADB's "crc32": the byte sum of the payload, modulo 2**32."""
    return sum(data) & 0xFFFFFFFF


def header_problem(header: PacketHeader, max_payload: int) -> str | None:
    """Why a header received from a peer is unacceptable, or None if it is fine."""
    if header.magic != header.command ^ 0xFFFFFFFF:
        return f"bad magic 0x{header.magic:08x} for command 0x{header.command:08x}"
    if header.command not in COMMAND_NAMES:
        return f"unknown command 0x{header.command:08x}"
    if header.data_length > max_payload:
        return f"payload of {header.data_length} bytes exceeds the limit of {max_payload}"
    return None


def pack_packet(
    command: int,
    arg0: int,
    arg1: int,
    data: bytes = b"",
    *,
    data_check: int | None = None,
    magic: int | None = None,
    data_length: int | None = None,
) -> bytes:
    """Header + payload as one bytes object (one write keeps packets whole on the stream).

    The keyword overrides exist only for fault injection (wrong checksum, bad magic,
    a length that lies)."""
    header = HEADER.pack(
        command,
        arg0 & 0xFFFFFFFF,
        arg1 & 0xFFFFFFFF,
        len(data) if data_length is None else data_length,
        checksum(data) if data_check is None else data_check,
        (command ^ 0xFFFFFFFF) if magic is None else magic,
    )
    return header + data


# --- Android RSA public keys (adb_keys / RSAPUBLICKEY format) --------------------------

ANDROID_PUBKEY_MODULUS_WORDS: Final = 64
ANDROID_PUBKEY_MODULUS_SIZE: Final = ANDROID_PUBKEY_MODULUS_WORDS * 4
_ANDROID_PUBKEY = struct.Struct(
    f"<II{ANDROID_PUBKEY_MODULUS_SIZE}s{ANDROID_PUBKEY_MODULUS_SIZE}sI"
)
MAX_PUBKEY_MESSAGE: Final = 2048
"""Longest RSAPUBLICKEY message accepted: 700 bytes of base64 plus a generous comment."""


class InvalidAndroidKey(ValueError):
    """The RSAPUBLICKEY payload is not a well-formed Android RSA-2048 public key."""


def decode_android_pubkey(message: bytes) -> rsa.RSAPublicKey:
    """Parse `base64(struct RSAPublicKey) [' ' user@host] [NUL]` into a public key.

    Checks the redundant Montgomery fields too (n0inv, rr), so a corrupted or hand-made
    key is rejected rather than silently half-trusted.
    """
    if len(message) > MAX_PUBKEY_MESSAGE:
        raise InvalidAndroidKey(f"key message of {len(message)} bytes is too long")
    text = message.split(b"\0", 1)[0].strip()
    b64 = text.split(b" ", 1)[0]
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidAndroidKey(f"key is not valid base64: {exc}") from exc
    if len(raw) != _ANDROID_PUBKEY.size:
        raise InvalidAndroidKey(f"key struct is {len(raw)} bytes, expected {_ANDROID_PUBKEY.size}")
    words, n0inv, modulus, rr, exponent = _ANDROID_PUBKEY.unpack(raw)
    if words != ANDROID_PUBKEY_MODULUS_WORDS:
        raise InvalidAndroidKey(f"modulus has {words} words, expected 64")
    if exponent not in (3, 65537):
        raise InvalidAndroidKey(f"unsupported public exponent {exponent}")
    n = int.from_bytes(modulus, "little")
    if n.bit_length() != 2048 or n % 2 == 0:
        raise InvalidAndroidKey("modulus is not an odd 2048-bit number")
    if n0inv != (-pow(n, -1, 1 << 32)) % (1 << 32):
        raise InvalidAndroidKey("n0inv does not match the modulus")
    if int.from_bytes(rr, "little") != pow(2, 4096, n):
        raise InvalidAndroidKey("rr does not match the modulus")
    return rsa.RSAPublicNumbers(exponent, n).public_key()


def verify_auth_signature(key: rsa.RSAPublicKey, token: bytes, signature: bytes) -> bool:
    """Check an AUTH SIGNATURE the way adbd does: `RSA_verify(NID_sha1, token, ...)`.

    The 20-byte token itself stands in for the SHA-1 digest (it is never hashed), and
    the signature is PKCS#1 v1.5 with the SHA-1 DigestInfo prefix."""
    if len(token) != TOKEN_SIZE or len(signature) != key.key_size // 8:
        return False
    try:
        key.verify(signature, token, padding.PKCS1v15(), utils.Prehashed(hashes.SHA1()))  # noqa: S303 - ADB's fixed algorithm
    except InvalidSignature:
        return False
    return True


# --- shell protocol v2 (adb/shell_protocol.h) ------------------------------------------

SHELL_ID_STDIN: Final = 0
SHELL_ID_STDOUT: Final = 1
SHELL_ID_STDERR: Final = 2
SHELL_ID_EXIT: Final = 3
SHELL_ID_CLOSE_STDIN: Final = 4
SHELL_ID_WINDOW_SIZE: Final = 5
SHELL_HEADER = struct.Struct("<BI")


def shell_packet(packet_id: int, data: bytes) -> bytes:
    """One shell-protocol-v2 packet: id (u8), length (u32 LE), data."""
    return SHELL_HEADER.pack(packet_id, len(data)) + data


# --- file sync protocol (adb/file_sync_protocol.h) -------------------------------------


def sync_id(name: bytes) -> int:
    """A sync message id (same little-endian packing as packet commands)."""
    return _cmd(name)


ID_LSTAT_V1: Final = sync_id(b"STAT")
ID_STAT_V2: Final = sync_id(b"STA2")
ID_LSTAT_V2: Final = sync_id(b"LST2")
ID_LIST_V1: Final = sync_id(b"LIST")
ID_LIST_V2: Final = sync_id(b"LIS2")
ID_DENT_V1: Final = sync_id(b"DENT")
ID_DENT_V2: Final = sync_id(b"DNT2")
ID_SEND: Final = sync_id(b"SEND")
ID_RECV: Final = sync_id(b"RECV")
ID_DONE: Final = sync_id(b"DONE")
ID_DATA: Final = sync_id(b"DATA")
ID_OKAY: Final = sync_id(b"OKAY")
ID_FAIL: Final = sync_id(b"FAIL")
ID_QUIT: Final = sync_id(b"QUIT")

SYNC_REQUEST = struct.Struct("<II")  # id, path length (or size, or mtime)
SYNC_STAT_V1 = struct.Struct("<IIII")  # id, mode, size, mtime
SYNC_STAT_V2 = struct.Struct("<IIQQIIIIQqqq")  # id, error, dev, ino, mode, nlink, uid, gid,
#                                                size, atime, mtime, ctime
SYNC_DENT_V1 = struct.Struct("<IIIII")  # id, mode, size, mtime, namelen
SYNC_DENT_V2 = struct.Struct("<IIQQIIIIQqqqI")  # stat_v2 fields + namelen
SYNC_DATA_MAX: Final = 64 * 1024
SYNC_PATH_MAX: Final = 1024
