"""One agent per bench: an exclusive lock on the state directory.

Two agents on one state directory would share one journal, one station chain, one set of
pair records and one control socket; the second would take the socket over and delete
it on exit, leaving the first unreachable. So `wipeagent run` takes an exclusive,
non-blocking `flock(2)` on `<state_dir>/agent.lock` before it opens anything else there
and holds it for the life of the process. The kernel drops the lock when the process
ends in any way (exit, SIGKILL, crash), so a stale lock cannot block a restart; the PID
written into the file is only there to name the holder in the refusal.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType

from wipeagent.errors import StateDirBusy

LOCK_NAME = "agent.lock"


class StateDirLock:
    """The exclusive lock on a state directory (a context manager; `acquire` / `release`)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise StateDirBusy naming the holder's PID. OSError (the
        directory cannot be written) is the caller's to report."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"pid {holder}" if holder else "another process"
            raise StateDirBusy(
                f"another wipeagent agent ({who}) is already running on state directory "
                f"{self.path.parent} (lock {self.path})") from None
        except BaseException:
            os.close(fd)
            raise
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:
            # A full disk must not stop the agent here: the lock itself is what counts.
            pass
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (the file stays: unlinking it would race a starting agent)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)

    def __enter__(self) -> StateDirLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
