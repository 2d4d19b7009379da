"""Start-up guardrails of `wipeagent run` (the real process): one agent per state
directory, no development CA without the opt-in, and every start-up failure a person can
fix as one line with the path and a hint, exit 78 (never a traceback, never exit 1)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from wipeagent.certs import pki
from wipeagent.control.client import ControlClient
from wipeagent.runner import EXIT_BUSY, EXIT_CONFIG

CONFIG = """\
state_dir = "{state}"
clock_speed = 20
[station]
id = "bench-09"
[policy]
erase = "auto"
[android]
endpoints = ["127.0.0.1:9"]
[usb]
enabled = false
[ios]
enabled = false
[certificates]
{certificates}
[control]
socket = "{sock}"
group = ""
[page]
listen = "127.0.0.1:0"
"""

DEV_OK = "allow_development_pki = true"


def write_config(tmp_path: Path, *, state: Path | None = None, certificates: str = DEV_OK,
                 name: str = "agent.toml", sock: Path | None = None) -> Path:
    path = tmp_path / name
    path.write_text(CONFIG.format(state=state or tmp_path / "state", certificates=certificates,
                                  sock=sock or tmp_path / "ctl.sock"), encoding="utf-8")
    return path


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}


def run_once(config: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`wipeagent run` expected to refuse at start (it would otherwise run forever)."""
    return subprocess.run(
        [sys.executable, "-m", "wipeagent.runner", "run", "--config", str(config),
         "--log-format", "console"], capture_output=True, text=True, timeout=timeout,
        env=env(), check=False)


def assert_one_line_refusal(proc: subprocess.CompletedProcess[str], code: int,
                            *needles: str) -> str:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "ERROR" in line or "not started"
             in line or "refused" in line]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "hint:" in lines[0], lines[0]
    return lines[0]


@contextlib.contextmanager
def agent_process(config: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "wipeagent.runner", "run", "--config", str(config),
             "--log-format", "console"], stdout=subprocess.DEVNULL, stderr=out, env=env())
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def wait_started(proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "started: station" in log.read_text(errors="replace"):
            return
        assert proc.poll() is None, log.read_text(errors="replace")
        time.sleep(0.05)
    raise AssertionError(log.read_text(errors="replace"))


async def test_a_second_agent_on_the_same_state_directory_refuses(tmp_path: Path) -> None:
    first_config = write_config(tmp_path)
    # The second one even uses another control socket path: the lock is on the state
    # directory, not on the socket.
    second_config = write_config(tmp_path, name="second.toml", sock=tmp_path / "other.sock")
    same_socket = write_config(tmp_path, name="third.toml")
    log = tmp_path / "first.log"
    with agent_process(first_config, log) as first:
        wait_started(first, log)
        for config in (second_config, same_socket):
            proc = run_once(config)
            line = assert_one_line_refusal(proc, EXIT_BUSY, "already running",
                                           str(tmp_path / "state"), f"pid {first.pid}")
            assert "systemctl stop wipeagent" in line
        # The first agent kept its socket and answers.
        assert first.poll() is None
        async with ControlClient(str(tmp_path / "ctl.sock")) as client:
            status = await client.status()
        assert status["station_id"] == "bench-09"
        assert status["development_pki"] is True
        first.send_signal(signal.SIGTERM)
        assert first.wait(20) == 0
    assert not (tmp_path / "other.sock").exists()
    # With the first one gone the lock is free again (a kill -9 frees it as well).
    with agent_process(second_config, tmp_path / "second.log") as second:
        wait_started(second, tmp_path / "second.log")
        second.send_signal(signal.SIGKILL)
        second.wait(10)
    with agent_process(first_config, tmp_path / "again.log") as again:
        wait_started(again, tmp_path / "again.log")


async def test_another_agent_listening_on_the_control_socket_keeps_it(
        tmp_path: Path) -> None:
    """Two state directories, one control socket path: the second refuses instead of
    taking the socket over (and deleting it on exit)."""
    first_config = write_config(tmp_path)
    other = write_config(tmp_path, state=tmp_path / "state2", name="other.toml")
    log = tmp_path / "first.log"
    with agent_process(first_config, log) as first:
        wait_started(first, log)
        proc = run_once(other)
        assert proc.returncode == EXIT_CONFIG, proc.stderr
        assert "is in use by another agent" in proc.stderr
        async with ControlClient(str(tmp_path / "ctl.sock")) as client:
            assert (await client.status())["station_id"] == "bench-09"


def test_development_ca_without_opt_in_is_refused_with_a_hint(tmp_path: Path) -> None:
    config = write_config(tmp_path, certificates="")
    proc = run_once(config)
    assert_one_line_refusal(proc, EXIT_CONFIG, "refusing to sign with a development CA",
                            "wipeagent pki new-station", "allow_development_pki = true")
    assert not (tmp_path / "state" / "dev-pki").exists()  # nothing was created


def test_a_development_chain_configured_as_station_key_is_refused(tmp_path: Path) -> None:
    ca = pki.init_ca(tmp_path / "ca", organisation="Test", development=True)
    station = pki.new_station(tmp_path / "station", station_id="bench-09")
    chain = pki.sign_station(station.csr, ca_key_path=ca.key, ca_cert_path=ca.cert,
                             out_path=tmp_path / "station" / "station.pem")
    config = write_config(tmp_path, certificates=f'key = "{station.key}"\n'
                                                  f'chain = "{chain}"')
    proc = run_once(config)
    assert_one_line_refusal(proc, EXIT_CONFIG, f"the station chain {chain} is a "
                            "development chain")


def test_a_missing_station_key_is_refused_with_its_path(tmp_path: Path) -> None:
    config = write_config(tmp_path, certificates=f'key = "{tmp_path}/nope.key"\n'
                                                  f'chain = "{tmp_path}/nope.pem"')
    proc = run_once(config)
    assert_one_line_refusal(proc, EXIT_CONFIG, f"{tmp_path}/nope.key")


def test_a_loose_station_key_is_refused_with_the_fix(tmp_path: Path) -> None:
    ca = pki.init_ca(tmp_path / "ca", organisation="Test")
    station = pki.new_station(tmp_path / "station", station_id="bench-09")
    chain = pki.sign_station(station.csr, ca_key_path=ca.key, ca_cert_path=ca.cert,
                             out_path=tmp_path / "station" / "station.pem")
    station.key.chmod(0o644)
    config = write_config(tmp_path, certificates=f'key = "{station.key}"\n'
                                                  f'chain = "{chain}"')
    proc = run_once(config)
    line = assert_one_line_refusal(proc, EXIT_CONFIG, str(station.key))
    assert f"chmod 600 {station.key}" in line


def test_a_state_directory_that_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    config = write_config(tmp_path, state=blocker / "state")
    proc = run_once(config)
    assert_one_line_refusal(proc, EXIT_CONFIG, f"state directory {blocker / 'state'}",
                            "install -d")


@contextlib.contextmanager
def mounted_tmpfs(where: Path, options: str) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_full_state_directory_is_refused(tmp_path: Path) -> None:
    with mounted_tmpfs(tmp_path / "small", "size=256k") as small:
        (small / "filler").write_bytes(b"\0" * (200 * 1024))
        config = write_config(tmp_path, state=small / "state")
        proc = run_once(config)
        assert_one_line_refusal(proc, EXIT_CONFIG, f"state directory {small / 'state'} is "
                                "full", "df -h")


def test_a_read_only_state_directory_is_refused(tmp_path: Path) -> None:
    with mounted_tmpfs(tmp_path / "ro", "ro,size=1m") as ro:
        config = write_config(tmp_path, state=ro)
        proc = run_once(config)
        assert_one_line_refusal(proc, EXIT_CONFIG, f"state directory {ro} is not writable",
                                "Read-only file system")
