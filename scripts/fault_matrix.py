#!/usr/bin/env python3
"""Fault matrix: the real agent stopped at random moments, restarted, and held to the truth.

    .venv/bin/python scripts/fault_matrix.py [--trials 200] [--seed 1] [--speed 50]
        [--faults kill9,sigterm,diskfull] [--journal-trials 20] [--profiles NAME,...]
        [--results FILE] [--only FIRST:END] [--merge FILE...] [--write]

Each trial runs three processes, as a bench does:

- this one (the conductor): the reference receiver the agent delivers to (mutual TLS,
  `wipeagent.uplink.receiver`), the fault injection, and the checks;
- a *phones* process (this script's hidden `_phones` sub-command): the trial's phone,
  simulated (a fake adbd, or the fake usbmuxd + lockdownd), which knows the truth about its
  data whatever the agent was told (`truth()`), and plays the technician when the agent
  asks for a manual reset;
- the agent: the real `wipeagent run` with a configuration written for the trial.

A trial: one phone of one profile; the agent is started, and at a seeded random moment in
[0, T) — T being how long that profile's uninterrupted session took in the calibration run
— the fault strikes: `kill9` (SIGKILL), `sigterm` (what `systemctl restart` sends), or
`diskfull` (the state directory, a small tmpfs, is filled to the last byte; the agent runs
on a full disk for a while, is stopped, the space freed). Then the agent starts again and
runs until the phone has its certificate and the receiver holds every certificate of the
journal. Checked after every trial:

- claims: a certificate saying erased only for a phone whose data the simulator says is
  gone, and for an honest phone the same outcome as its uninterrupted run ("claims less"
  is counted apart);
- no certificate lost or doubled: exactly one certificate per phone, every session whose
  erase started certified, every certificate verifies;
- the station chain: sequences 1..n, each previous hash the one before;
- delivery: the receiver stored each certificate of the journal exactly once, nothing else.

`--journal-trials N` adds trials where the journal is damaged while the agent is down
(deleted, emptied, cut in half, header zeroed, bytes flipped) after the phone's certificate
was journaled and before it was delivered. A restarted agent that refuses the damaged
journal (exit 78) must name `wipeagent journal recover`; the matrix runs it, as the
administrator would, and starts the agent again. They are held to the same checks (no
fork, the undelivered certificate delivered once).

Chunks and resumption: `--results FILE` appends the calibration and every finished trial to
a JSON-lines file and skips the trials it holds already; `--only FIRST:END` runs a slice of
the plan; `--merge FILE...` runs nothing and reports the trials of several files.

Exit status 1 when a trial broke an invariant (after printing the report). With --write
the figures replace the block between the `fault_matrix` markers in docs/reliability.md,
with the command lines, the commits and the machine's load.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import math
import os
import platform
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BEGIN = "<!-- fault_matrix:begin -->"
END = "<!-- fault_matrix:end -->"
FAULTS = ("kill9", "sigterm", "diskfull")
JOURNAL_DAMAGE = ("delete", "empty", "half", "zero_header", "flip_bytes")
STATION = "matrix-bench"
# Real seconds a trial may take from the restart to the end before it counts as hung.
SETTLE_TIMEOUT = 180.0
TMPFS_SIZE = "48m"

log = logging.getLogger("fault_matrix")


def _emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


# --------------------------------------------------------------------------------------
# The phones process
# --------------------------------------------------------------------------------------


async def phones_main(platform_name: str, profile: str, speed: float, workdir: Path) -> None:
    """One simulated phone; answers `truth` and `manual_reset` commands on stdin."""
    from wipeagent.clock import Clock
    from wipeagent_sim.android.bench import SimBench
    from wipeagent_sim.ios import SimIosBench

    logging.basicConfig(level=logging.ERROR)
    clock = Clock(speed)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    tasks: set[asyncio.Task[None]] = set()
    async with contextlib.AsyncExitStack() as stack:
        if platform_name == "android":
            android = await stack.enter_async_context(
                SimBench(profiles=[profile], state_dir=workdir / "sims", clock=clock))
            (entry,) = android.phones
            phone: Any = entry.phone
            _emit({"ready": {"address": f"{entry.host}:{entry.port}", "serial": phone.serial}})
        else:
            ios = await stack.enter_async_context(SimIosBench([profile], clock=clock))
            (phone,) = ios.phones
            _emit({"ready": {"usbmuxd": ios.address, "serial": phone.serial_number,
                             "udid": phone.udid}})

        resets = 0

        async def manual_reset() -> None:
            await clock.sleep(5)  # reads the instructions
            await phone.perform_manual_factory_reset()
            await clock.sleep(20)  # setup wizard, developer options
            phone.enable_usb_debugging()
            async with clock.timeout(900):
                while not phone.accept_pending_authorisation():
                    await clock.sleep(0.5)

        while True:
            line = await reader.readline()
            if not line:
                break
            command = json.loads(line)
            if command["do"] == "truth":
                _emit({"truth": phone.truth()})
            elif command["do"] == "manual_reset" and platform_name == "android" and not resets:
                resets += 1  # a person resets a phone once, whatever a display asks again
                task = loop.create_task(manual_reset())
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            elif command["do"] == "stop":
                break
        for task in tasks:
            task.cancel()


# --------------------------------------------------------------------------------------
# The conductor
# --------------------------------------------------------------------------------------


@dataclass
class Phones:
    """The phones process of one trial."""

    proc: asyncio.subprocess.Process
    ready: dict[str, Any]

    @classmethod
    async def start(cls, platform_name: str, profile: str, speed: float, workdir: Path
                    ) -> Phones:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "_phones", platform_name, profile, str(speed),
            str(workdir), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL, cwd=ROOT)
        line = await asyncio.wait_for(proc.stdout.readline(), 120)  # type: ignore[union-attr]
        if not line:
            raise RuntimeError(f"phones process for {profile} did not start")
        return cls(proc, json.loads(line)["ready"])

    async def ask(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((json.dumps(command) + "\n").encode())
        await self.proc.stdin.drain()
        line = await asyncio.wait_for(self.proc.stdout.readline(), 60)
        value: dict[str, Any] = json.loads(line)
        return value

    def tell(self, command: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(command) + "\n").encode())

    async def truth(self) -> dict[str, Any]:
        answer: dict[str, Any] = (await self.ask({"do": "truth"}))["truth"]
        return answer

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.tell({"do": "stop"})
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 30)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


class Agent:
    """One `wipeagent run` process; its log goes to a file, manual-reset requests to the
    phones process (the simulated technician)."""

    def __init__(self, proc: asyncio.subprocess.Process, log_path: Path,
                 phones: Phones) -> None:
        self.proc = proc
        self.log_path = log_path
        self.phones = phones
        self.lines: list[str] = []
        self.reset_asked = False
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def start(cls, config: Path, log_path: Path, phones: Phones) -> Agent:
        command = [sys.executable, "-m", "wipeagent.runner", "run", "--config", str(config),
                   "--log-format", "console"]
        proc = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, cwd=ROOT,
            env={k: v for k, v in os.environ.items()
                 if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")})
        return cls(proc, log_path, phones)

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        with self.log_path.open("a", encoding="utf-8") as fh:
            while line := await self.proc.stderr.readline():
                text = line.decode("utf-8", "replace").rstrip("\n")
                self.lines.append(text)
                fh.write(text + "\n")
                if "step=manual_reset" in text and not self.reset_asked:
                    self.reset_asked = True
                    self.phones.tell({"do": "manual_reset"})

    def send(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)

    async def stop(self, sig: signal.Signals = signal.SIGTERM, limit: float = 60) -> int:
        self.send(sig)
        try:
            rc = await asyncio.wait_for(self.proc.wait(), limit)
        except TimeoutError:
            self.send(signal.SIGKILL)
            await self.proc.wait()
            rc = -999  # hung on stop
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._reader, 10)
        return rc


@dataclass
class Trial:
    index: int
    platform: str
    profile: str
    fault: str
    at_s: float  # real seconds after the agent's start
    damage: str = ""
    outcome: str = ""
    truth_erased: bool | None = None
    baseline: str = ""
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    certificates: int = 0
    delivered: int = 0
    restart_rc: int | None = None
    seconds: float = 0.0
    seed: int = 0
    commit: str = ""  # the code the trial ran on
    load: float = 0.0  # the machine's 1-minute load average when the trial ended

    @property
    def kind(self) -> str:
        """The fault as reported: kill9, sigterm, diskfull or journal:<damage>."""
        return f"journal:{self.damage}" if self.damage else self.fault

    @property
    def counted(self) -> bool:
        return not any("skipped" in n for n in self.notes)

    @property
    def ok(self) -> bool:
        return not self.problems


class Matrix:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.speed: float = args.speed
        self.server_tls: Any = None
        self.calibration: dict[str, tuple[float, str]] = {}
        self.can_mount = False
        self.commit = git_commit()
        self.results_path: Path | None = Path(args.results) if args.results else None
        self.done: dict[tuple[int, int], Trial] = {}
        if self.results_path is not None and self.results_path.exists():
            calibration, trials = load_results([self.results_path])
            self.calibration.update(calibration.get(args.seed, {}))
            self.done = {(t.seed, t.index): t for t in trials}

    # -- set-up -----------------------------------------------------------------------

    def profiles(self) -> list[tuple[str, str]]:
        from wipeagent_sim.android.profiles import list_profiles
        from wipeagent_sim.demo import ios_profiles

        # Every bundled profile: honest phones, refused ones, misbehaving and lying ones.
        chosen = [("android", p.name) for p in list_profiles()]
        chosen += [("ios", p.name) for p in ios_profiles()]
        if self.args.profiles:
            wanted = set(self.args.profiles.split(","))
            chosen = [c for c in chosen if c[1] in wanted]
        return chosen

    def mount_tmpfs(self, where: Path) -> bool:
        where.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs",
                               str(where)], capture_output=True, check=False)
        return done.returncode == 0

    @staticmethod
    def umount(where: Path) -> None:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)

    def config(self, trial_dir: Path, state: Path, phones: Phones, receiver_url: str,
               server_ca: Path) -> Path:
        ready = phones.ready
        endpoints = f'["{ready["address"]}"]' if "address" in ready else "[]"
        ios = (f'enabled = true\nusbmuxd = "{ready["usbmuxd"]}"\npair_timeout_s = 300\n'
               "command_timeout_s = 300\nreboot_timeout_s = 400"
               if "usbmuxd" in ready else "enabled = false")
        path = trial_dir / "agent.toml"
        path.write_text(f"""
state_dir = "{state}"
clock_speed = {self.speed}
[station]
id = "{STATION}"
operator = "fault-matrix"
[policy]
erase = "auto"
[android]
endpoints = {endpoints}
connect_timeout_s = 120
auth_timeout_s = 300
command_timeout_s = 300
reboot_timeout_s = 400
manual_reset_timeout_s = 1200
poll_interval_s = 4
[usb]
enabled = false
[ios]
{ios}
[uplink]
url = "{receiver_url}"
ca = "{server_ca}"
backoff_initial_s = 2
backoff_max_s = 20
poll_interval_s = 5
[certificates]
allow_development_pki = true
[control]
socket = "{trial_dir / 'control.sock'}"
group = ""
""", encoding="utf-8")
        return path

    async def receiver(self, trial_dir: Path, state: Path) -> Any:
        """The trial's development PKI (made before the agent starts, so the receiver can
        trust it) and a started reference receiver requiring the agent's client
        certificate, as the platform does."""
        from wipeagent.certs.pki import dev_trust_root, ensure_dev_pki
        from wipeagent.uplink.receiver import Receiver
        from wipeagent.uplink.tls import ensure_dev_client_tls, server_context

        dev_pki = state / "dev-pki"
        await asyncio.to_thread(ensure_dev_pki, dev_pki, station_id=STATION)
        await asyncio.to_thread(ensure_dev_client_tls, dev_pki, station_id=STATION)
        context = server_context(cert=self.server_tls.cert, key=self.server_tls.key,
                                 client_ca=dev_pki / "ca" / "ca.pem")
        return await Receiver(trial_dir / "received", [dev_trust_root(dev_pki)],
                              ssl_context=context).start()

    # -- journal reading ----------------------------------------------------------------

    @staticmethod
    def read_journal(path: Path) -> dict[str, Any]:
        """Sessions, steps and certificates, read-only (what an operator's tool sees)."""
        out: dict[str, Any] = {"sessions": [], "steps": {}, "certificates": []}
        if not path.exists():
            return out
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            for row in db.execute("SELECT id, serial, state, outcome FROM sessions"):
                out["sessions"].append(dict(zip(("id", "serial", "state", "outcome"), row,
                                                strict=True)))
            for sid, step in db.execute("SELECT session_id, step FROM steps "
                                        "ORDER BY session_id, seq"):
                out["steps"].setdefault(sid, []).append(step)
            for row in db.execute("SELECT certificate_id, session_id, sequence, sha256, "
                                  "previous_sha256, outcome FROM certificates "
                                  "ORDER BY sequence"):
                out["certificates"].append(dict(zip(
                    ("certificate_id", "session_id", "sequence", "sha256", "previous",
                     "outcome"), row, strict=True)))
        except sqlite3.DatabaseError:
            pass
        finally:
            db.close()
        return out

    # -- one run --------------------------------------------------------------------------

    async def run_trial(self, trial: Trial) -> Trial:
        started = time.monotonic()
        trial_dir = self.workdir / f"trial-{trial.index:04d}"
        trial_dir.mkdir(parents=True)
        state = trial_dir / "state"
        mounted = False
        if trial.fault == "diskfull":
            mounted = self.mount_tmpfs(state)
            if not mounted:
                trial.notes.append("tmpfs mount refused: disk-full trial skipped")
                return trial
        receiver = await self.receiver(trial_dir, state)
        if trial.damage:
            # The platform is unreachable until after the damage: the certificate issued
            # before it is not delivered yet, and must not be lost with the journal.
            await receiver.stop()
        phones = await Phones.start(trial.platform, trial.profile, self.speed, trial_dir)
        config = self.config(trial_dir, state, phones, receiver.url, self.server_tls.ca)
        journal_path = state / "journal.sqlite3"
        agent = await Agent.start(config, trial_dir / "agent.log", phones)
        filler = state / "filler"
        try:
            await self._strike(trial, agent, phones, journal_path, filler)
            await asyncio.to_thread(self._recover, trial, journal_path, filler)
            if trial.damage:
                await receiver.start(receiver.host, receiver.port)
            agent = await Agent.start(config, trial_dir / "agent.log", phones)
            await self._settle(trial, agent, phones, journal_path, receiver)
            if trial.damage and agent.proc.returncode == 78:
                # Refused the damaged journal, as it must: the administrator runs the
                # recovery the hint names, and starts the agent again.
                if not any("journal recover" in line for line in agent.lines[-5:]):
                    trial.problems.append("damaged journal refused without the recovery "
                                          "hint: " + " | ".join(agent.lines[-2:])[:200])
                await self._journal_recover(trial, config)
                agent = await Agent.start(config, trial_dir / "agent.log", phones)
                await self._settle(trial, agent, phones, journal_path, receiver)
            if agent.proc.returncode is None:
                rc = await agent.stop()
                if rc != 0:
                    trial.problems.append(f"agent exited {rc} on SIGTERM")
                await self._check(trial, phones, state, receiver)
            else:
                trial.truth_erased = bool((await phones.truth())["erased"])
        except Exception as exc:  # a trial that breaks is a finding, not a crash
            trial.problems.append(f"{type(exc).__name__}: {str(exc)[:200]}")
            with contextlib.suppress(Exception):
                await agent.stop(signal.SIGKILL)
        finally:
            await phones.stop()
            await receiver.stop()
            if mounted:
                self.umount(state)
            trial.seconds = time.monotonic() - started
        if trial.ok and not self.args.keep:
            shutil.rmtree(trial_dir, ignore_errors=True)
        return trial

    async def _strike(self, trial: Trial, agent: Agent, phones: Phones, journal: Path,
                      filler: Path) -> None:
        """Let the agent run to the trial's moment, then the fault. A journal-damage
        trial strikes once the phone's certificate is in the journal (undelivered)."""
        if trial.damage:
            limit = time.monotonic() + SETTLE_TIMEOUT
            while not self.read_journal(journal)["certificates"]:
                if time.monotonic() > limit or agent.proc.returncode is not None:
                    trial.notes.append("no certificate before the journal damage")
                    break
                await asyncio.sleep(0.05)
            trial.at_s = 0.0
        deadline = time.monotonic() + trial.at_s
        while time.monotonic() < deadline:
            if agent.proc.returncode is not None:
                trial.notes.append(f"agent ended on its own ({agent.proc.returncode}) "
                                   "before the fault")
                return
            await asyncio.sleep(0.01)
        if trial.fault in ("kill9",) or trial.damage:
            rc = await agent.stop(signal.SIGKILL)
        elif trial.fault == "sigterm":
            started = any("started: station" in line for line in agent.lines)
            rc = await agent.stop(signal.SIGTERM)
            if rc == -signal.SIGTERM and not started:
                trial.notes.append("SIGTERM before the agent had started: default action")
            elif rc != 0:
                trial.problems.append(f"SIGTERM: agent exited {rc}")
        else:  # diskfull: fill the state directory, let the agent run on it, stop it
            fill(filler)
            await asyncio.sleep(self.args.diskfull_s)
            started = any("started: station" in line for line in agent.lines)
            rc = await agent.stop(signal.SIGTERM)
            # 0: stopped; 78: it was still starting and refused the full disk (one line,
            # the path and a hint); killed by the signal: it had not started yet.
            if rc not in (0, 78) and not (rc == -signal.SIGTERM and not started):
                trial.problems.append(f"SIGTERM on a full disk: agent exited {rc}")
            trial.notes.append(f"stopped on a full disk: exit {rc}")

    @staticmethod
    async def _journal_recover(trial: Trial, config: Path) -> None:
        """`wipeagent journal recover`, what the refusal's hint tells the administrator."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "wipeagent.cli", "journal", "recover", "--config",
            str(config), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, cwd=ROOT)
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
        text = out.decode("utf-8", "replace").strip()
        trial.notes.append(f"journal recover (exit {proc.returncode}): {text[-200:]}")
        if proc.returncode != 0:
            trial.problems.append(f"journal recover exited {proc.returncode}: {text[-200:]}")

    @staticmethod
    def _recover(trial: Trial, journal: Path, filler: Path) -> None:
        if trial.fault == "diskfull":
            filler.unlink(missing_ok=True)
        if trial.damage:
            damage(journal, trial.damage, random.Random(trial.index))

    async def _settle(self, trial: Trial, agent: Agent, phones: Phones, journal_path: Path,
                      receiver: Any) -> None:
        """Until the phone has a finished, certified session and the receiver holds every
        certificate of the journal (or the agent refused to start)."""
        serial = phones.ready["serial"]
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while time.monotonic() < deadline:
            if agent.proc.returncode is not None:
                trial.restart_rc = agent.proc.returncode
                if trial.damage and agent.proc.returncode == 78 and \
                        not any("journal recover" in n for n in trial.notes):
                    trial.notes.append(f"restart refused (exit {agent.proc.returncode}): "
                                       + (agent.lines[-1][:200] if agent.lines else ""))
                else:
                    trial.problems.append(f"restarted agent exited {agent.proc.returncode}: "
                                          + " | ".join(agent.lines[-3:])[:300])
                return
            journal = self.read_journal(journal_path)
            sessions = journal["sessions"]
            certified = {c["session_id"] for c in journal["certificates"]}
            phone_certified = any(s["serial"] == serial and s["id"] in certified
                                  for s in sessions)
            # A phone that never gave its identity gets no certificate (nothing of it was
            # touched): its sessions just end.
            never_identified = bool(sessions) and all(s["serial"] is None for s in sessions)
            held = set(receiver.held())
            # Ended only once the agent is up (its signal handlers set): a stop before
            # that is a stop during start-up, not the end of a trial.
            started = any("started: station" in line for line in agent.lines)
            if started and sessions and all(s["state"] == "done" for s in sessions) and \
                    (phone_certified or never_identified) and \
                    {c["certificate_id"] for c in journal["certificates"]} <= held:
                return
            await asyncio.sleep(0.2)
        trial.problems.append("timed out waiting for the certificate and its delivery")

    async def _check(self, trial: Trial, phones: Phones, state: Path, receiver: Any) -> None:
        from wipeagent.certs.pki import dev_trust_root
        from wipeagent.certs.verify import check_sequence, verify_certificate

        truth = await phones.truth()
        trial.truth_erased = bool(truth["erased"])
        journal = self.read_journal(state / "journal.sqlite3")
        serial = phones.ready["serial"]
        certs = journal["certificates"]
        trial.certificates = len(certs)
        by_session = {c["session_id"]: c for c in certs}
        # One certificate per phone; every session whose erase started is certified.
        phone_certs = [by_session[s["id"]] for s in journal["sessions"]
                       if s["serial"] == serial and s["id"] in by_session]
        wanted_certs = 1 if trial.baseline or trial.index < 0 else 0
        if trial.index < 0:  # calibration: whatever it is, it is the reference
            wanted_certs = min(len(phone_certs), 1)
        if len(phone_certs) != wanted_certs:
            trial.problems.append(f"{len(phone_certs)} certificates for the phone "
                                  f"(uninterrupted: {wanted_certs})")
        for s in journal["sessions"]:
            steps = journal["steps"].get(s["id"], [])
            if "erase_started" in steps and s["id"] not in by_session:
                trial.problems.append(f"session {s['id'][:8]} erased without certificate")
            if s["state"] != "done":
                trial.problems.append(f"session {s['id'][:8]} left at {s['state']}")
        # The chain.
        sequences = [c["sequence"] for c in certs]
        if sequences != list(range(1, len(certs) + 1)):
            trial.problems.append(f"chain sequences {sequences}")
        for before, after in itertools.pairwise(certs):
            if after["previous"] != before["sha256"]:
                trial.problems.append(f"chain link broken at {after['sequence']}")
        # Every certificate ever exported (a lost journal does not take the files along):
        # one chain among all of them (a fork shows as a sequence issued twice).
        trust = dev_trust_root(state / "dev-pki")
        files = sorted((state / "certificates").glob("*.jws.json"))
        verified = [verify_certificate(f.read_bytes(), trust_roots=[trust]) for f in files]
        exported = {v.certificate_id for v in verified}
        if exported != {c["certificate_id"] for c in certs}:
            trial.problems.append(f"{len(exported)} certificate files exported, "
                                  f"{len(certs)} in the journal")
        chain_problems = check_sequence(verified)
        if chain_problems:
            trial.problems.append("chain: " + "; ".join(
                f"{p.kind} at {p.sequence}: {p.message}" for p in chain_problems)[:200])
        # Delivery: every certificate (journal and exported), each stored exactly once.
        held = set(receiver.held())
        wanted = {c["certificate_id"] for c in certs} | exported
        trial.delivered = len(held & wanted)
        if held != wanted:
            trial.problems.append(f"receiver holds {len(held)} of {len(wanted)} certificates")
        twice = [k for k, n in receiver.created.items() if n != 1]
        if twice:
            trial.problems.append(f"stored more than once: {twice}")
        # Claims.
        if phone_certs:
            outcome = phone_certs[0]["outcome"]
            trial.outcome = outcome
            erased = outcome != "not_erased"
            if erased and not trial.truth_erased:
                trial.problems.append(f"FALSE CLAIM: certified {outcome}, truth not erased")
            if trial.baseline and outcome != trial.baseline:
                if trial.truth_erased and not erased:
                    trial.problems.append(f"claims less: {outcome}, the phone was erased "
                                          f"(uninterrupted: {trial.baseline})")
                elif trial.truth_erased == (trial.baseline != "not_erased"):
                    trial.problems.append(f"outcome {outcome}, uninterrupted {trial.baseline}")

    # -- the whole matrix ---------------------------------------------------------------

    async def calibrate(self, profiles: list[tuple[str, str]]) -> None:
        """One uninterrupted run per profile: its duration (the range the faults are
        drawn from) and its outcome (what a trial must end as when the truth is the
        same). A calibration recorded in the results file is reused, so that a resumed
        or chunked matrix draws the same moments."""
        for index, (platform_name, profile) in enumerate(profiles):
            if profile in self.calibration:
                continue
            trial = Trial(-1 - index, platform_name, profile, "none", 0.0)
            await self.run_uninterrupted(trial)
            if trial.problems:
                raise SystemExit(f"calibration run of {profile} broke: "
                                 + "; ".join(trial.problems))
            self.calibration[profile] = (trial.seconds, trial.outcome)
            log.info("calibration %-24s %5.1f s %s", profile, trial.seconds, trial.outcome)
            self.record({"kind": "calibration", "seed": self.args.seed, "commit": self.commit,
                         "profile": profile, "seconds": trial.seconds,
                         "outcome": trial.outcome})

    def record(self, entry: dict[str, Any]) -> None:
        """Append one line to the results file (--results), flushed: a run stopped
        anywhere resumes after its last finished trial."""
        if self.results_path is None:
            return
        with self.results_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")

    async def run_uninterrupted(self, trial: Trial) -> None:
        trial_dir = self.workdir / f"calibrate-{trial.profile}"
        trial_dir.mkdir(parents=True)
        state = trial_dir / "state"
        receiver = await self.receiver(trial_dir, state)
        phones = await Phones.start(trial.platform, trial.profile, self.speed, trial_dir)
        config = self.config(trial_dir, state, phones, receiver.url, self.server_tls.ca)
        agent = await Agent.start(config, trial_dir / "agent.log", phones)
        started = time.monotonic()
        try:
            await self._settle(trial, agent, phones, state / "journal.sqlite3", receiver)
            trial.seconds = time.monotonic() - started
            await agent.stop()
            await self._check(trial, phones, state, receiver)
        finally:
            await phones.stop()
            await receiver.stop()

    def plan(self, profiles: list[tuple[str, str]]) -> list[Trial]:
        rng = random.Random(self.args.seed)
        faults = [f for f in self.args.faults.split(",") if f]
        trials: list[Trial] = []
        # Profile and fault both cycle, shifted every full round so that over the trials
        # each profile meets each fault (and a short sample still covers both).
        round_length = math.lcm(len(profiles), len(faults))
        for index in range(self.args.trials):
            platform_name, profile = profiles[index % len(profiles)]
            fault = faults[(index % len(faults) + index // round_length) % len(faults)]
            span, outcome = self.calibration[profile]
            trials.append(Trial(index, platform_name, profile, fault,
                                round(rng.uniform(0.0, span), 3), baseline=outcome))
        # Journal damage strikes once the phone's certificate is journaled: profiles whose
        # phones get one.
        certified = [p for p in profiles if self.calibration[p[1]][1]]
        for j in range(self.args.journal_trials):
            platform_name, profile = certified[rng.randrange(len(certified))]
            span, outcome = self.calibration[profile]
            trials.append(Trial(self.args.trials + j, platform_name, profile, "kill9",
                                round(rng.uniform(0.0, span), 3),
                                damage=JOURNAL_DAMAGE[j % len(JOURNAL_DAMAGE)],
                                baseline=outcome))
        return trials

    async def run(self) -> list[Trial]:
        from wipeagent.uplink.tls import ensure_dev_server_tls

        self.server_tls = ensure_dev_server_tls(self.workdir / "receiver-tls")
        profiles = self.profiles()
        await self.calibrate(profiles)
        results = []
        first, last = self.args.only
        for trial in self.plan(profiles):
            if not first <= trial.index < last:
                continue
            if (self.args.seed, trial.index) in self.done:  # resumed: ran already
                results.append(self.done[(self.args.seed, trial.index)])
                continue
            trial.seed, trial.commit = self.args.seed, self.commit
            result = await self.run_trial(trial)
            result.load = round(os.getloadavg()[0], 2)
            results.append(result)
            self.record({"kind": "trial", "command": command_line(), **asdict(result)})
            status = "ok" if result.ok else "BROKEN: " + "; ".join(result.problems)
            log.info("trial %3d %-8s %-12s %-24s at %6.2f s -> %-22s truth %-5s %s",
                     result.index, result.fault, result.damage or "-", result.profile,
                     result.at_s, result.outcome or "-", result.truth_erased, status)
        return results


# --------------------------------------------------------------------------------------
# Faults on the file system
# --------------------------------------------------------------------------------------


def fill(path: Path) -> None:
    """Fill the file system holding `path` to the last block (ENOSPC ends it)."""
    chunk = b"\0" * (1 << 20)
    with contextlib.suppress(OSError), path.open("wb") as fh:
        while True:
            fh.write(chunk)
            fh.flush()
    with contextlib.suppress(OSError), path.open("ab") as fh:
        while True:
            fh.write(b"\0" * 4096)
            fh.flush()


def damage(journal: Path, how: str, rng: random.Random) -> None:
    """Damage the journal while the agent is down (its WAL and index go with it, as a
    restore from an old copy or a broken disk would leave them)."""
    for suffix in ("-wal", "-shm"):
        Path(f"{journal}{suffix}").unlink(missing_ok=True)
    if not journal.exists():
        return
    if how == "delete":
        journal.unlink()
    elif how == "empty":
        journal.write_bytes(b"")
    elif how == "half":
        data = journal.read_bytes()
        journal.write_bytes(data[: len(data) // 2])
    elif how == "zero_header":
        header = bytearray(journal.read_bytes())
        header[:100] = bytes(100)
        journal.write_bytes(bytes(header))
    elif how == "flip_bytes":
        flipped = bytearray(journal.read_bytes())
        for _ in range(64):
            at = rng.randrange(100, max(101, len(flipped)))
            if at < len(flipped):
                flipped[at] ^= 0xFF
        journal.write_bytes(bytes(flipped))


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


def git_commit() -> str:
    """The commit the trials run on (with "+dirty" when tracked files differ from it)."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True,
                              text=True, check=False)
        return done.stdout.strip()

    commit = git("rev-parse", "--short=12", "HEAD") or "unknown"
    return commit + ("+dirty" if git("status", "--porcelain", "--untracked-files=no")
                     else "")


def command_line() -> str:
    return " ".join([".venv/bin/python scripts/fault_matrix.py", *sys.argv[1:]])


def load_results(paths: list[Path]) -> tuple[dict[int, dict[str, tuple[float, str]]],
                                               list[Trial]]:
    """Calibrations (by seed) and trials recorded in results files; a trial recorded twice
    (same seed and index) counts once, the last record winning."""
    calibration: dict[int, dict[str, tuple[float, str]]] = {}
    trials: dict[tuple[int, int], Trial] = {}
    names = {f.name for f in fields(Trial)}
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            entry = json.loads(line)
            if entry["kind"] == "calibration":
                calibration.setdefault(entry["seed"], {})[entry["profile"]] = (
                    entry["seconds"], entry["outcome"])
            elif entry["kind"] == "trial":
                trial = Trial(**{k: v for k, v in entry.items() if k in names})
                trial.notes.append(f"command: {entry.get('command', '')}")
                trials[(trial.seed, trial.index)] = trial
    return calibration, list(trials.values())


def _count(trials: list[Trial], *needles: str) -> int:
    return sum(any(any(n in p for n in needles) for p in t.problems) for t in trials)


def report(results: list[Trial], elapsed: float) -> str:
    """The figures: by fault, by profile and fault, what ran where, and every broken trial."""
    counted = [t for t in results if t.counted]
    kinds = [*FAULTS, *(f"journal:{d}" for d in JOURNAL_DAMAGE)]
    lines = ["| fault | trials | ok | false claims | claims less | lost/doubled | "
             "chain breaks | not delivered once | hung |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def row(name: str, trials: list[Trial]) -> str:
        lost = _count(trials, "certificates for the phone", "without certificate", "left at",
                      "files exported")
        return (f"| {name} | {len(trials)} | {sum(t.ok for t in trials)} | "
                f"{_count(trials, 'FALSE CLAIM')} | {_count(trials, 'claims less', 'outcome ')}"
                f" | {lost} | {_count(trials, 'chain')} | "
                f"{_count(trials, 'receiver holds', 'stored more than once')} | "
                f"{_count(trials, 'timed out', 'exited')} |")

    for kind in kinds:
        mine = [t for t in counted if t.kind == kind]
        if mine:
            lines.append(row(kind, mine))
    lines.append(row("**all**", counted))
    platforms = Counter(t.platform for t in counted)
    outcomes = Counter(t.outcome or "-" for t in counted)
    text = ["\n".join(lines), "",
            f"{len(counted)} trials over {len({t.profile for t in counted})} profiles "
            f"({', '.join(f'{n} {p}' for p, n in sorted(platforms.items()))}); outcomes: "
            + ", ".join(f"{n} {o}" for o, n in sorted(outcomes.items())) + "."]
    skipped = len(results) - len(counted)
    if skipped:
        text[-1] += f" {skipped} disk-full trials skipped (no tmpfs: run as root)."
    refused = [t for t in counted if any("restart refused" in n for n in t.notes)]
    if refused:
        text += ["", f"Journal damage: {len(refused)} of "
                 f"{sum(bool(t.damage) for t in counted)} restarts refused the damaged "
                 "journal (exit 78, naming `wipeagent journal recover`), the matrix ran the "
                 "recovery and started the agent again; the others rebuilt or kept the "
                 "journal on their own. Every one is held to the same checks."]
    # Profile x fault: trials (and broken ones) in each cell.
    columns = ["kill9", "sigterm", "diskfull", "journal"]
    text += ["", "Trials by profile and fault (broken ones marked):", "",
             "| platform | profile | " + " | ".join(columns) + " |",
             "|---|---|" + "---:|" * len(columns)]
    for platform_name, profile in sorted({(t.platform, t.profile) for t in counted}):
        cells = []
        for column in columns:
            mine = [t for t in counted if t.profile == profile
                    and (t.kind == column or (column == "journal" and t.damage))]
            broken = sum(not t.ok for t in mine)
            cells.append(f"{len(mine)}" + (f" ({broken} broken)" if broken else ""))
        text.append(f"| {platform_name} | {profile} | " + " | ".join(cells) + " |")
    failures = [t for t in counted if not t.ok]
    if failures:
        text += ["", "Broken trials:"]
        text += [f"- #{t.index} (seed {t.seed}) {t.kind} {t.profile} at {t.at_s:.2f} s: "
                 + "; ".join(t.problems) for t in failures]
    commits = Counter(t.commit or "unknown" for t in counted)
    commands = sorted({n.removeprefix("command: ") for t in counted for n in t.notes
                       if n.startswith("command: ")} or {command_line()})
    loads = [t.load for t in counted if t.load]
    text += ["", "Run: " + "; ".join(f"`{c}`" for c in commands) + ", at `nice -n 10`.",
             "Code: " + ", ".join(f"{n} trials on commit `{c}`"
                                  for c, n in commits.most_common()) + ".",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPUs shared with other "
             "engineers' work, load average (1 min) at the trials' ends "
             + (f"mean {sum(loads) / len(loads):.1f}, max {max(loads):.1f}" if loads else "-")
             + f"; Python {platform.python_version()}; {elapsed / 60:.0f} min of trials; "
             f"{datetime.now(UTC).date().isoformat()}."]
    return "\n".join(text)


def write_docs(text: str) -> None:
    path = ROOT / "docs" / "reliability.md"
    doc = path.read_text(encoding="utf-8")
    start, end = doc.index(BEGIN) + len(BEGIN), doc.index(END)
    path.write_text(doc[:start] + "\n" + text + "\n" + doc[end:], encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_phones":
        _, platform_name, profile, speed, phones_dir = argv
        asyncio.run(phones_main(platform_name, profile, float(speed), Path(phones_dir)))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--speed", type=float, default=50.0)
    parser.add_argument("--faults", default=",".join(FAULTS))
    parser.add_argument("--journal-trials", type=int, default=0)
    parser.add_argument("--profiles", default="", help="comma-separated profile names")
    parser.add_argument("--diskfull-s", type=float, default=1.5,
                        help="real seconds the agent runs on a full disk")
    parser.add_argument("--results", default="",
                        help="append every trial to this JSON-lines file and skip the "
                        "trials it already holds (resume; chunks share one file)")
    parser.add_argument("--only", default="", metavar="FIRST:END",
                        help="run only the trials numbered FIRST..END-1 of the plan")
    parser.add_argument("--merge", nargs="+", default=[], metavar="RESULTS",
                        help="run nothing: report the trials of these results files")
    parser.add_argument("--keep", action="store_true", help="keep every trial's directory")
    parser.add_argument("--write", action="store_true", help="write docs/reliability.md")
    args = parser.parse_args(argv)
    first, _, end = args.only.partition(":")
    args.only = (int(first or 0), int(end or sys.maxsize))
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.merge:
        _, results = load_results([Path(p) for p in args.merge])
        elapsed = sum(t.seconds for t in results)
    else:
        workdir = Path(tempfile.mkdtemp(prefix="fault-matrix-"))
        started = time.monotonic()
        try:
            results = asyncio.run(Matrix(args, workdir).run())
        finally:
            if not args.keep:
                failed = any(p.name.startswith("trial-") for p in workdir.iterdir())
                if not failed:
                    shutil.rmtree(workdir, ignore_errors=True)
                else:
                    log.info("broken trials kept in %s", workdir)
        elapsed = time.monotonic() - started
    text = report(results, elapsed)
    print(text)
    if args.write:
        write_docs(text)
        log.info("wrote docs/reliability.md")
    counted = [t for t in results if t.counted]
    return 0 if all(t.ok for t in counted) else 1


if __name__ == "__main__":
    sys.exit(main())
