"""`wipeagent run` as systemd runs it: notifications over a real datagram socket, SIGHUP
reload (good and bad files), SIGTERM pausing sessions that resume after a restart, and
the exit status of a refused configuration."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from wipeagent.clock import Clock
from wipeagent.config import AgentConfig
from wipeagent.control.client import ControlClient
from wipeagent.control.operators import OperatorRegistry
from wipeagent.errors import ConfigError
from wipeagent.models import Outcome
from wipeagent.runner import DEFAULT_EXTENSIONS, EXIT_CONFIG, RunContext, Service, run_agent
from wipeagent.service.notify import Notifier
from wipeagent.session import SessionEvent, SessionResult
from wipeagent.store import Store
from wipeagent_sim.android.bench import SimBench
from wipeagent_sim.demo import demo_config

SPEED = 50


def config_for(tmp_path: Path, endpoints: list[str], **policy: object) -> AgentConfig:
    config = demo_config(tmp_path / "state")
    return config.model_copy(update={
        "android": config.android.model_copy(update={
            "endpoints": tuple(endpoints), "command_timeout_s": 20, "reboot_timeout_s": 300}),
        "control": config.control.model_copy(update={
            "socket": str(tmp_path / "run" / "control.sock"), "group": ""}),
        # The bench page on an ephemeral port (never the fixed default in tests).
        "page": config.page.model_copy(update={"listen": "127.0.0.1:0"}),
        "policy": config.policy.model_copy(update=policy),
    })


async def journal_of(tmp_path: Path, session_id: str) -> tuple[str | None, list[str]]:
    store = await Store(tmp_path / "state" / "journal.sqlite3").open()
    try:
        row = await store.session(session_id)
        return (row.state if row else None), [s.step for s in await store.steps(session_id)]
    finally:
        await store.close()


async def started(service: Service) -> RunContext:
    for _ in range(6000):
        if service.ctx is not None:
            return service.ctx
        await asyncio.sleep(0.005)
    raise AssertionError("the service did not start")


async def wait_event(events: list[SessionEvent], step: str) -> SessionEvent:
    async with asyncio.timeout(30):
        while True:
            for event in events:
                if event.step == step:
                    return event
            await asyncio.sleep(0.01)


async def test_sigterm_while_waiting_for_confirmation_then_resume_and_erase(
        tmp_path: Path) -> None:
    """The runner's control extension: policy confirm, SIGTERM while the phone waits for
    a technician; after the restart the same session asks again, is confirmed over the
    control socket, erased and certified with the confirming operator."""
    clock = Clock(SPEED)
    async with SimBench(profiles=["pixel8-clean"], state_dir=tmp_path / "sims",
                        clock=clock) as bench:
        (entry,) = bench.phones
        config = config_for(tmp_path, [f"{entry.host}:{entry.port}"], erase="confirm")
        OperatorRegistry.for_state_dir(config.state_path).add("bob", "bob-pin-7")
        first = Service(config, clock, config_path=None, once=True,
                        extensions=DEFAULT_EXTENSIONS, notifier=Notifier({}))
        run = asyncio.create_task(first.run())
        events: list[SessionEvent] = []
        (await started(first)).observers.append(events.append)
        asking = await wait_event(events, "confirm")
        os.kill(os.getpid(), signal.SIGTERM)
        assert await asyncio.wait_for(run, 30) == 0
        state, steps = await journal_of(tmp_path, asking.session_id)
        assert state == "plan" and steps[-1] == "paused", steps
        assert entry.phone.counters.power_cycles == 0  # nothing was erased

        second = Service(config, clock, config_path=None, once=True,
                         extensions=DEFAULT_EXTENSIONS, notifier=Notifier({}))
        run = asyncio.create_task(second.run())
        events = []
        (await started(second)).observers.append(events.append)
        again = await wait_event(events, "confirm")
        assert again.session_id == asking.session_id  # the journaled session, resumed
        async with ControlClient(config.control.socket) as client:
            await client.login("bob", "bob-pin-7")
            await client.confirm(again.slot)
        assert await asyncio.wait_for(run, 60) == 0
    assert second.ctx is not None
    (result,) = second.ctx.agent.results
    assert result.outcome is Outcome.ERASED, result.reasons
    assert result.record is not None and result.record.operator == "bob"
    state, steps = await journal_of(tmp_path, asking.session_id)
    assert state == "done" and steps.count("erase_started") == 1, steps
    # The control server closed and removed its socket.
    assert not await asyncio.to_thread(Path(config.control.socket).exists)


async def sigterm_during_reboot(tmp_path: Path) -> tuple[SessionResult, list[str], int]:
    """SIGTERM while the agent waits for the phone to come back from its reset; restart."""
    clock = Clock(SPEED)
    async with SimBench(profiles=["pixel8-clean"], state_dir=tmp_path / "sims",
                        clock=clock) as bench:
        (entry,) = bench.phones
        config = config_for(tmp_path, [f"{entry.host}:{entry.port}"])
        config = config.model_copy(update={"android": config.android.model_copy(
            update={"reboot_timeout_s": 150})})
        first = Service(config, clock, config_path=None, once=True,
                        extensions=(), notifier=Notifier({}))
        run = asyncio.create_task(first.run())
        ctx = await started(first)
        async with asyncio.timeout(30):
            while True:
                await asyncio.sleep(0.005)
                running = ctx.agent.phones()
                if running and running[0].expects_departure:
                    session_id = running[0].session_id
                    break
        os.kill(os.getpid(), signal.SIGTERM)
        assert await asyncio.wait_for(run, 30) == 0
        state, steps = await journal_of(tmp_path, session_id)
        assert state == "erase_started" and steps[-2:] == ["erase_started", "paused"]

        second = Service(config, clock, config_path=None, once=True,
                         extensions=(), notifier=Notifier({}))
        assert await asyncio.wait_for(second.run(), 60) == 0
        assert second.ctx is not None
        (result,) = second.ctx.agent.results
        assert result.session_id == session_id  # adopted, not a new session
        state, steps = await journal_of(tmp_path, session_id)
        assert state == "done"
        return result, steps, entry.phone.counters.power_cycles


async def test_sigterm_during_the_reboot_wait_resumes_and_ends_erased(
        tmp_path: Path) -> None:
    result, steps, power_cycles = await sigterm_during_reboot(tmp_path)
    assert steps.count("erase_started") == 1, steps  # the erase was not sent twice
    assert power_cycles == 1
    # The phone rebooted while no agent watched; the resumed session verified it on the
    # phone after the restart before calling it erased.
    assert result.outcome is Outcome.ERASED, result.reasons
    assert steps.index("verify") > steps.index("paused")
    assert result.certificate is not None


async def test_confirm_policy_without_a_control_api_is_refused(tmp_path: Path) -> None:
    config = config_for(tmp_path, ["127.0.0.1:9"], erase="confirm")
    with pytest.raises(ConfigError, match="needs the technician control API"):
        await run_agent(config, Clock(SPEED), extensions=(), notifier=Notifier({}))


# -- the real process ---------------------------------------------------------------------

CONFIG = """\
state_dir = "{state}"
clock_speed = 20
[station]
id = "bench-07"
operator = "alice"
[policy]
erase = "{erase}"
[android]
endpoints = ["127.0.0.1:{port}"]
poll_interval_s = 2
[usb]
enabled = false
[ios]
enabled = false
[certificates]
allow_development_pki = true
[control]
socket = "{sock}"
group = ""
[page]
listen = "127.0.0.1:0"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port  # nothing listens there: the agent polls an empty slot


class Agent:
    """`python -m wipeagent.runner run` with $NOTIFY_SOCKET and $WATCHDOG_USEC set."""

    def __init__(self, tmp_path: Path, config: Path, watchdog_usec: int = 400_000) -> None:
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(tmp_path / "notify.sock"))
        self.log_path = tmp_path / "agent.log"
        env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify.sock"),
               "WATCHDOG_USEC": str(watchdog_usec)}
        env.pop("WATCHDOG_PID", None)
        self.log_file = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "wipeagent.runner", "run", "--config", str(config),
             "--log-format", "journal"],
            env=env, stdout=subprocess.DEVNULL, stderr=self.log_file)
        self.messages: list[dict[str, str]] = []

    def wait_for(self, key: str, value: str | None = None, timeout: float = 20
                 ) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.notify.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.notify.recv(65536).decode()
            except TimeoutError:
                break
            msg = dict(line.split("=", 1) for line in data.split("\n"))
            self.messages.append(msg)
            if key in msg and (value is None or msg[key] == value):
                return msg
        raise AssertionError(f"no {key}={value} in {self.messages}\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def close(self) -> int:
        if self.proc.poll() is None:
            self.proc.kill()
        code = self.proc.wait(10)
        self.notify.close()
        self.log_file.close()
        return code


def test_service_notifies_reloads_and_stops(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "agent.toml"
    fields = {"state": tmp_path / "state", "port": port, "sock": tmp_path / "ctl.sock"}
    config.write_text(CONFIG.format(erase="auto", **fields))
    agent = Agent(tmp_path, config)
    try:
        ready = agent.wait_for("READY", "1")
        assert ready["STATUS"] == "idle; policy auto; DEVELOPMENT PKI"
        # Pings at half of WATCHDOG_USEC (0.2 s): several within a second.
        started = time.monotonic()
        for _ in range(3):
            agent.wait_for("WATCHDOG", "1", timeout=2)
        assert time.monotonic() - started < 1.5

        # A good new file: policy and operator change live, station.id waits for a restart.
        config.write_text(CONFIG.format(erase="confirm", **fields)
                          .replace("bench-07", "bench-08"))
        agent.proc.send_signal(signal.SIGHUP)
        agent.wait_for("RELOADING", "1")
        agent.wait_for("READY", "1")
        status = agent.wait_for("STATUS")
        assert "policy confirm" in status["STATUS"]
        assert "restart to apply: station.id" in status["STATUS"]

        # A bad file is refused with file:line: reason; the agent keeps running.
        config.write_text(CONFIG.format(erase="auto", **fields)
                          .replace("poll_interval_s = 2", "poll_interval_s = -1"))
        agent.proc.send_signal(signal.SIGHUP)
        agent.wait_for("RELOADING", "1")
        agent.wait_for("READY", "1")
        agent.wait_for("WATCHDOG", "1", timeout=2)
        assert agent.proc.poll() is None

        agent.proc.send_signal(signal.SIGTERM)
        agent.wait_for("STOPPING", "1")
        assert agent.proc.wait(20) == 0
    finally:
        agent.close()
    log = agent.log()
    assert "<6>wipeagent.runner: started: station bench-07, policy auto" in log
    assert "configuration reloaded" in log and "policy.erase" in log
    assert f"<3>wipeagent.runner: reload refused, the running configuration stays: " \
           f"{config}:10: android.poll_interval_s:" in log
    assert "stopping (SIGTERM)" in log
    # One line per event, every line with a priority for journald.
    assert all(line.startswith("<") for line in log.splitlines()), log


def test_a_bad_config_is_refused_at_start_with_exit_78(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(CONFIG.format(erase="sometimes", state=tmp_path / "s", port=9,
                                    sock=tmp_path / "c.sock"))
    proc = subprocess.run(
        [sys.executable, "-m", "wipeagent.runner", "run", "--config", str(config),
         "--log-format", "console"], capture_output=True, text=True, timeout=60,
        env={k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}, check=False)
    assert proc.returncode == EXIT_CONFIG, proc.stderr
    assert f"configuration refused: {config}:7: policy.erase:" in proc.stderr
    assert not (tmp_path / "s").exists()  # nothing was started


async def test_watchdog_pings_stop_while_the_journal_hangs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(tmp_path / "n.sock"))
    listener.setblocking(False)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # a ping every 0.1 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    loop = asyncio.get_running_loop()

    async def pings(within: float) -> int:
        count = 0
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                while True:
                    data = await loop.sock_recv(listener, 4096)
                    count += data == b"WATCHDOG=1"
        return count

    service = Service(config_for(tmp_path, [f"127.0.0.1:{free_port()}"]), Clock(SPEED),
                      config_path=None, once=False, extensions=(),
                      notifier=Notifier({"NOTIFY_SOCKET": str(tmp_path / "n.sock")}))
    run = asyncio.create_task(service.run())
    try:
        ctx = await started(service)
        assert await pings(0.6) >= 3
        release = threading.Event()
        hang = asyncio.create_task(ctx.store.run(lambda _db: release.wait(10)))
        await asyncio.sleep(0.15)  # the ping in flight when the journal hung may land
        await pings(0.1)
        assert await pings(0.6) == 0  # systemd would now restart the agent
        release.set()
        await hang
        assert await pings(0.6) >= 3
    finally:
        service.request_stop("test")
        assert await asyncio.wait_for(run, 30) == 0
        listener.close()
