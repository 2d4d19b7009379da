"""The `sync:` service (file transfer) of the fake adbd, per AOSP SYNC.TXT and
`daemon/file_sync_service.cpp`.

A sync session is a byte stream of requests `id (4) + u32 length + payload`. Requests are
not aligned with ADB packets, so the session reads from a stream buffer, never from
packets. Every length the client sends is checked before anything is read or stored.
"""

from __future__ import annotations

import errno
import logging
import stat as stat_mod
import zlib
from typing import Protocol

from wipeagent_sim.adb.backend import AdbDeviceBackend, FileStat
from wipeagent_sim.adb.protocol import (
    ID_DATA,
    ID_DENT_V1,
    ID_DENT_V2,
    ID_DONE,
    ID_FAIL,
    ID_LIST_V1,
    ID_LIST_V2,
    ID_LSTAT_V1,
    ID_LSTAT_V2,
    ID_OKAY,
    ID_QUIT,
    ID_RECV,
    ID_SEND,
    ID_STAT_V2,
    SYNC_DATA_MAX,
    SYNC_DENT_V1,
    SYNC_DENT_V2,
    SYNC_PATH_MAX,
    SYNC_REQUEST,
    SYNC_STAT_V1,
    SYNC_STAT_V2,
)

log = logging.getLogger(__name__)

_NAME_MAX = 255  # the host refuses longer names (Linux NAME_MAX)
_SHELL_UID = 2000  # files the shell user sees are reported as owned by shell:shell


class SyncChannel(Protocol):
    """What the sync service needs from an ADB stream."""

    async def read_exactly(self, n: int) -> bytes:
        """Exactly `n` bytes from the client (bounded in time by the stream)."""
        ...

    async def write(self, data: bytes) -> None:
        """Send bytes to the client (split into packets and flow-controlled)."""
        ...


class _SyncFailed(Exception):
    """Send FAIL with this message and end the session (as adbd does)."""


def _fail(message: str) -> bytes:
    data = message.encode("utf-8", "replace")[:1024]
    return SYNC_REQUEST.pack(ID_FAIL, len(data)) + data


def _ino(path: str) -> int:
    # A stable fake inode number, so repeated stats of one path agree.
    return zlib.crc32(path.encode("utf-8", "surrogatepass")) or 1


def _stat_v2(msg_id: int, path: str, st: FileStat | None) -> bytes:
    if st is None:
        return SYNC_STAT_V2.pack(msg_id, errno.ENOENT, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    return SYNC_STAT_V2.pack(
        msg_id, 0, 1, _ino(path), st.mode & 0xFFFFFFFF, 1, _SHELL_UID, _SHELL_UID,
        max(0, st.size), st.mtime, st.mtime, st.mtime,
    )


def _stat_v1(st: FileStat | None) -> bytes:
    if st is None:
        # adbd reports a missing file as all zeros; the host cannot tell why.
        return SYNC_STAT_V1.pack(ID_LSTAT_V1, 0, 0, 0)
    return SYNC_STAT_V1.pack(
        ID_LSTAT_V1, st.mode & 0xFFFFFFFF, min(max(0, st.size), 0xFFFFFFFF), st.mtime & 0xFFFFFFFF
    )


def _valid_name(name: str) -> bytes | None:
    raw = name.encode("utf-8", "surrogateescape")
    if not raw or len(raw) > _NAME_MAX or b"/" in raw or b"\0" in raw:
        return None
    return raw


def _listing(path: str, entries: list[tuple[str, FileStat]] | None, v2: bool) -> bytes:
    out = bytearray()
    for name, st in entries or []:
        raw = _valid_name(name)
        if raw is None:
            log.warning("sync LIST %r: skipping an invalid entry name %r", path, name)
            continue
        if v2:
            out += SYNC_DENT_V2.pack(
                ID_DENT_V2, 0, 1, _ino(f"{path}/{name}"), st.mode & 0xFFFFFFFF, 1,
                _SHELL_UID, _SHELL_UID, max(0, st.size), st.mtime, st.mtime, st.mtime, len(raw),
            )
        else:
            out += SYNC_DENT_V1.pack(
                ID_DENT_V1, st.mode & 0xFFFFFFFF, min(max(0, st.size), 0xFFFFFFFF),
                st.mtime & 0xFFFFFFFF, len(raw),
            )
        out += raw
    # DONE is a full-size dent record of the same version: the host reads sizeof(dent).
    if v2:
        out += SYNC_DENT_V2.pack(ID_DONE, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    else:
        out += SYNC_DENT_V1.pack(ID_DONE, 0, 0, 0, 0)
    return bytes(out)


async def _read_path(channel: SyncChannel, length: int) -> str:
    if length > SYNC_PATH_MAX:
        raise _SyncFailed(f"path too long: {length}")
    raw = await channel.read_exactly(length)
    if b"\0" in raw:
        raise _SyncFailed("path contains a NUL byte")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _SyncFailed("path is not valid UTF-8") from exc


async def _receive_file(
    channel: SyncChannel, backend: AdbDeviceBackend, spec: str, max_bytes: int
) -> bytes:
    path, comma, mode_text = spec.rpartition(",")
    if not comma or not path or not mode_text.isdigit():
        raise _SyncFailed(f"bad SEND target {spec!r}: expected PATH,MODE")
    mode = int(mode_text)
    if mode > 0xFFFFFFFF:
        raise _SyncFailed(f"bad mode {mode_text}")
    if stat_mod.S_ISLNK(mode):
        raise _SyncFailed("symbolic links are not supported by the simulator")
    if stat_mod.S_IFMT(mode) == 0:
        mode |= stat_mod.S_IFREG
    data = bytearray()
    while True:
        msg_id, value = SYNC_REQUEST.unpack(await channel.read_exactly(SYNC_REQUEST.size))
        if msg_id == ID_DATA:
            if value > SYNC_DATA_MAX:
                raise _SyncFailed(f"DATA chunk of {value} bytes exceeds {SYNC_DATA_MAX}")
            if len(data) + value > max_bytes:
                raise _SyncFailed(f"file exceeds the simulator's limit of {max_bytes} bytes")
            data += await channel.read_exactly(value)
        elif msg_id == ID_DONE:
            error = backend.write_file(path, bytes(data), mode, value)
            if error is not None:
                raise _SyncFailed(error)
            return SYNC_REQUEST.pack(ID_OKAY, 0)
        else:
            raise _SyncFailed(f"unexpected message 0x{msg_id:08x} during SEND")


async def serve_sync(
    channel: SyncChannel, backend: AdbDeviceBackend, *, max_push_bytes: int
) -> None:
    """Run one sync session until QUIT, a failure (FAIL is sent), or the stream ends."""
    try:
        while True:
            msg_id, length = SYNC_REQUEST.unpack(await channel.read_exactly(SYNC_REQUEST.size))
            if msg_id == ID_QUIT:
                return
            if msg_id not in (
                ID_LSTAT_V1, ID_STAT_V2, ID_LSTAT_V2, ID_LIST_V1, ID_LIST_V2, ID_RECV, ID_SEND,
            ):
                raise _SyncFailed(f"unknown sync command 0x{msg_id:08x}")
            path = await _read_path(channel, length)
            if msg_id == ID_LSTAT_V1:
                await channel.write(_stat_v1(backend.stat(path)))
            elif msg_id in (ID_STAT_V2, ID_LSTAT_V2):
                # The simulated file system has no symbolic links, so stat == lstat.
                await channel.write(_stat_v2(msg_id, path, backend.stat(path)))
            elif msg_id in (ID_LIST_V1, ID_LIST_V2):
                await channel.write(_listing(path, backend.listdir(path), msg_id == ID_LIST_V2))
            elif msg_id == ID_RECV:
                content = backend.read_file(path)
                if content is None:
                    raise _SyncFailed(f"open failed: {path}: No such file or directory")
                for offset in range(0, len(content), SYNC_DATA_MAX):
                    chunk = content[offset : offset + SYNC_DATA_MAX]
                    await channel.write(SYNC_REQUEST.pack(ID_DATA, len(chunk)) + chunk)
                await channel.write(SYNC_REQUEST.pack(ID_DONE, 0))
            else:  # ID_SEND
                await channel.write(
                    await _receive_file(channel, backend, path, max_push_bytes)
                )
    except _SyncFailed as exc:
        log.info("sync failed: %s", exc)
        await channel.write(_fail(str(exc)))
