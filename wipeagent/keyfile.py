"""Private key files: one check for every key the agent holds.

The station signing key (certificates.key), the uplink's TLS client key (uplink.client_key)
and the ADB host key (state_dir/adbkey) all pass through `open_private_key`:

- the file is a regular file, mode 0600 or 0400 (nobody but its owner may read it, and
  nothing may execute it), owned by the user the agent runs as (the process's effective
  uid: the service user) — a key that another account owns can be swapped by that
  account;
- a symbolic link is followed, and what counts is the file it ends at: that file must
  pass the same checks, and every link on the way must belong to the service user or to
  root (a link someone else owns can be re-pointed at a key of their choosing);
- the checks are made on the descriptor that is then read (fstat after open, the final
  component opened with O_NOFOLLOW), so the file cannot be swapped between check and use.

A refusal is a ConfigError: one line naming the key and the path, with a hint (the command
that fixes it). At start-up that is exit status 78 (configuration refused, not retried).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from wipeagent.errors import ConfigError

# Private keys are a few kilobytes; anything larger is not one of ours.
MAX_KEY_BYTES = 64 * 1024
ALLOWED_MODES = (0o600, 0o400)
_MAX_LINKS = 40  # as the kernel's own limit on symbolic links in a path


def _user(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _service_user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def resolve_key_path(path: Path, what: str) -> Path:
    """Follow `path` through its symbolic links (each owned by the service user or root)
    to the file it names; ConfigError for a missing file, a loop or a foreign link."""
    current = Path(os.path.abspath(path))
    euid = os.geteuid()
    for _ in range(_MAX_LINKS):
        try:
            info = os.lstat(current)
        except FileNotFoundError:
            shown = f"{path}" if current == Path(os.path.abspath(path)) else (
                f"{path} (a link to {current})")
            raise ConfigError(f"{what} {shown} does not exist",
                              hint="check the path in the configuration") from None
        except OSError as exc:
            raise ConfigError(f"cannot read {what} {current}: {exc.strerror}",
                              hint=f"check that {current} is readable by the service user "
                                   f"{_service_user()}") from exc
        if not stat.S_ISLNK(info.st_mode):
            # Directories on the way are resolved too, so the final path is canonical.
            return Path(os.path.realpath(current))
        if info.st_uid not in (euid, 0):
            raise ConfigError(
                f"{what} {path} goes through the symbolic link {current}, owned by "
                f"{_user(info.st_uid)}: someone else could re-point it",
                hint=f"replace the link by the key file itself, or: chown -h "
                     f"{_service_user()} {current}")
        link = os.readlink(current)
        current = Path(os.path.normpath(Path(os.path.realpath(current.parent)) / link))
    raise ConfigError(f"{what} {path}: too many symbolic links",
                      hint="point the configuration at the key file itself")


def _check_descriptor(fd: int, shown: str, what: str, target: Path) -> None:
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{what} {shown} is not a regular file",
                          hint="point the configuration at the key file itself")
    euid = os.geteuid()
    if info.st_uid != euid:
        raise ConfigError(
            f"{what} {shown} belongs to {_user(info.st_uid)}, not to the service user "
            f"{_user(euid)}",
            hint=f"chown {_service_user()} {target}")
    mode = stat.S_IMODE(info.st_mode)
    if mode not in ALLOWED_MODES:
        loose = " (readable by others)" if mode & 0o044 else ""
        raise ConfigError(
            f"{what} {shown} has mode {mode:04o}{loose}; it must be 0600 or 0400",
            hint=f"chmod 600 {target}")


@dataclass(frozen=True)
class KeyFile:
    """A key file opened and checked: its descriptor and the file it resolved to."""

    fd: int
    target: Path

    @property
    def proc_path(self) -> str:
        """A name a library can open that is the very file checked (Linux /proc)."""
        return f"/proc/self/fd/{self.fd}"


@contextlib.contextmanager
def open_private_key(path: Path | str, what: str) -> Iterator[KeyFile]:
    """The key file at `path`, opened and checked (see the module doc); ConfigError if
    it must not be used. `what` names it in errors ("station key", ...)."""
    path = Path(path)
    target = resolve_key_path(path, what)
    shown = str(path) if target == Path(os.path.abspath(path)) else (
        f"{path} (a link to {target})")
    try:
        fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(f"cannot open {what} {shown}: {exc.strerror}",
                          hint=f"check that {target} is a key file readable by the service "
                               f"user {_service_user()}") from exc
    try:
        _check_descriptor(fd, shown, what, target)
        yield KeyFile(fd, target)
    finally:
        os.close(fd)


def read_private_key(path: Path | str, what: str) -> bytes:
    """The bytes of a checked key file (at most MAX_KEY_BYTES)."""
    with open_private_key(path, what) as key:
        data = b""
        while len(data) <= MAX_KEY_BYTES:
            chunk = os.read(key.fd, MAX_KEY_BYTES + 1 - len(data))
            if not chunk:
                break
            data += chunk
    if len(data) > MAX_KEY_BYTES:
        raise ConfigError(f"{what} {path} is larger than {MAX_KEY_BYTES} bytes: not a key",
                          hint="point the configuration at the key file itself")
    return data
