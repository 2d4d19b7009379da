"""sd_notify against a real unix datagram socket (a path and the abstract namespace)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from wipeagent.service.notify import Notifier, one_line, watchdog_interval


@pytest.fixture(params=["path", "abstract"])
def listener(request: pytest.FixtureRequest, tmp_path: Path
             ) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        path = str(tmp_path / "notify.sock")
        sock.bind(path)
        env_value = path
    else:
        name = f"wipeagent-test-{os.getpid()}-{id(sock)}"
        sock.bind(b"\0" + name.encode())
        env_value = "@" + name
    sock.settimeout(2)
    yield sock, env_value
    sock.close()


def recv(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(65536).decode()
    return dict(line.split("=", 1) for line in data.split("\n"))


def test_messages_reach_the_socket(listener: tuple[socket.socket, str]) -> None:
    sock, address = listener
    notifier = Notifier({"NOTIFY_SOCKET": address})
    assert notifier.enabled
    assert notifier.ready(status="idle")
    assert recv(sock) == {"READY": "1", "STATUS": "idle"}
    assert notifier.status("2 phones working")
    assert recv(sock) == {"STATUS": "2 phones working"}
    assert notifier.watchdog()
    assert recv(sock) == {"WATCHDOG": "1"}
    assert notifier.reloading()
    msg = recv(sock)
    assert msg["RELOADING"] == "1" and int(msg["MONOTONIC_USEC"]) > 0
    assert notifier.stopping()
    assert recv(sock) == {"STOPPING": "1"}
    notifier.close()


def test_status_cannot_forge_other_fields(listener: tuple[socket.socket, str]) -> None:
    sock, address = listener
    notifier = Notifier({"NOTIFY_SOCKET": address})
    # A phone-supplied string inside STATUS must not become a READY= or ERRNO= line.
    notifier.status("model X\nREADY=1\nERRNO=5" + "x" * 5000)
    msg = recv(sock)
    assert set(msg) == {"STATUS"}
    assert "\n" not in msg["STATUS"] and len(msg["STATUS"]) <= 200
    notifier.close()


def test_without_systemd_every_call_is_a_noop() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.ready() is False
    assert notifier.watchdog() is False


def test_a_gone_listener_never_raises(tmp_path: Path) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody.sock")})
    assert notifier.enabled
    assert notifier.watchdog() is False  # ENOENT swallowed: a wipe must not stop for it
    assert Notifier({"NOTIFY_SOCKET": "vsock:2:1234"}).enabled is False


def test_watchdog_interval() -> None:
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "junk"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    # For another process (a parent that forked us) it is not ours to answer.
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"},
                             pid=4242) is None
    assert watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "4242"},
                             pid=4242) == 1.0


def test_one_line() -> None:
    assert one_line("a\nb\x1b[31mc") == "a b [31mc"
    assert len(one_line("y" * 1000)) == 200
