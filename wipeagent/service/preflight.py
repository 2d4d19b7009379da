"""Start-up checks of `wipeagent run`: everything a person can fix is refused in one line.

A state directory that cannot be created, written or has no room left, a key file that
cannot be read, a development CA on a production bench: each is a ConfigError naming the
path and what to do (exit 78, which systemd does not restart: restarting would only fail
again), never a traceback and exit 1 in a restart loop.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
from pathlib import Path

from wipeagent.config import AgentConfig
from wipeagent.errors import StartupRefused, StoreError

log = logging.getLogger(__name__)

# Below this much free space the journal cannot take a session's steps and certificate
# (a certificate with its PDF-free JSON is a few KiB; SQLite's WAL needs room to grow).
MIN_FREE_BYTES = 4 << 20
PROBE_NAME = ".wipeagent-write-test"

STATE_DIR_HINT = ("create it for the agent's user, e.g. install -d -o wipeagent -g wipeagent "
                  "-m 0750 {path}")
FULL_HINT = "free space on the file system that holds {path} (df -h {path})"
PKI_HINT = (
    "create the station key and CSR with `wipeagent pki new-station --out /etc/wipeagent/pki "
    "--station-id ID`, have the CSR signed by your organisation CA (`wipeagent pki "
    "sign-station`), then set [certificates] key and chain; for a test bench only, set "
    "[certificates] allow_development_pki = true")

# sqlite3 result codes (sqlite3.h) that a person fixes on the file system.
_SQLITE_FIXABLE = {3: "permission denied", 8: "read-only", 13: "disk full",
                   14: "cannot open the file"}


def os_error(exc: OSError, what: str, path: Path | str | None = None) -> StartupRefused:
    """A ConfigError for an OSError met at start-up, naming the path, with a hint."""
    where = Path(exc.filename) if exc.filename else Path(path or "?")
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = FULL_HINT.format(path=where.parent if where.suffix else where)
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = (f"give the agent's user write access to {where} (chown / chmod), or point "
                "the configuration elsewhere")
    elif exc.errno == errno.ENOENT:
        hint = f"create {where.parent} or fix the path in the configuration"
    else:
        hint = f"check {where}"
    return StartupRefused(f"{what} {where}: {reason}", hint=hint)


def prepare_state_dir(path: Path) -> None:
    """Create the state directory if needed and prove it takes writes (ConfigError)."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o750)
    except OSError as exc:
        raise StartupRefused(f"state directory {path}: cannot create it: {exc.strerror}",
                          hint=STATE_DIR_HINT.format(path=path)) from exc
    if not path.is_dir():
        raise StartupRefused(f"state directory {path} is not a directory",
                          hint="set state_dir to a directory")
    probe = path / PROBE_NAME
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, b"\0" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StartupRefused(f"state directory {path} is full: {exc.strerror}",
                              hint=FULL_HINT.format(path=path)) from exc
        raise StartupRefused(f"state directory {path} is not writable: {exc.strerror}",
                          hint=f"give the agent's user write access: chown -R wipeagent: "
                               f"{path}") from exc
    try:
        st = os.statvfs(path)
    except OSError:
        return
    free = st.f_bavail * st.f_frsize
    if free < MIN_FREE_BYTES:
        raise StartupRefused(
            f"state directory {path} is full: {free // 1024} KiB free, the journal needs "
            f"at least {MIN_FREE_BYTES >> 20} MiB", hint=FULL_HINT.format(path=path))


def uses_development_pki(config: AgentConfig) -> bool:
    """Whether the configuration asks for the auto-created development PKI (no station key
    and chain configured) or declares its chain development."""
    cc = config.certificates
    return not (cc.key or cc.chain) or cc.development


def check_development_pki(config: AgentConfig, development: bool) -> None:
    """Refuse to sign under a development CA without the explicit opt-in; with it, say so
    loudly (every certificate says so too)."""
    if not development:
        return
    if not config.certificates.allow_development_pki:
        what = ("no station key is configured ([certificates] key and chain are empty), so "
                "certificates would be signed by an auto-created development CA"
                if not (config.certificates.key or config.certificates.chain) else
                f"the station chain {config.certificates.chain} is a development chain")
        raise StartupRefused(f"refusing to sign with a development CA: {what}", hint=PKI_HINT)
    log.warning("DEVELOPMENT PKI: certificates are signed by a development CA and marked "
                "\"development\"; they are not valid for production "
                "([certificates] allow_development_pki = true)")


def store_error(exc: StoreError, journal: Path) -> StartupRefused | None:
    """A journal that cannot be opened because of the file system (permissions, read-only,
    full) is a ConfigError a person fixes; anything else stays a StoreError."""
    cause = exc.__cause__
    code = getattr(cause, "sqlite_errorcode", None) if isinstance(cause, sqlite3.Error) else None
    if code is None:
        return None
    reason = _SQLITE_FIXABLE.get(code & 0xFF)
    if reason is None:
        return None
    hint = (FULL_HINT.format(path=journal.parent) if code & 0xFF == 13 else
            f"give the agent's user write access to {journal.parent} and {journal}")
    return StartupRefused(f"{exc} ({reason})", hint=hint)
