"""The sd_notify protocol: a service tells systemd it is ready, what it is doing, and that
it is still alive.

Why not a package: the protocol is one datagram of `KEY=VALUE` lines sent to the unix
socket named by $NOTIFY_SOCKET (a path, or `@name` for the abstract namespace), and
systemd documents it as stable and meant to be reimplemented (sd_notify(3), "Notes").
The PyPI options were `sdnotify` (unmaintained since 2017), `systemd-python` (a C
extension built against libsystemd-dev: a compiler on every bench PC) and `cysystemd`
(a 2.4 MB binary wheel bundling libsystemd); all three are blocking calls. Sending one
non-blocking datagram needs none of that.

Outside systemd ($NOTIFY_SOCKET unset) every call is a no-op, so `wipeagent run` behaves
the same in a terminal.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)

# systemd accepts notification datagrams of any size its socket buffer takes; STATUS is a
# one-line summary, so keep every message far below the smallest default buffer.
MAX_MESSAGE_BYTES = 4096
MAX_STATUS_CHARS = 200


def _address(raw: str) -> str | bytes | None:
    """The socket address in $NOTIFY_SOCKET: an absolute path or '@' + abstract name."""
    if raw.startswith("@") and len(raw) > 1:
        return b"\0" + raw[1:].encode()
    if raw.startswith("/"):
        return raw
    # vsock:CID:PORT (systemd 254+, VMs) is not something a bench PC uses.
    return None


def one_line(text: str, limit: int = MAX_STATUS_CHARS) -> str:
    """A value safe inside a notification: no newline can start a forged KEY= line, no
    control characters, bounded length."""
    clean = "".join(ch if ch.isprintable() else " " for ch in text)
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"


class Notifier:
    """Sends notifications to systemd through $NOTIFY_SOCKET (a no-op without it).

    Sending never blocks and never raises: a notification lost because systemd is busy
    must not stop a wipe. The watchdog notices a silent service anyway.
    """

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        raw = env.get("NOTIFY_SOCKET", "")
        self.address = _address(raw) if raw else None
        if raw and self.address is None:
            log.warning("NOTIFY_SOCKET=%r is not a unix socket address; not notifying",
                        one_line(raw))
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        """True when a service manager listens."""
        return self.address is not None

    def send(self, **fields: str | int) -> bool:
        """Send one notification (`ready=1` -> `READY=1`); True if it was sent."""
        if self.address is None:
            return False
        message = "\n".join(f"{key.upper()}={value}" for key, value in fields.items())
        data = message.encode("utf-8", "replace")[:MAX_MESSAGE_BYTES]
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(data, self.address)
        except OSError as exc:
            log.debug("sd_notify %s failed: %s", message.split("=", 1)[0], exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """Start-up is complete (Type=notify: systemd considers the unit started)."""
        if status is None:
            return self.send(ready=1)
        return self.send(ready=1, status=one_line(status))

    def status(self, text: str) -> bool:
        """A one-line description shown by `systemctl status`."""
        return self.send(status=one_line(text))

    def watchdog(self) -> bool:
        """Tell the watchdog the service is alive."""
        return self.send(watchdog=1)

    def reloading(self) -> bool:
        """A configuration reload started (READY=1 ends it)."""
        # MONOTONIC_USEC lets systemd 253+ (Type=notify-reload) match this reload to the
        # signal it sent; older versions ignore it.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send(reloading=1, monotonic_usec=usec)

    def stopping(self, status: str | None = None) -> bool:
        """The service is shutting down."""
        if status is None:
            return self.send(stopping=1)
        return self.send(stopping=1, status=one_line(status))

    def close(self) -> None:
        """Release the socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval(env: Mapping[str, str] | None = None, pid: int | None = None
                      ) -> float | None:
    """Real seconds between watchdog pings (half of $WATCHDOG_USEC), or None when systemd
    wants none. $WATCHDOG_PID, when set, must be this process (sd_watchdog_enabled(3))."""
    env = os.environ if env is None else env
    raw_usec = env.get("WATCHDOG_USEC", "")
    if not raw_usec.isdigit() or int(raw_usec) == 0:
        return None
    raw_pid = env.get("WATCHDOG_PID", "")
    if raw_pid and raw_pid != str(os.getpid() if pid is None else pid):
        return None
    return int(raw_usec) / 1_000_000 / 2
