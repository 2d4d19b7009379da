"""A crash bench: simulated phones in the test process, the agent as a real subprocess.

The phones (fake adbd + simulated Android, `SimBench`) live in the test's event loop, so
they outlive every agent process and the test can read their counters (factory resets,
power cycles, user files). The agent is `tests/crash/agent_killpoint.py` (the real
`wipeagent run --once`, optionally killing itself right after one journal commit) or is
killed from outside once the journal or a phone shows a chosen state. The journal is read
with sqlite3 in read-only mode, exactly as an operator's tool would see it after a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from wipeagent.certs.pki import dev_trust_root
from wipeagent.certs.verify import VerifiedCertificate, check_sequence, verify_certificate
from wipeagent.clock import Clock
from wipeagent_sim.android.bench import BenchPhone, SimBench
from wipeagent_sim.android.phone import SimAndroidPhone
from wipeagent_sim.ios import SimIosBench
from wipeagent_sim.ios.phone import SimIPhone

HERE = Path(__file__).parent
AGENT = HERE / "agent_killpoint.py"
REPO = HERE.parent.parent

# Bench seconds run this many times faster than real time, in the agent and the phones.
SPEED = 100.0
# Real seconds one agent run may take before the test gives up on it.
RUN_TIMEOUT = 40.0


@dataclass(frozen=True)
class Step:
    session_id: str
    seq: int
    step: str
    data: dict[str, Any]
    at: datetime


@dataclass(frozen=True)
class SessionState:
    id: str
    slot: str
    serial: str | None
    state: str
    outcome: str | None


@dataclass
class Journal:
    """The journal as a read-only reader sees it."""

    sessions: list[SessionState] = field(default_factory=list)
    steps: dict[str, list[Step]] = field(default_factory=dict)
    certificates: list[dict[str, Any]] = field(default_factory=list)

    def step_names(self, session_id: str) -> list[str]:
        return [s.step for s in self.steps.get(session_id, [])]

    def has_step(self, step: str) -> bool:
        return any(s.step == step for steps in self.steps.values() for s in steps)

    def last_steps(self) -> list[str]:
        """The last journaled step of every session."""
        return [steps[-1].step for steps in self.steps.values() if steps]


def read_journal(path: Path) -> Journal:
    """Everything in the journal, through a read-only connection (never writes)."""
    journal = Journal()
    if not path.exists():
        return journal
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        for row in db.execute("SELECT id, slot, serial, state, outcome FROM sessions"
                              " ORDER BY created_at"):
            journal.sessions.append(SessionState(*row))
        for sid, seq, step, data, at in db.execute(
                "SELECT session_id, seq, step, data, at FROM steps ORDER BY session_id, seq"):
            journal.steps.setdefault(sid, []).append(
                Step(sid, seq, step, json.loads(data), datetime.fromisoformat(at)))
        for row in db.execute("SELECT certificate_id, session_id, station_id, sequence,"
                              " sha256, previous_sha256, outcome FROM certificates"
                              " ORDER BY sequence"):
            keys = ("certificate_id", "session_id", "station_id", "sequence", "sha256",
                    "previous_sha256", "outcome")
            journal.certificates.append(dict(zip(keys, row, strict=True)))
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):  # the agent had not created its schema yet
            raise
    finally:
        db.close()
    return journal


class AgentProcess:
    """One `wipeagent run --once` process; its log lines are kept (and shown on failure)."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path,
                 on_line: Callable[[str], None] | None) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.log = log
        self.on_line = on_line
        self.started_at = datetime.now(UTC)
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        with self.log.open("a", encoding="utf-8") as fh:
            while line := await self.proc.stderr.readline():
                text = line.decode("utf-8", "replace").rstrip("\n")
                self.lines.append(text)
                fh.write(text + "\n")
                if self.on_line is not None:
                    self.on_line(text)

    def send(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)

    async def wait(self, limit_s: float = RUN_TIMEOUT) -> int:
        """The exit status (negative: killed by that signal); kills it after `limit_s`."""
        try:
            rc = await asyncio.wait_for(self.proc.wait(), limit_s)
        except TimeoutError:
            self.send(signal.SIGKILL)
            await self.proc.wait()
            await self._reader
            raise AssertionError(f"agent still running after {limit_s} s:\n"
                                 + "\n".join(self.lines[-40:])) from None
        await self._reader
        return rc

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.lines[-n:])


class Technician:
    """The person at the bench: does a manual reset when the agent's display asks for one
    (the agent's `manual_reset` line), at most once per phone, through the phone's own
    control methods (Settings reset, setup, USB debugging, Allow)."""

    def __init__(self, bench: CrashBench) -> None:
        self.bench = bench
        self.reset: set[str] = set()
        self.tasks: set[asyncio.Task[None]] = set()

    def on_line(self, line: str) -> None:
        # The agent's event line: `[slot|serial] step=manual_reset ...` (or, from older
        # runners, `[slot] manual_reset: ...`).
        if "step=manual_reset" not in line and "manual_reset:" not in line:
            return
        for entry in self.bench.phones:
            slot = self.bench.slot(entry)
            shown = f"[{slot}]" in line or f"[{slot}|" in line
            if shown and entry.phone.serial not in self.reset:
                self.reset.add(entry.phone.serial)
                task = asyncio.get_running_loop().create_task(self._reset(entry.phone))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

    async def _reset(self, phone: SimAndroidPhone) -> None:
        clock = self.bench.clock
        await clock.sleep(5)  # reads the instructions
        await phone.perform_manual_factory_reset()
        await clock.sleep(20)  # setup wizard, developer options
        phone.enable_usb_debugging()
        async with clock.timeout(600):
            while not phone.accept_pending_authorisation():
                await clock.sleep(0.5)


class CrashBench:
    """Simulated phones + agent processes sharing one state directory.

    Timeouts are in bench seconds and generous in real time (3 s for a command at speed
    100) so a loaded CI machine cannot turn a slow answer into a different outcome; the
    reboot timeout is what a resumed session whose erase was never sent waits out."""

    def __init__(self, tmp: Path, profiles: list[str | Path], *, speed: float = SPEED,
                 reboot_timeout_s: float = 300, manual_reset_timeout_s: float = 600,
                 ios_profiles: list[str | Path] | None = None) -> None:
        self.tmp = tmp
        self.clock = Clock(speed)
        self.speed = speed
        self.state = tmp / "state"
        self.config_path = tmp / "agent.toml"
        self.reboot_timeout_s = reboot_timeout_s
        self.manual_reset_timeout_s = manual_reset_timeout_s
        self.sim = SimBench(profiles=profiles, state_dir=tmp / "sims",
                            clock=self.clock) if profiles else None
        self.ios = SimIosBench(ios_profiles, clock=self.clock) if ios_profiles else None
        self.technician = Technician(self)
        self.runs: list[AgentProcess] = []

    async def __aenter__(self) -> Self:
        if self.sim is not None:
            await self.sim.start()
        if self.ios is not None:
            await self.ios.start()
        endpoints = ", ".join(f'"{p.host}:{p.port}"' for p in self.phones)
        ios = (f'enabled = true\nusbmuxd = "{self.ios.address}"\npair_timeout_s = 300\n'
               f'command_timeout_s = 300\nreboot_timeout_s = {self.reboot_timeout_s}'
               if self.ios is not None else "enabled = false")
        self.config_path.write_text(f"""
state_dir = "{self.state}"
clock_speed = {self.speed}
[station]
id = "crash-bench"
operator = "crash-test"
[policy]
erase = "auto"
[android]
endpoints = [{endpoints}]
connect_timeout_s = 300
auth_timeout_s = 600
command_timeout_s = 300
reboot_timeout_s = {self.reboot_timeout_s}
manual_reset_timeout_s = {self.manual_reset_timeout_s}
poll_interval_s = 4
[usb]
enabled = false
[ios]
{ios}
[certificates]
allow_development_pki = true
[control]
socket = "{self.tmp / 'control.sock'}"
[page]
listen = "127.0.0.1:0"
""", encoding="utf-8")
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        for run in self.runs:
            if run.proc.returncode is None:
                run.send(signal.SIGKILL)
                await run.proc.wait()
        for task in list(self.technician.tasks):
            task.cancel()
        await asyncio.gather(*self.technician.tasks, return_exceptions=True)
        if self.sim is not None:
            await self.sim.close()
        if self.ios is not None:
            await self.ios.close()

    @property
    def phones(self) -> list[BenchPhone]:
        return self.sim.phones if self.sim is not None else []

    @property
    def iphones(self) -> list[SimIPhone]:
        return self.ios.phones if self.ios is not None else []

    def phone(self, name: str) -> SimAndroidPhone:
        """The phone of this profile."""
        for entry in self.phones:
            if entry.profile == name:
                return entry.phone
        raise KeyError(name)

    @staticmethod
    def slot(entry: BenchPhone) -> str:
        return f"tcp:{entry.host}:{entry.port}"

    @property
    def journal_path(self) -> Path:
        return self.state / "journal.sqlite3"

    def journal(self) -> Journal:
        return read_journal(self.journal_path)

    def certified_serials(self) -> set[str]:
        """Serials with a finished, certified session."""
        journal = self.journal()
        certified = {c["session_id"] for c in journal.certificates}
        return {s.serial for s in journal.sessions
                if s.id in certified and s.serial and s.state == "done"}

    async def run_until_certified(self, serials: set[str]) -> AgentProcess:
        """`wipeagent run` (no --once: usbmuxd phones are no endpoints) until every phone
        in `serials` has a certificate, then SIGTERM; the run must end with exit 0."""
        run = await self.start_agent(once=False)
        await self.until("every phone certified",
                         lambda: serials <= self.certified_serials(), run, RUN_TIMEOUT * 2)
        run.send(signal.SIGTERM)
        rc = await run.wait()
        assert rc == 0, f"agent exited {rc}:\n{run.tail()}"
        return run

    async def start_agent(self, *, crash_at: str | None = None,
                          once: bool = True) -> AgentProcess:
        env = {k: v for k, v in os.environ.items() if k != "WIPEAGENT_CRASH_AT"}
        if crash_at:
            env["WIPEAGENT_CRASH_AT"] = crash_at
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO),
                                                          env.get("PYTHONPATH")]))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(AGENT), "run", *(["--once"] if once else []),
            "--config", str(self.config_path),
            env=env, cwd=self.tmp, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        run = AgentProcess(proc, self.tmp / f"agent-{len(self.runs) + 1}.log",
                           self.technician.on_line)
        self.runs.append(run)
        return run

    async def run_agent(self, *, crash_at: str | None = None) -> AgentProcess:
        """One agent run to its end: killed at `crash_at`, or finished (exit 0)."""
        run = await self.start_agent(crash_at=crash_at)
        rc = await run.wait()
        expected = -signal.SIGKILL if crash_at and not crash_at.startswith("term") else 0
        assert rc == expected, f"agent exited {rc}, expected {expected}:\n{run.tail()}"
        return run

    async def until(self, what: str, predicate: Callable[[], bool],
                    run: AgentProcess | None = None, limit_s: float = RUN_TIMEOUT) -> None:
        """Poll (every few real milliseconds) until `predicate()` holds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit_s
        while not predicate():
            if run is not None and run.proc.returncode is not None:
                raise AssertionError(f"agent exited ({run.proc.returncode}) before {what}:\n"
                                     + run.tail())
            if loop.time() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.003)

    # -- what must hold after any crash and restart -------------------------------------

    def verified_certificates(self) -> list[VerifiedCertificate]:
        trust = dev_trust_root(self.state / "dev-pki")
        files = sorted((self.state / "certificates").glob("*.jws.json"))
        return [verify_certificate(f.read_bytes(), trust_roots=[trust]) for f in files]

    def check_invariants(self, restarted_at: datetime, before: Journal) -> dict[str, str]:
        """Assert the crash-safety rules after a run that restarted at `restarted_at`
        from the journal `before` (as the crash left it); returns profile name ->
        certified outcome."""
        journal = self.journal()
        certs = journal.certificates
        by_session = {c["session_id"]: c for c in certs}
        # Every session is finished: resumed and certified, superseded, or ended.
        open_sessions = [s for s in journal.sessions if s.state != "done"]
        assert not open_sessions, f"sessions left unfinished: {open_sessions}"
        # One certificate per session; every identified, non-superseded session has one.
        assert len(by_session) == len(certs), "a session has two certificates"
        for s in journal.sessions:
            names = journal.step_names(s.id)
            if s.outcome == "superseded":
                assert s.id not in by_session, f"superseded session {s.id} certified"
                assert names[-1] == "superseded", names
            elif s.outcome == "already_certified":
                # A phone certified before the restart and still on the bench: the new
                # session ends at once, without a second certificate.
                assert s.id not in by_session and names[-1] == "ended", names
            elif "identify" in names:
                assert s.id in by_session, f"session {s.id} ({names}) has no certificate"
                assert names[-1] == "certified", names
                assert names.count("certified") == 1, names
            else:  # stopped before the phone was identified: ended, nothing certified
                assert s.id not in by_session and names[-1] == "ended", names
        # The chain: 1..n with no gap, fork or duplicate; files = journal; all verify.
        assert [c["sequence"] for c in certs] == list(range(1, len(certs) + 1))
        verified = self.verified_certificates()
        assert sorted(v.certificate_id for v in verified) == sorted(
            c["certificate_id"] for c in certs)
        assert check_sequence(verified) == []
        # Per phone: erased at most once; "erased" only with a verify after the restart
        # (when the crash left the erase unverified) and only if the data is really gone.
        outcomes: dict[str, str] = {}
        by_id = {v.certificate_id: v for v in verified}
        for entry in self.phones:
            serial = entry.phone.serial
            sessions = [s for s in journal.sessions
                        if s.serial == serial and s.id in by_session]
            assert len(sessions) == 1, (
                f"{entry.profile}: {len(sessions)} certified sessions for one phone on the "
                f"bench: {[(s.id, journal.step_names(s.id)) for s in sessions]}")
            (session,) = sessions
            steps = journal.steps[session.id]
            names = [s.step for s in steps]
            cert = by_id[by_session[session.id]["certificate_id"]]
            assert cert.payload["custody"]["session_id"] == session.id
            outcome = cert.outcome
            outcomes[entry.profile] = outcome
            assert entry.phone.counters.factory_resets <= 1, entry.phone.counters
            if outcome != "not_erased":
                assert "erase_started" in names and "verify" in names, names
                started = names.index("erase_started")
                verify = names.index("verify")
                assert names.index("returned") < verify and started < verify, names
                crashed = before.step_names(session.id)
                if "erase_started" in crashed and "verify" not in crashed:
                    # The erase began before the crash and was not verified: only a
                    # verification by the restarted agent may vouch for it.
                    assert steps[verify].at > restarted_at, names
                assert entry.phone.counters.factory_resets == 1
                assert not entry.phone.user_files(), entry.phone.user_files()
                assert cert.payload["verification"]["data_unrecoverable"] == "confirmed"
        return outcomes
