#!/usr/bin/env python3
"""Benchmark: the agent with many phones plugged in at once, agent and phones apart.

    .venv/bin/python scripts/bench_sessions.py [--phones 8,64,256] [--speed 1,20]
                                               [--rounds 1] [--write]

Each round runs three processes: this one (the conductor), a *phones* process and an
*agent* process (both this script, started with a hidden sub-command):

- the phones process starts N simulated Android phones (copies of the `pixel8-clean`
  profile with distinct serials, each behind its own fake adbd on loopback speaking the
  real ADB protocol), all unplugged; it records when each phone's own reboot takes it
  offline and when it listens again;
- the agent process builds the real agent exactly as `wipeagent run` does
  (`assemble.build_agent` with the demo configuration and the phones as TCP endpoints,
  `runner.tune_gc` after start-up) and runs it until every phone has a finished session;
- the conductor starts the agent, waits a little, has every phone plugged in at once,
  and collects both sides' figures. Clocks: both processes stamp events with
  `time.monotonic()` (CLOCK_MONOTONIC, one clock for the whole machine).

What it reports per round (the agent's figures are the agent process's alone):

  sessions       finished sessions (one per phone unless one needed a second; cancelled or
                 crashed sessions are not counted: a round only ends when every phone has
                 a finished session, or at --timeout)
  erased 1st     phones whose first finished session ended `erased`
  pauses         sessions paused by a departure (no phone is unplugged in this benchmark,
                 so every one is a false departure)
  false dep.     departures announced for a phone whose session was not in its erase
                 reboot (they would pause it); a finished phone may leave (the hand-off
                 turns USB debugging off last), which is counted in `departures` only
  ident p50/p99  plug-in -> identified, real seconds
  back p99       the phone listening again after its reset -> the agent's re-identified
                 phone ("verify" step), bench seconds
  overhead       median over phones of (plug-in -> certified) / (the phone's own time) - 1,
                 where the phone's own time is its reboot as measured in the phones process
                 plus the profile's 1 bench second between answering the erase and going
                 down; everything else (command round trips, polling, waiting, the agent's
                 compute) counts against the agent
  agent CPU      user + system CPU seconds of the agent process during the round, and per
                 finished session (= per phone-cycle)
  phones CPU     the same for the phones process
  RSS            peak resident memory of the agent process (its ru_maxrss)
  signs/phone    RSA signatures made by the agent (one per authenticated ADB connection)
  TCP/phone      TCP connections the agent tried to open (probes and sessions)
  GC             share of the agent's CPU spent in garbage collection, and the longest
                 collection (CPU milliseconds)
  lag p99/max    how late a task sleeping 50 ms in a loop wakes in the agent process
  threads        the most threads alive at once in the agent process
  fds            the most descriptors open at once in the agent process

With BENCH_SESSIONS_PROFILE=FILE in the environment the agent's run is profiled with
cProfile and the statistics written to FILE (a development aid: it slows the agent down).

With --write, replaces the block between the `bench_sessions` markers in
docs/benchmarks.md with the table and the command line and machine load. The script exits
1 if a round did not finish, a phone's first session did not end `erased`, or a session
paused (after printing, so a failure is recorded, not hidden).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import platform
import re
import resource
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROFILE_NAME = "pixel8-clean"
BEGIN = "<!-- bench_sessions:begin -->"
END = "<!-- bench_sessions:end -->"
LAG_PERIOD = 0.050  # seconds the lag probe asks to sleep (20 wake-ups a second)
# The profile answers `cmd testharness enable`, then goes down this many bench seconds
# later (wipeagent_sim.android.phone.POWER_CYCLE_DELAY): phone time, not agent time.
ERASE_TO_DOWN_S = 1.0


# --------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def _stdin_lines() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def _read_command(reader: asyncio.StreamReader) -> dict[str, Any]:
    line = await reader.readline()
    if not line:
        return {"do": "stop"}
    value = json.loads(line)
    assert isinstance(value, dict)
    return value


def write_profiles(directory: Path, count: int) -> list[Path]:
    """COUNT copies of pixel8-clean, each with its own serial (and so its own state dir)."""
    from wipeagent_sim.android.profiles import PROFILE_DIR

    text = (PROFILE_DIR / f"{PROFILE_NAME}.toml").read_text(encoding="utf-8")
    match = re.search(r'^serial = "([A-Za-z0-9]+)"$', text, flags=re.M)
    if match is None:
        raise SystemExit(f"{PROFILE_NAME}: no serial line to rewrite")
    base = match.group(1)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        serial = f"{base[:-4]}{i:04d}"  # same length as a real serial
        path = directory / f"bench-{i:04d}.toml"
        path.write_text(text.replace(match.group(0), f'serial = "{serial}"'), encoding="utf-8")
        paths.append(path)
    return paths


def authorise_bench_key(workdir: Path, profiles: list[Path]) -> None:
    """Create the agent's ADB key where build_agent will load it and make every phone
    trust it already, as phones that tapped "Always allow" for this bench do: the
    profile's "Allow USB debugging?" prompt (a person's 4 seconds) is not agent time."""
    from wipeagent.assemble import Paths
    from wipeagent.transports.adb import AdbHostKey

    key = AdbHostKey.load_or_create(Paths(workdir / "state").adb_key)
    for profile in profiles:
        match = re.search(r'^serial = "([A-Za-z0-9]+)"$', profile.read_text(encoding="utf-8"),
                          flags=re.M)
        assert match is not None
        keys = workdir / "sims" / match.group(1) / "adb_keys"  # SimAndroidPhone's key file
        keys.parent.mkdir(parents=True, exist_ok=True)
        keys.write_bytes(key.public_key.rstrip(b"\0") + b"\n")


# --------------------------------------------------------------------------------------
# The phones process
# --------------------------------------------------------------------------------------


async def phones_main(count: int, speed: float, workdir: Path) -> None:
    """N simulated phones, unplugged until told; reports their reboots."""
    from wipeagent.clock import Clock
    from wipeagent_sim.android.bench import SimBench

    logging.basicConfig(level=logging.ERROR)
    clock = Clock(speed)
    down: dict[str, list[float]] = {}
    up: dict[str, list[float]] = {}
    profiles = write_profiles(workdir / "profiles", count)
    authorise_bench_key(workdir, profiles)
    async with SimBench(profiles=profiles, state_dir=workdir / "sims", clock=clock) as bench:
        serials = []
        for entry in bench.phones:
            serial = entry.phone.serial
            serials.append(serial)
            bench.unplug(serial)
            down[serial], up[serial] = [], []

            def record(online: bool, serial: str = serial) -> None:
                (up if online else down)[serial].append(time.monotonic())

            bench.server(serial).power_listeners.append(record)
        _emit({"ready": [{"serial": e.phone.serial, "address": f"{e.host}:{e.port}"}
                         for e in bench.phones]})
        reader = await _stdin_lines()
        cpu0 = _cpu()
        while True:
            command = await _read_command(reader)
            if command["do"] == "plug":
                cpu0 = _cpu()
                for serial in serials:
                    bench.plug(serial)
                _emit({"plugged": time.monotonic()})
            elif command["do"] == "report":
                _emit({"cpu": _cpu() - cpu0, "down": down, "up": up})
            else:
                break


# --------------------------------------------------------------------------------------
# The agent process
# --------------------------------------------------------------------------------------


class GcTimer:
    """CPU time spent in garbage collection while installed (gc.callbacks). CPU, not wall
    time: on a loaded machine a collection's wall time includes whatever time the process
    was not scheduled, which is not the collector's."""

    def __init__(self) -> None:
        self.total = 0.0
        self.longest = 0.0
        self.collections = [0, 0, 0]
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.process_time()
            return
        spent = time.process_time() - self._start
        self.total += spent
        self.longest = max(self.longest, spent)
        self.collections[info.get("generation", 0)] += 1


class LagProbe:
    """Sleeps LAG_PERIOD in a loop and records how late each wake-up is (and threads)."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self.threads = threading.active_count()
        self.fds = 0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(LAG_PERIOD)
            self.lags.append(max(0.0, loop.time() - start - LAG_PERIOD))
            self.threads = max(self.threads, threading.active_count())
            if len(self.lags) % 5 == 0:  # open descriptors, four times a second
                self.fds = max(self.fds, len(os.listdir("/proc/self/fd")))


class Counters:
    """Instrumentation only: counts what the agent does, never changes it."""

    def __init__(self) -> None:
        self.signs = 0
        self.tcp = 0

    def install(self) -> None:
        from adb_shell.auth.sign_cryptography import CryptographySigner

        sign = CryptographySigner.Sign
        connect = socket.socket.connect

        def counted_sign(signer: Any, data: Any) -> Any:
            self.signs += 1
            return sign(signer, data)

        def counted_connect(sock: socket.socket, address: Any) -> None:
            # Every TCP connection attempt ends up here (asyncio's sock_connect and
            # open_connection both call socket.connect first).
            self.tcp += 1
            connect(sock, address)

        CryptographySigner.Sign = counted_sign  # type: ignore[method-assign]
        socket.socket.connect = counted_connect  # type: ignore[method-assign]


@dataclass
class Seen:
    """What the agent's observer saw of one slot (monotonic times)."""

    identified: float | None = None
    returned: float | None = None
    done: float | None = None


async def agent_main(speed: float, workdir: Path, limit_s: float, gc_variant: str) -> None:
    """The real agent over the phones' endpoints, until every phone finished a session."""
    from wipeagent.assemble import build_agent
    from wipeagent.clock import Clock
    from wipeagent.daemon import Agent
    from wipeagent.session import SessionEvent
    from wipeagent.sources import PhoneDeparture, SourceEvent
    from wipeagent_sim.demo import demo_config

    # Warnings (a lost answer, a failed session) go to a file the conductor keeps when a
    # round fails.
    logging.basicConfig(level=logging.WARNING, filename=workdir / "agent.log",
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    counters = Counters()
    counters.install()
    reader = await _stdin_lines()
    endpoints: list[str] = (await _read_command(reader))["endpoints"]
    clock = Clock(speed)
    seen: dict[str, Seen] = {}
    pauses = 0

    def observe(event: SessionEvent) -> None:
        nonlocal pauses
        slot = seen.setdefault(event.slot, Seen())
        now = time.monotonic()
        step = str(getattr(event.step, "value", event.step))
        if step == "identify" and slot.identified is None:
            slot.identified = now
        elif step == "verify" and slot.returned is None:
            slot.returned = now
        elif step == "done" and slot.done is None:
            slot.done = now
        elif step == "paused":
            pauses += 1

    config = demo_config(workdir / "state")
    agent, store, _ = await build_agent(config, clock=clock, extra_endpoints=endpoints,
                                        observer=observe)
    departures = false_departures = 0
    handle = agent.handle

    def counted_handle(event: SourceEvent) -> None:
        nonlocal departures, false_departures
        if isinstance(event, PhoneDeparture):
            departures += 1
            running = agent.running.get(event.key)
            if running is not None and not running.session.expects_departure:
                # It would pause a session: no phone is unplugged here, so it is false. (A
                # phone whose session ended may well leave: the hand-off turns USB
                # debugging off as its last step.)
                false_departures += 1
                logging.getLogger("bench_sessions").warning(
                    "false departure of %s: its session is not in its erase reboot",
                    event.slot)
        handle(event)

    agent.handle = counted_handle  # type: ignore[method-assign]
    if gc_variant != "default":
        # As `wipeagent run` does once started (wipeagent.service.gctune); a variant
        # "a,b,c" sets those thresholds instead of the shipped ones (for comparisons).
        from wipeagent.service.gctune import tune_gc

        thresholds = [int(x) for x in gc_variant.split(",")] if "," in gc_variant else []
        tune_gc(*thresholds)
    gc_timer = GcTimer()
    probe = LagProbe()

    def finished(a: Agent) -> bool:
        return len({r.slot for r in a.results}) >= len(endpoints)

    _emit({"ready": True})
    await _read_command(reader)  # go
    probe_task = asyncio.create_task(probe.run())
    gc.callbacks.append(gc_timer)
    profile = os.environ.get("BENCH_SESSIONS_PROFILE")
    profiler = None
    if profile:  # cProfile of the agent's run (a development aid; slows the agent down)
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    cpu0, t0 = _cpu(), time.monotonic()
    timed_out = False
    try:
        async with asyncio.timeout(limit_s):
            await agent.run(until=finished)
    except TimeoutError:
        timed_out = True
    finally:
        cpu, wall = _cpu() - cpu0, time.monotonic() - t0
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile)
        gc.callbacks.remove(gc_timer)
        probe_task.cancel()
        await store.close()
    first: dict[str, dict[str, Any]] = {}
    sessions: dict[str, int] = {}
    for r in agent.results:  # in the order the sessions finished
        sessions[r.slot] = sessions.get(r.slot, 0) + 1
        first.setdefault(r.slot, {"outcome": r.outcome.value, "reason": (r.reasons or [""])[0]})
    lags = sorted(probe.lags) or [0.0]
    _emit({"result": {
        "timed_out": timed_out, "cpu": cpu, "wall": wall, "sessions": sessions,
        "first": first, "pauses": pauses, "departures": departures,
        "false_departures": false_departures,
        "seen": {slot: vars(s) for slot, s in seen.items()},
        "lag_p99": lags[min(len(lags) - 1, int(len(lags) * 0.99))], "lag_max": lags[-1],
        "threads": probe.threads, "fds": probe.fds, "gc_total": gc_timer.total,
        "gc_longest": gc_timer.longest,
        "gc_collections": gc_timer.collections, "signs": counters.signs, "tcp": counters.tcp,
        # Peak RSS of this process (ru_maxrss is in KiB on Linux).
        "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }})
    await _read_command(reader)  # stop


# --------------------------------------------------------------------------------------
# The conductor
# --------------------------------------------------------------------------------------


@dataclass
class Round:
    """The figures of one round."""

    gc: str  # "tuned" (as `wipeagent run`), "default" (CPython's), or thresholds "a,b,c"
    speed: float
    phones: int
    wall: float
    timed_out: bool
    sessions: int
    erased: int
    failures: list[str]
    pauses: int
    false_departures: int
    ident: list[float]  # plug-in -> identified, real s, per phone
    back: list[float]  # phone listening again -> re-identified, bench s, per phone
    overhead: list[float]  # per phone: cycle / phone's own time - 1
    agent_cpu: float
    phones_cpu: float
    rss_mb: float
    signs: int
    tcp: int
    gc_total: float
    gc_longest: float
    gc_collections: list[int]
    lag_p99: float
    lag_max: float
    threads: int
    fds: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return (not self.timed_out and self.erased == self.phones and not self.pauses
                and not self.false_departures)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


class Child:
    """A child process speaking JSON lines on stdin/stdout."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, *args: str) -> Child:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, *args, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, limit=1 << 26)
        return cls(proc)

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(message) + "\n").encode())

    async def receive(self, within_s: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), within_s)
        if not line:
            raise RuntimeError(f"child {self.proc.pid} ended (exit {await self.proc.wait()})")
        value = json.loads(line)
        assert isinstance(value, dict)
        return value

    async def finish(self) -> None:
        """Close its stdin (it ends) and wait for it."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 60)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


async def run_round(count: int, speed: float, limit_s: float, reboot_s: float,
                    gc_variant: str) -> Round:
    with tempfile.TemporaryDirectory(prefix="scale-bench-") as tmp:
        phones = await Child.start("_phones", str(count), str(speed), tmp)
        ready = await phones.receive(120)
        slots = {f"tcp:{p['address']}": p["serial"] for p in ready["ready"]}
        agent = await Child.start("_agent", str(speed), tmp, str(limit_s), gc_variant)
        agent.send({"endpoints": [p["address"] for p in ready["ready"]]})
        await agent.receive(120)
        agent.send({"do": "go"})
        # Let the agent's sources settle into their polling before the phones arrive.
        await asyncio.sleep(1.0)
        phones.send({"do": "plug"})
        plugged = (await phones.receive(60))["plugged"]
        result = (await agent.receive(limit_s + 120))["result"]
        phones.send({"do": "report"})
        report = await phones.receive(60)
        agent.send({"do": "stop"})
        await agent.finish()
        await phones.finish()
        log = Path(tmp) / "agent.log"
        kept = Path(tempfile.gettempdir()) / f"bench_sessions-agent-{os.getpid()}-{count}.log"
        bad = (result["timed_out"] or result["pauses"] or result["false_departures"]
               or len(result["first"]) < count
               or any(v["outcome"] != "erased" for v in result["first"].values()))
        if bad and log.exists():  # kept for the failure report
            shutil.copy(log, kept)
    seen = result["seen"]
    ident, back, overhead = [], [], []
    parts: dict[str, list[float]] = {"plug->ident": [], "ident->down": [], "down->up": [],
                                     "up->re-ident": [], "re-ident->certified": []}
    for slot, serial in slots.items():
        s = seen.get(slot, {})
        if s.get("identified") is not None:
            ident.append(s["identified"] - plugged)
        ups = [t for t in report["up"].get(serial, []) if t > plugged]
        downs = [t for t in report["down"].get(serial, []) if t > plugged]
        if s.get("returned") is not None and ups:
            back.append((s["returned"] - ups[0]) * speed)
        if s.get("done") is not None and ups and downs and s.get("returned") is not None:
            own = (ups[0] - downs[0]) * speed + ERASE_TO_DOWN_S
            cycle = (s["done"] - plugged) * speed
            overhead.append(cycle / own - 1)
            marks = [plugged, s["identified"], downs[0], ups[0], s["returned"], s["done"]]
            for name, a, b in zip(parts, marks, marks[1:], strict=False):
                parts[name].append((b - a) * speed)
    first = result["first"]
    failures = [f"{v['outcome']}: {v['reason']}" for v in first.values()
                if v["outcome"] != "erased"]
    failures += [f"no finished session for {slot}" for slot in slots if slot not in first]
    return Round(
        gc=gc_variant, speed=speed, phones=count, wall=result["wall"],
        timed_out=result["timed_out"],
        sessions=sum(result["sessions"].values()),
        erased=sum(v["outcome"] == "erased" for v in first.values()), failures=failures,
        pauses=result["pauses"], false_departures=result["false_departures"],
        ident=ident, back=back, overhead=overhead, agent_cpu=result["cpu"],
        phones_cpu=report["cpu"], rss_mb=result["rss_kib"] / 1024, signs=result["signs"],
        tcp=result["tcp"], gc_total=result["gc_total"], gc_longest=result["gc_longest"],
        gc_collections=result["gc_collections"], lag_p99=result["lag_p99"],
        lag_max=result["lag_max"], threads=result["threads"], fds=result["fds"],
        extra={"departures": result["departures"], "reboot_s": reboot_s, "log": str(kept),
               "parts": {k: statistics.median(v) for k, v in parts.items() if v}})


HEADER = ("| gc | speed | phones | sessions | wall s | erased 1st | pauses | false dep. "
          "| ident p50 s | ident p99 s | back p99 bench s | overhead | agent CPU s "
          "| agent CPU/cycle s | phones CPU s | agent RSS MB | signs/phone | TCP/phone "
          "| GC % of CPU | longest GC ms | lag p99 ms | lag max ms | threads | fds |")


def table(rounds: list[Round]) -> str:
    lines = [HEADER, "|" + "|".join([" ---: "] * (HEADER.count("|") - 1)) + "|"]
    for r in rounds:
        n = max(r.sessions, 1)
        lines.append(
            f"| {r.gc} | {r.speed:g} | {r.phones} | {r.sessions} | {r.wall:.1f}"
            f"{' (timeout)' if r.timed_out else ''} | {r.erased}/{r.phones} | {r.pauses} "
            f"| {r.false_departures} | {_pct(r.ident, 0.5):.2f} | {_pct(r.ident, 0.99):.2f} "
            f"| {_pct(r.back, 0.99):.2f} "
            f"| {statistics.median(r.overhead) if r.overhead else float('nan'):.1%} "
            f"| {r.agent_cpu:.1f} | {r.agent_cpu / n:.3f} | {r.phones_cpu:.1f} "
            f"| {r.rss_mb:.0f} | {r.signs / r.phones:.2f} | {r.tcp / r.phones:.1f} "
            f"| {r.gc_total / r.agent_cpu if r.agent_cpu else 0:.1%} "
            f"| {r.gc_longest * 1000:.0f} | {r.lag_p99 * 1000:.0f} | {r.lag_max * 1000:.0f} "
            f"| {r.threads} | {r.fds} |")
    return "\n".join(lines)


def machine(load_before: str) -> str:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{os.cpu_count()} CPUs ({platform.machine()}), Python "
            f"{platform.python_version()}, load average {load_before} before and {load} after")


def write_docs(text: str) -> None:
    path = ROOT / "docs" / "benchmarks.md"
    doc = path.read_text(encoding="utf-8")
    start, end = doc.find(BEGIN), doc.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"docs/benchmarks.md has no {BEGIN} ... {END} block")
    path.write_text(doc[:start + len(BEGIN)] + "\n" + text + "\n" + doc[end:], encoding="utf-8")


def _reboot_seconds() -> float:
    from wipeagent_sim.android.profiles import PROFILE_DIR

    text = (PROFILE_DIR / f"{PROFILE_NAME}.toml").read_text(encoding="utf-8")
    match = re.search(r"^reboot_seconds = ([0-9.]+)$", text, flags=re.M)
    return float(match.group(1)) if match else float("nan")


def report_round(r: Round) -> None:
    print(f"gc {r.gc}, speed {r.speed:g}, {r.phones:>4} phones: {r.wall:6.1f} s wall, agent "
          f"{r.agent_cpu:6.1f} s CPU, phones {r.phones_cpu:6.1f} s CPU, erased first "
          f"{r.erased}/{r.phones}, pauses {r.pauses}, departures {r.extra['departures']} "
          f"({r.false_departures} false), GC passes {r.gc_collections}",
          file=sys.stderr, flush=True)
    print("  cycle, median bench s: " + ", ".join(
        f"{k} {v:.2f}" for k, v in r.extra["parts"].items()), file=sys.stderr, flush=True)


async def conductor(args: argparse.Namespace) -> int:
    try:
        counts = sorted({int(x) for x in args.phones.split(",") if x.strip()})
        speeds = [float(x) for x in args.speed.split(",") if x.strip()]
    except ValueError as exc:
        raise SystemExit(f"--phones and --speed want comma-separated numbers: {exc}") from None
    if not counts or counts[0] < 1 or not speeds or min(speeds) <= 0 or args.rounds < 1:
        raise SystemExit("--phones wants positive integers, --speed positive numbers")
    load_before = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    reboot = _reboot_seconds()
    rounds: list[Round] = []
    variants = [v.strip() for v in args.gc.split(";") if v.strip()]
    for speed in speeds:
        for count in counts:
            for _ in range(args.rounds):
                for variant in variants:
                    r = await run_round(count, speed, args.timeout, reboot, variant)
                    rounds.append(r)
                    report_round(r)
    text = table(rounds)
    print(text)
    failed = [r for r in rounds if not r.ok]
    for r in failed:
        print(f"FAIL: speed {r.speed:g}, {r.phones} phones: timed out {r.timed_out}, erased "
              f"first {r.erased}/{r.phones}, pauses {r.pauses}, false departures "
              f"{r.false_departures}", file=sys.stderr)
        for reason in sorted(set(r.failures))[:5]:
            print(f"  {reason[:200]}", file=sys.stderr)
        print(f"  the agent's warnings: {r.extra['log']}", file=sys.stderr)
    if args.write:
        command = "scripts/bench_sessions.py " + " ".join(sys.argv[1:])
        write_docs(f"Measured {datetime.now(UTC):%Y-%m-%d} on {machine(load_before)}, "
                   f"`{command.strip()}`:\n\n{text}")
        print("wrote docs/benchmarks.md", file=sys.stderr)
    return 1 if failed else 0


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_phones":
        count, speed, workdir = int(sys.argv[2]), float(sys.argv[3]), Path(sys.argv[4])
        asyncio.run(phones_main(count, speed, workdir))
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "_agent":
        speed, workdir, timeout = float(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4])
        asyncio.run(agent_main(speed, workdir, timeout, sys.argv[5]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--phones", default="8,64",
                        help="comma-separated phone counts, run smallest first")
    parser.add_argument("--speed", default="20",
                        help="clock speed factor(s), comma-separated; every phone count runs "
                             "at each (default 20)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds per phone count")
    parser.add_argument("--gc", default="tuned",
                        help="garbage collection variants run side by side, ';'-separated: "
                             "tuned (as `wipeagent run`), default (CPython's), or young,"
                             "middle,old thresholds after gc.freeze (default: tuned)")
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="real seconds a round may take before it counts as failed")
    parser.add_argument("--write", action="store_true",
                        help="replace the bench_sessions block of docs/benchmarks.md")
    args = parser.parse_args()
    return asyncio.run(conductor(args))


if __name__ == "__main__":
    sys.exit(main())
