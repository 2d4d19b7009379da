#!/usr/bin/env python3
"""Benchmark: certificate delivery (the outbox and the uplink) against a plain HTTP loop.

    .venv/bin/python scripts/bench_uplink.py [--count 2000] [--rounds 3]
        [--pick-sizes 1000,5000,20000] [--drain-sizes 5000,10000,20000] [--json FILE]

What it measures, on this machine, with the reference receiver in its own process
(`wipeagent receiver`, mutual TLS on 127.0.0.1, a fresh store directory for every run so
each run stores every certificate anew):

  throughput  COUNT certificates delivered by the agent's `Uplink` (journal, outbox,
              receipts journaled) and by a plain aiohttp loop posting the same payloads
              (read into memory first) over the same kind of connection, side by side in
              each of ROUNDS rounds, in alternating order. Ratio = uplink / plain.
  pick        the cost of `Outbox.next_due` (choosing the next certificate to send) with
              a backlog of N pending certificates (median of 200 calls).
  drain       a backlog of N pending certificates drained by the uplink (time, and time
              per certificate: constant when draining is linear in N), while a session
              journals a step every 50 ms; step latency p50 / p99 while it drains, against
              the same session journaling on an idle agent just before.

Certificates are real: development PKI, signed and self-verified by `issue_certificate`,
journaled by `Store.append_certificate` (synchronous=OFF while generating only; every
measured run uses the journal's own settings). They are generated once per work
directory and reused (`--workdir`, default /tmp/wipeagent-bench-uplink).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "uplink"))
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from uplink_fixtures import record  # noqa: E402

from wipeagent.certs.issue import issue_certificate  # noqa: E402
from wipeagent.certs.pki import CA_CERT, ensure_dev_pki  # noqa: E402
from wipeagent.clock import Clock  # noqa: E402
from wipeagent.store import ChainHead, NewCertificate, Store  # noqa: E402
from wipeagent.uplink.client import Uplink, UplinkSettings  # noqa: E402
from wipeagent.uplink.outbox import Outbox  # noqa: E402
from wipeagent.uplink.tls import (  # noqa: E402
    client_context,
    ensure_dev_client_tls,
    ensure_dev_server_tls,
)

STEP_INTERVAL_S = 0.05


# -- material ---------------------------------------------------------------------------


async def generate(journal: Path, dev_pki: Path, count: int) -> None:
    """A journal holding `count` signed certificates, nothing delivered."""
    signer = ensure_dev_pki(dev_pki, station_id="bench-01")
    tmp = journal.with_suffix(".part")
    tmp.unlink(missing_ok=True)
    store = await Store(tmp).open()
    try:
        await store.run(lambda db: db.execute("PRAGMA synchronous=OFF"))
        for n in range(1, count + 1):
            rec = record(n)
            await store.create_session(rec.session_id, rec.slot)

            def issue(head: ChainHead, rec: Any = rec) -> NewCertificate:
                issued = issue_certificate(rec, signer, sequence=head.sequence + 1,
                                           previous_hash=head.sha256, development=True,
                                           verification_url=None)
                return NewCertificate(issued.certificate_id, issued.sha256,
                                      rec.outcome.value, issued.data)

            await store.append_certificate(rec.session_id, rec.station.station_id, issue)
            if n % 2000 == 0:
                print(f"  generated {n}/{count}", flush=True)
    finally:
        await store.close()
    os.replace(tmp, journal)


def remove_journal(journal: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{journal}{suffix}").unlink(missing_ok=True)


def copy_journal(source: Path, target: Path, keep: int) -> None:
    """A copy of `source` holding its first `keep` certificates, none delivered."""
    remove_journal(target)
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    db = sqlite3.connect(target)
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        doomed = "SELECT certificate_id FROM certificates WHERE sequence > ?"
        for table in ("deliveries", "outbox", "outbox_queue"):
            if table in tables:
                db.execute(f"DELETE FROM {table} WHERE certificate_id IN ({doomed})", (keep,))
        db.execute("DELETE FROM certificates WHERE sequence > ?", (keep,))
        db.commit()
        (n,) = db.execute("SELECT COUNT(*) FROM certificates").fetchone()
        assert n == keep, (n, keep)
    finally:
        db.close()


def payloads(journal: Path) -> list[tuple[str, bytes]]:
    db = sqlite3.connect(journal)
    try:
        return [(r[0], bytes(r[1])) for r in db.execute(
            "SELECT certificate_id, data FROM certificates ORDER BY sequence")]
    finally:
        db.close()


@dataclass
class Tls:
    server_cert: Path
    server_key: Path
    server_ca: Path
    client_cert: Path
    client_key: Path
    dev_ca: Path


def tls_material(work: Path) -> Tls:
    dev_pki = work / "dev-pki"
    ensure_dev_pki(dev_pki, station_id="bench-01")
    server = ensure_dev_server_tls(work / "server-tls")
    client = ensure_dev_client_tls(dev_pki, station_id="bench-01")
    return Tls(server.cert, server.key, server.ca, client.cert, client.key,
               dev_pki / "ca" / CA_CERT)


class ReceiverProcess:
    """`wipeagent receiver` in its own process, on an ephemeral port."""

    def __init__(self, tls: Tls, store_dir: Path) -> None:
        self.tls = tls
        self.store_dir = store_dir
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def __enter__(self) -> ReceiverProcess:
        shutil.rmtree(self.store_dir, ignore_errors=True)
        cmd = [sys.executable, "-m", "wipeagent.cli", "receiver", "--listen", "127.0.0.1:0",
               "--store", str(self.store_dir), "--trust", str(self.tls.dev_ca),
               "--tls-cert", str(self.tls.server_cert), "--tls-key", str(self.tls.server_key),
               "--client-ca", str(self.tls.dev_ca)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            found = re.search(r"receiving at (https://\S+)", line)
            if found:
                self.url = found.group(1).rstrip(";")
                return self
        self.proc.kill()
        raise RuntimeError("the receiver did not start")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.store_dir, ignore_errors=True)

    def held(self) -> int:
        return sum(1 for _ in self.store_dir.glob("*.jws"))


# -- the two delivery loops ---------------------------------------------------------------


@dataclass
class Run:
    certificates: int
    seconds: float
    cpu_s: float

    @property
    def rate(self) -> float:
        return self.certificates / self.seconds


def settings(url: str) -> UplinkSettings:
    return UplinkSettings(url=url, timeout_s=30, backoff_initial_s=1, backoff_max_s=5,
                          poll_interval_s=5)


async def run_uplink(journal: Path, tls: Tls, url: str) -> Run:
    context = client_context(ca=tls.server_ca, cert=tls.client_cert, key=tls.client_key)
    store = await Store(journal).open()
    try:
        (n,) = (await store.run(lambda db: db.execute(
            "SELECT COUNT(*) FROM certificates").fetchone()))
        uplink = Uplink(store, Clock(1.0), settings(url), context)
        cpu, start = time.process_time(), time.perf_counter()
        await uplink.run(until_idle=True)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        report = await uplink.report()
        assert report.delivered == n and report.pending == 0, report
        return Run(n, elapsed, cpu)
    finally:
        await store.close()


async def run_plain(items: list[tuple[str, bytes]], tls: Tls, url: str) -> Run:
    context = client_context(ca=tls.server_ca, cert=tls.client_cert, key=tls.client_key)
    connector = aiohttp.TCPConnector(ssl=context, limit=1)
    async with aiohttp.ClientSession(connector=connector) as http:
        cpu, start = time.process_time(), time.perf_counter()
        for certificate_id, data in items:
            headers = {"Content-Type": "application/jose+json", "Accept": "application/json",
                       "Idempotency-Key": certificate_id}
            async with http.post(url, data=data, headers=headers) as response:
                await response.read()
                assert response.status == 201, response.status
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    return Run(len(items), elapsed, cpu)


# -- measurements --------------------------------------------------------------------------


async def throughput(work: Path, tls: Tls, source: Path, count: int, rounds: int
                     ) -> dict[str, Any]:
    journal = work / "throughput.sqlite3"
    copy_journal(source, journal, count)
    items = payloads(journal)
    rows = []
    for r in range(rounds):
        result: dict[str, Run] = {}
        order = ("uplink", "plain") if r % 2 == 0 else ("plain", "uplink")
        for which in order:
            with ReceiverProcess(tls, work / f"received-{which}") as receiver:
                if which == "uplink":
                    copy_journal(source, journal, count)
                    result[which] = await run_uplink(journal, tls, receiver.url)
                else:
                    result[which] = await run_plain(items, tls, receiver.url)
                assert receiver.held() == count, (which, receiver.held())
        up, plain = result["uplink"], result["plain"]
        row = {"round": r + 1, "order": "/".join(order), "uplink_per_s": up.rate,
               "plain_per_s": plain.rate, "ratio": up.rate / plain.rate,
               "uplink_cpu_ms_per_cert": 1000 * up.cpu_s / count,
               "plain_cpu_ms_per_cert": 1000 * plain.cpu_s / count}
        rows.append(row)
        print(f"  round {r + 1} ({row['order']}): uplink {up.rate:7.1f}/s  plain "
              f"{plain.rate:7.1f}/s  ratio {row['ratio']:.2f}  client CPU ms/cert "
              f"{row['uplink_cpu_ms_per_cert']:.2f} vs {row['plain_cpu_ms_per_cert']:.2f}",
              flush=True)
    return {"count": count, "rounds": rows,
            "median_ratio": statistics.median(r["ratio"] for r in rows),
            "median_uplink_per_s": statistics.median(r["uplink_per_s"] for r in rows),
            "median_plain_per_s": statistics.median(r["plain_per_s"] for r in rows)}


async def pick_cost(work: Path, source: Path, sizes: list[int]) -> list[dict[str, Any]]:
    out = []
    for n in sizes:
        journal = work / f"pick-{n}.sqlite3"
        copy_journal(source, journal, n)
        store = await Store(journal).open()
        try:
            outbox = await Outbox(store).open()
            now = datetime.now(UTC)
            await outbox.next_due(now)  # warm the page cache
            times = []
            for _ in range(200):
                start = time.perf_counter()
                item, _later = await outbox.next_due(now)
                times.append(time.perf_counter() - start)
                assert item is not None
        finally:
            await store.close()
        remove_journal(journal)
        row = {"backlog": n, "median_ms": 1000 * statistics.median(times),
               "p99_ms": 1000 * sorted(times)[int(len(times) * 0.99) - 1]}
        out.append(row)
        print(f"  pick with {n:6d} pending: median {row['median_ms']:.3f} ms, "
              f"p99 {row['p99_ms']:.3f} ms", flush=True)
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def journal_steps(store: Store, stop: asyncio.Event, name: str) -> list[float]:
    """A session journaling a step every STEP_INTERVAL_S until `stop`; latencies (s)."""
    session_id = f"bench-steps-{name}-{time.time_ns()}"
    await store.create_session(session_id, f"slot-{name}")
    data = {"checks": [{"name": f"check-{i}", "result": "pass", "detail": "x" * 40}
                       for i in range(12)]}
    latencies = []
    while not stop.is_set():
        start = time.perf_counter()
        await store.journal(session_id, "diagnose", data)
        latencies.append(time.perf_counter() - start)
        await asyncio.sleep(STEP_INTERVAL_S)
    return latencies


async def drain(work: Path, tls: Tls, source: Path, sizes: list[int], idle_s: float
                ) -> list[dict[str, Any]]:
    out = []
    for n in sizes:
        journal = work / f"drain-{n}.sqlite3"
        copy_journal(source, journal, n)
        context = client_context(ca=tls.server_ca, cert=tls.client_cert, key=tls.client_key)
        with ReceiverProcess(tls, work / "received-drain") as receiver:
            store = await Store(journal).open()
            try:
                # Idle: the same session journaling with nothing else going on.
                stop = asyncio.Event()
                task = asyncio.create_task(journal_steps(store, stop, "idle"))
                await asyncio.sleep(idle_s)
                stop.set()
                idle = await task
                uplink = Uplink(store, Clock(1.0), settings(receiver.url), context)
                stop = asyncio.Event()
                task = asyncio.create_task(journal_steps(store, stop, "drain"))
                start = time.perf_counter()
                await uplink.run(until_idle=True)
                elapsed = time.perf_counter() - start
                stop.set()
                busy = await task
                report = await uplink.report()
                assert report.delivered == n and report.pending == 0, report
            finally:
                await store.close()
            assert receiver.held() == n
        remove_journal(journal)
        row = {"backlog": n, "seconds": elapsed, "per_s": n / elapsed,
               "ms_per_cert": 1000 * elapsed / n,
               "idle_steps": len(idle), "idle_p50_ms": 1000 * percentile(idle, 0.5),
               "idle_p90_ms": 1000 * percentile(idle, 0.9),
               "idle_p99_ms": 1000 * percentile(idle, 0.99),
               "drain_steps": len(busy), "drain_p50_ms": 1000 * percentile(busy, 0.5),
               "drain_p90_ms": 1000 * percentile(busy, 0.9),
               "drain_p99_ms": 1000 * percentile(busy, 0.99)}
        out.append(row)
        print(f"  drain {n:6d}: {elapsed:7.1f} s ({row['ms_per_cert']:.2f} ms/cert, "
              f"{row['per_s']:.0f}/s); journal step p50/p90/p99 idle "
              f"{row['idle_p50_ms']:.1f}/{row['idle_p90_ms']:.1f}/{row['idle_p99_ms']:.1f} ms "
              f"({len(idle)} steps), draining {row['drain_p50_ms']:.1f}/"
              f"{row['drain_p90_ms']:.1f}/{row['drain_p99_ms']:.1f} ms ({len(busy)} steps)",
              flush=True)
    return out


def sizes_arg(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.workdir)
    tls = tls_material(work)
    need = max([args.count, *args.pick_sizes, *args.drain_sizes])
    source = work / f"source-{need}.sqlite3"
    if not source.exists():
        print(f"generating {need} certificates in {source} (once) ...", flush=True)
        await generate(source, work / "dev-pki", need)
    size = len(payloads(source)[0][1])
    load_before = os.getloadavg()
    result: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} CPUs ({platform.machine()}), Python "
                   f"{platform.python_version()}",
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "certificate_bytes": size,
        "load_before": load_before,
    }
    print(f"{result['machine']}; certificate {size} bytes; load average "
          f"{load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}", flush=True)
    if args.count:
        print(f"throughput, {args.count} certificates, {args.rounds} rounds:")
        result["throughput"] = await throughput(work, tls, source, args.count, args.rounds)
        t = result["throughput"]
        print(f"  median: uplink {t['median_uplink_per_s']:.1f}/s, plain "
              f"{t['median_plain_per_s']:.1f}/s, ratio {t['median_ratio']:.2f}")
    if args.pick_sizes:
        print("pick (Outbox.next_due):")
        result["pick"] = await pick_cost(work, source, args.pick_sizes)
    if args.drain_sizes:
        print(f"drain (journal step every {STEP_INTERVAL_S * 1000:.0f} ms):")
        result["drain"] = await drain(work, tls, source, args.drain_sizes, args.idle_s)
    result["load_after"] = os.getloadavg()
    print("load average after: {:.2f} {:.2f} {:.2f}".format(*result["load_after"]))
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000,
                        help="certificates per throughput run (0: skip)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pick-sizes", type=sizes_arg, default=[1000, 5000, 20000])
    parser.add_argument("--drain-sizes", type=sizes_arg, default=[5000, 10000, 20000])
    parser.add_argument("--idle-s", type=float, default=30.0,
                        help="seconds of journal steps on an idle agent before each drain")
    parser.add_argument("--workdir", default="/tmp/wipeagent-bench-uplink")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args()
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    result = asyncio.run(main_async(args))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
