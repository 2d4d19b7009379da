#!/usr/bin/env python3
"""Benchmark: `wipeagent verify --batch` throughput against raw Ed25519 verification.

    .venv/bin/python scripts/bench_verify.py [--count 2000] [--repeat 3]

Issues COUNT certificates with a fresh (non-development) Ed25519 PKI into a temporary
folder, then measures, on this machine:
  raw    cryptography's Ed25519PublicKey.verify over the same signing inputs (the floor
         cost of checking a signature, nothing else);
  batch  the `verify --batch DIR --json` command in-process, with --jobs 1 and with one
         worker per CPU (library path: strict JWS
         parse, header checks, chain (cached per station chain), signature, JSON Schema,
         consistency rules, validity at issue time, then the ledger check).
Reports the best of REPEAT runs of each and the ratio batch / raw.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "certs"))
sys.path.insert(0, str(ROOT))

import certs_fixtures as fx  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ed25519  # noqa: E402

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


def raw_rate(blobs: list[bytes]) -> float:
    parsed = [jws.parse(b) for b in blobs]
    key = x509.load_der_x509_certificate(parsed[0].x5c_der[0]).public_key()
    assert isinstance(key, ed25519.Ed25519PublicKey)
    started = time.perf_counter()
    for p in parsed:
        key.verify(p.signature, p.signing_input)
    return len(parsed) / (time.perf_counter() - started)


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
    args = parser.parse_args()
    jobs = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        root, blobs = make_certificates(directory, args.count)
        rows: list[tuple[float, float, float]] = []
        for _ in range(args.repeat):
            # Each round measures raw and batch back to back, so a load change on a shared
            # machine hits both sides of the ratio alike; the median round is reported.
            raw = raw_rate(blobs)
            batch, code = batch_rate(root, directory / "certs", 1)
            parallel, code_n = batch_rate(root, directory / "certs", jobs)
            assert code == code_n == 0, "the batch did not verify cleanly"
            rows.append((raw, batch, parallel))
    size = sum(map(len, blobs)) // len(blobs)
    print(
        f"machine: {platform.machine()} {os.cpu_count()} CPUs, python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(f"certificates: {args.count} (mean {size} bytes), {args.repeat} rounds")
    print("round   raw Ed25519/s   --jobs 1/s  ratio   --jobs N/s  ratio")
    for i, (raw, batch, parallel) in enumerate(rows, 1):
        print(
            f"{i:5d} {raw:15.0f} {batch:12.0f} {batch / raw:6.2f} {parallel:12.0f} "
            f"{parallel / raw:6.2f}"
        )
    ratios = sorted(batch / raw for raw, batch, _ in rows)
    ratios_n = sorted(parallel / raw for raw, _, parallel in rows)
    print(
        f"median ratio --jobs 1: {statistics.median(ratios):.2f}   "
        f"--jobs {jobs}: {statistics.median(ratios_n):.2f}  (batch rate / raw one-core rate)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
