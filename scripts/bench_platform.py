#!/usr/bin/env python3
"""Benchmark: a fleet of benches delivering into the platform service on PostgreSQL.

    .venv/bin/python scripts/bench_platform.py [--stations 100] [--count 3000]
        [--rate 28] [--seconds 60] [--processes 1,2] [--rounds 3] [--clients 4]
        [--no-fsync] [--json FILE]

What it measures, on this machine:

  throughput  STATIONS simulated benches, each with its own station signing certificate
              and TLS client certificate from one organisation CA, deliver COUNT
              certificates concurrently (each bench one at a time, oldest first, over
              its own kept-alive mutual-TLS connection, as the uplink does) into
              `wipeagent platform serve` processes over one PostgreSQL database: every
              certificate fully verified, its station's ledger checked and stored, one
              transaction each. Certificates/s, and the latency of each upload (p50, p99),
              with 1 and with 2 service processes sharing the port (SO_REUSEPORT: the
              kernel spreads the benches' connections, as an L4 load balancer would).
  sustained   the same fleet paced at RATE certificates/s in total (1,000 benches x 100
              phones an hour = 28/s) for SECONDS: latency p50 / p99 and the CPU the
              service processes and PostgreSQL use, i.e. the headroom at the target.

Everything is real: Debian's PostgreSQL (a private cluster with durable settings: fsync
and synchronous commit on), the service as its own processes, TLS 1.3 with client
certificates, certificates issued by the agent's own issuer. The benches run in CLIENTS
forked load-generator processes on the same 2 cores (one event loop for all of them
would pace the fleet by its own scheduling), so the figures are a floor, not a ceiling.
Throughput runs alternate 1 and 2 processes for ROUNDS rounds (noisy shared machine:
compare within a round); each run starts a fresh database.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import multiprocessing.connection
import os
import platform as host_platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import aiohttp  # noqa: E402
from fleet import Org, Station  # noqa: E402
from pg import PgServer  # noqa: E402

from wipeagent.certs.issue import IssuedCertificate  # noqa: E402
from wipeagent.uplink.ingest import MEDIA_TYPE  # noqa: E402
from wipeagent.uplink.tls import ensure_dev_server_tls  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes so far."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICKS


def children_of(pid: int) -> list[int]:
    """The PostgreSQL postmaster and its backends (every process whose parent it is)."""
    found = [pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


@dataclass
class Fleet:
    org: Org
    stations: list[Station]
    server_ca: Path
    work: Path


def make_fleet(work: Path, count: int) -> Fleet:
    org = Org.create(work / "org", "Bench Fleet Refurb")
    stations = [org.station(f"bench-{i:03d}") for i in range(count)]
    server = ensure_dev_server_tls(work / "server-tls")
    return Fleet(org, stations, server.ca, work)


def issue(fleet: Fleet, total: int) -> list[list[IssuedCertificate]]:
    """`total` certificates spread over the stations, each station's a complete ledger
    from sequence 1 (every run starts a fresh database, so every ledger starts there)."""
    per: list[list[IssuedCertificate]] = [[] for _ in fleet.stations]
    for n in range(total):
        i = n % len(fleet.stations)
        chain = per[i]
        chain.append(fleet.stations[i].issue(
            sequence=len(chain) + 1, previous_hash=chain[-1].sha256 if chain else None))
    return per


class Service:
    """`wipeagent platform serve` processes sharing one port over one database."""

    def __init__(self, fleet: Fleet, database: str, processes: int) -> None:
        self.fleet = fleet
        self.database = database
        self.processes = processes
        self.procs: list[subprocess.Popen[str]] = []
        self.url = ""

    def _start_one(self, port: int) -> str:
        proc = subprocess.Popen(
            [str(ROOT / ".venv/bin/wipeagent"), "platform", "serve", "--database",
             self.database, "--listen", f"127.0.0.1:{port}", "--reuse-port",
             "--trust", str(self.fleet.org.ca_cert),
             "--tls-cert", str(self.fleet.work / "server-tls/server.pem"),
             "--tls-key", str(self.fleet.work / "server-tls/server.key"),
             "--pool-size", "20"],
            # Each in its own session, as separate service units are: the kernel's
            # autogroup scheduling shares the CPU between sessions, so processes of one
            # session would split one share however many there are.
            stdout=subprocess.PIPE, text=True, start_new_session=True)
        self.procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = re.search(r"ingest (\S+);", line)
        if not found:
            raise RuntimeError(f"the service did not start: {line!r}")
        return found[1]

    def __enter__(self) -> Service:
        self.url = self._start_one(0)
        port = int(self.url.split(":")[2].split("/")[0])
        for _ in range(self.processes - 1):
            self._start_one(port)
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            proc.wait(timeout=30)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]


@dataclass
class Run:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    problems: int = 0
    elapsed: float = 0.0
    client_cpu: float = 0.0

    def add(self, status: int, seconds: float, receipt: dict[str, Any]) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.latencies.append(seconds)
        if receipt.get("ledger", {}).get("status") != "ok":
            self.problems += 1

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def deliver(fleet: Fleet, url: str, per_station: list[list[IssuedCertificate]],
                  indices: list[int], *, start: float, pace: float | None = None) -> Run:
    """The stations `indices` post their certificates in order, each over its own
    connection; with `pace` (certificates/s of the whole fleet), each station waits for
    its slot in the schedule that starts at `start` (time.time())."""
    run = Run()
    stations = len(per_station)

    async def bench(index: int) -> None:
        station, certs = fleet.stations[index], per_station[index]
        context = station.client_ssl(fleet.server_ca)
        connector = aiohttp.TCPConnector(ssl=context, limit=1)
        async with aiohttp.ClientSession(connector=connector) as http:
            for k, cert in enumerate(certs):
                if pace is not None:  # open loop: slot k of this station
                    due = start + (k * stations + index) / pace
                    await asyncio.sleep(max(0.0, due - time.time()))
                t0 = time.perf_counter()
                async with http.post(url, data=cert.data, headers={
                        "Content-Type": MEDIA_TYPE,
                        "Idempotency-Key": cert.certificate_id}) as response:
                    receipt = json.loads(await response.read())
                    run.add(response.status, time.perf_counter() - t0, receipt)

    cpu = time.process_time()
    await asyncio.gather(*(bench(i) for i in indices))
    run.client_cpu = time.process_time() - cpu
    return run


def _client(fleet: Fleet, url: str, per_station: list[list[IssuedCertificate]],
            indices: list[int], start: float, pace: float | None,
            out: multiprocessing.connection.Connection) -> None:
    run = asyncio.run(deliver(fleet, url, per_station, indices, start=start, pace=pace))
    out.send(run)
    out.close()


def load(fleet: Fleet, url: str, per_station: list[list[IssuedCertificate]],
         pace: float | None, clients: int) -> Run:
    """The fleet's load from `clients` processes (forked: the benches are many machines
    in reality, and one event loop on a shared core would pace them all)."""
    context = multiprocessing.get_context("fork")
    start = time.time() + 1.0  # every client is up before the first slot
    pipes, procs = [], []
    for c in range(clients):
        mine = list(range(c, len(per_station), clients))
        here, there = context.Pipe(duplex=False)
        proc = context.Process(target=_client, args=(fleet, url, per_station, mine, start,
                                                     pace, there))
        proc.start()
        pipes.append(here)
        procs.append(proc)
    runs = [pipe.recv() for pipe in pipes]
    for proc in procs:
        proc.join()
    end = time.time()
    total = Run()
    for run in runs:
        total.latencies += run.latencies
        total.problems += run.problems
        total.client_cpu += run.client_cpu
        for status, n in run.statuses.items():
            total.statuses[status] = total.statuses.get(status, 0) + n
    total.elapsed = end - start
    return total


def measure(fleet: Fleet, pg: PgServer, name: str, processes: int,
            per_station: list[list[IssuedCertificate]], pace: float | None,
            clients: int) -> dict[str, Any]:
    database = pg.create_database(name)
    subprocess.run([str(ROOT / ".venv/bin/wipeagent"), "platform", "migrate", "--database",
                    database], check=True, capture_output=True)
    total = sum(len(c) for c in per_station)
    pg_pids = children_of(int((pg.data / "postmaster.pid").read_text().split()[0]))
    with Service(fleet, database, processes) as service:
        time.sleep(0.5)
        pg_pids = children_of(pg_pids[0])
        cpu0 = (cpu_seconds(service.pids), cpu_seconds(pg_pids))
        run = load(fleet, service.url, per_station, pace, clients)
        pg_pids = children_of(pg_pids[0])
        cpu1 = (cpu_seconds(service.pids), cpu_seconds(pg_pids))
    created = run.statuses.get(201, 0)
    result = {
        "processes": processes, "certificates": total, "created": created,
        "statuses": run.statuses, "ledger_problems": run.problems,
        "seconds": round(run.elapsed, 2), "per_second": round(total / run.elapsed, 1),
        "p50_ms": round(run.pct(0.50), 1), "p99_ms": round(run.pct(0.99), 1),
        "service_cpu_s": round(cpu1[0] - cpu0[0], 1),
        "postgres_cpu_s": round(cpu1[1] - cpu0[1], 1),
        "load_generator_cpu_s": round(run.client_cpu, 1), "load_generators": clients,
    }
    result["service_cpu_ms_per_cert"] = round(1000 * result["service_cpu_s"] / total, 2)
    result["service_cores_busy"] = round(result["service_cpu_s"] / run.elapsed, 2)
    result["postgres_cores_busy"] = round(result["postgres_cpu_s"] / run.elapsed, 2)
    result["load_generator_cores_busy"] = round(run.client_cpu / run.elapsed, 2)
    if created != total:
        raise RuntimeError(f"{name}: only {created}/{total} stored: {run.statuses}")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stations", type=int, default=100)
    parser.add_argument("--count", type=int, default=3000,
                        help="certificates per throughput run")
    parser.add_argument("--rate", type=float, default=28.0,
                        help="certificates/s of the sustained run (0: skip it)")
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="length of the sustained run")
    parser.add_argument("--processes", default="1,2")
    parser.add_argument("--rounds", type=int, default=3,
                        help="throughput runs per process count, in alternating order")
    parser.add_argument("--clients", type=int, default=4,
                        help="load-generator processes the stations are spread over")
    parser.add_argument("--no-fsync", action="store_true",
                        help="PostgreSQL with fsync and synchronous commit off (to tell "
                        "the disk's share of the time; never how to run a platform)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    counts = [int(p) for p in args.processes.split(",")]

    work = Path(tempfile.mkdtemp(prefix="wipeagent-bench-platform-"))
    t0 = time.perf_counter()
    fleet = make_fleet(work, args.stations)
    # Every run starts a fresh database, so one set of ledgers serves every throughput run.
    throughput_set = issue(fleet, args.count)
    sustained = issue(fleet, int(args.rate * args.seconds)) if args.rate else None
    generated = time.perf_counter() - t0
    print(f"{args.stations} stations, {args.count} + "
          f"{sum(len(c) for c in sustained or [])} certificates issued in "
          f"{generated:.0f} s", flush=True)

    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": host_platform.python_version(),
                    "load_before": os.getloadavg()},
        "stations": args.stations, "runs": []}
    results["durable"] = not args.no_fsync
    with PgServer.start(durable=not args.no_fsync, max_connections=200) as pg:
        for rnd in range(args.rounds):
            # Side by side, alternating the order: this machine is shared and noisy.
            for n in counts if rnd % 2 == 0 else list(reversed(counts)):
                r = measure(fleet, pg, f"throughput_{rnd}_{n}", n, throughput_set, None,
                            args.clients)
                results["runs"].append({"kind": "throughput", "round": rnd + 1, **r})
                print(f"round {rnd + 1}, {n} process(es): {r['per_second']} certificates/s "
                      f"(p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms; service "
                      f"{r['service_cores_busy']} cores, PostgreSQL "
                      f"{r['postgres_cores_busy']} cores)", flush=True)
        if sustained is not None:
            r = measure(fleet, pg, "sustained", counts[0], sustained, args.rate, args.clients)
            results["runs"].append({"kind": "sustained", "rate": args.rate, **r})
            print(f"sustained {args.rate}/s, {counts[0]} process(es): achieved "
                  f"{r['per_second']}/s, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms; "
                  f"service {r['service_cores_busy']} cores, PostgreSQL "
                  f"{r['postgres_cores_busy']} cores", flush=True)
    results["machine"]["load_after"] = os.getloadavg()
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
