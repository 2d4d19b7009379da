#!/usr/bin/env python3
"""Benchmark: certificate verification against raw Ed25519 verification, one core.

    .venv/bin/python scripts/bench_verify.py [--count 2000] [--repeat 5] [--profile]

Issues COUNT certificates (3 in 4 erased Android phones with a hand-off, 1 in 4 a
not-erased iPhone; a fresh non-development Ed25519 PKI) into a temporary folder, then
measures, in each round and back to back:
  raw      cryptography's Ed25519PublicKey.verify over the same JWS signing inputs (the
           floor: checking the signature and nothing else);
  library  Verifier(roots).verify(bytes) on each certificate with every check (strict
           parse, canonical form, header, chain (X.509 work once per distinct x5c),
           low S, signature, duplicate-key-free JSON, JSON Schema, consistency and the
           outcome rule on the checks, station binding, validity at issue time); a
           process takes the payload's fast path from its 1,000th payload on
           (payload.FAST_PATH_AFTER), so round 1 includes setting it up;
  --jobs 1 / --jobs N  the `wipeagent verify --batch DIR --json` command in-process
           (verification plus the report and the ledger check; files already read).
raw and library are CPU time of this thread (what one core does, whatever else the
machine runs); the --jobs rows are wall time, against raw's wall time of the same round.
Reports each round and the median ratios. --profile: where the library's time goes.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "certs"))

import certs_fixtures as fx  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ed25519  # noqa: E402

import wipeagent  # noqa: E402
from wipeagent.certs import issue_certificate, jws, load_station_signer, pki  # noqa: E402
from wipeagent.certs import verify as verify_mod  # noqa: E402
from wipeagent.certs.cli import main as certs_main  # noqa: E402


def make_certificates(directory: Path, count: int) -> tuple[Path, list[bytes]]:
    ca = pki.init_ca(directory / "ca", organisation="Bench Org")
    req = pki.new_station(directory / "station", station_id="bench-01", organisation="Bench Org")
    chain = pki.sign_station(
        req.csr,
        ca_key_path=ca.key,
        ca_cert_path=ca.cert,
        out_path=directory / "station" / "station.pem",
    )
    signer = load_station_signer(req.key, chain)
    out = directory / "certs"
    out.mkdir()
    prev: str | None = None
    blobs: list[bytes] = []
    start = datetime.now(UTC) - timedelta(milliseconds=10 * count + 1000)
    for seq in range(1, count + 1):
        record = fx.erased_record(session=f"s-{seq:06d}") if seq % 4 else fx.not_erased_record()
        issued = issue_certificate(
            record,
            signer,
            sequence=seq,
            previous_hash=prev,
            issued_at=start + timedelta(milliseconds=10 * seq),
            development=False,
            verification_url="https://verify.example/c",
        )
        (out / f"{seq:06d}.jws").write_bytes(issued.data)
        blobs.append(issued.data)
        prev = issued.sha256
    return ca.cert, blobs


def raw_seconds(blobs: list[bytes], clock: object) -> float:
    parsed = [jws.parse(b) for b in blobs]
    key = x509.load_der_x509_certificate(parsed[0].x5c_der[0]).public_key()
    assert isinstance(key, ed25519.Ed25519PublicKey)
    started = clock()  # type: ignore[operator]
    for p in parsed:
        key.verify(p.signature, p.signing_input)
    return float(clock() - started)  # type: ignore[operator]


def library_seconds(roots: list[x509.Certificate], blobs: list[bytes]) -> float:
    verifier = verify_mod.Verifier(roots)  # a cold chain cache, like a fresh process
    started = time.thread_time()
    for data in blobs:
        verifier.verify(data)
    return time.thread_time() - started


def batch_rate(root: Path, folder: Path, jobs: int) -> tuple[float, int]:
    verify_mod._verifiers.clear()  # a cold chain cache, like a fresh `wipeagent verify`
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = certs_main(
            ["verify", "--trust", str(root), "--batch", str(folder), "--json", "--jobs", str(jobs)]
        )
    report = json.loads(buffer.getvalue())
    return float(report["throughput"]["per_second"]), code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    jobs = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        root, blobs = make_certificates(directory, args.count)
        roots = pki.load_trust_roots(root)
        if args.profile:
            profiler = cProfile.Profile(time.thread_time)
            verifier = verify_mod.Verifier(roots)
            profiler.enable()
            for data in blobs:
                verifier.verify(data)
            profiler.disable()
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(20)
            print(out.getvalue())
            return 0
        rows: list[tuple[float, float, float, float, float]] = []
        for _ in range(args.repeat):
            # Each round measures every side back to back, so a load change on a shared
            # machine hits all of them alike; the median round is reported.
            raw_cpu = raw_seconds(blobs, time.thread_time)
            lib_cpu = library_seconds(roots, blobs)
            raw_wall = raw_seconds(blobs, time.perf_counter)
            batch, code = batch_rate(root, directory / "certs", 1)
            parallel, code_n = batch_rate(root, directory / "certs", jobs)
            assert code == code_n == 0, "the batch did not verify cleanly"
            n = len(blobs)
            rows.append((n / raw_cpu, n / lib_cpu, n / raw_wall, batch, parallel))
    size = sum(map(len, blobs)) // len(blobs)
    print(
        f"machine: {platform.machine()} {os.cpu_count()} CPUs, python {platform.python_version()}, "
        f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}; "
        f"wipeagent from {Path(wipeagent.__file__).parent}"
    )
    print(f"certificates: {args.count} (mean {size} bytes), {args.repeat} rounds")
    print("round  raw/s (CPU)  library/s  ratio   raw/s (wall)  --jobs 1/s ratio  "
          f"--jobs {jobs}/s ratio")
    for i, (raw, lib, raw_wall, batch, parallel) in enumerate(rows, 1):
        print(f"{i:5d} {raw:12.0f} {lib:10.0f} {lib / raw:6.2f} {raw_wall:14.0f} "
              f"{batch:11.0f} {batch / raw_wall:5.2f} {parallel:11.0f} {parallel / raw_wall:5.2f}")
    print(
        f"median ratio: library (one core, CPU) {statistics.median(r[1] / r[0] for r in rows):.2f}"
        f"   --jobs 1 {statistics.median(r[3] / r[2] for r in rows):.2f}"
        f"   --jobs {jobs} {statistics.median(r[4] / r[2] for r in rows):.2f}"
        "  (rate / raw Ed25519 rate of one core)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
