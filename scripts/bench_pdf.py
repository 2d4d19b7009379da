#!/usr/bin/env python3
"""Benchmark: milliseconds to render one certificate PDF (`render_pdf`), per language.

    .venv/bin/python scripts/bench_pdf.py [--count 40] [--repeat 5] [--profile]

Issues one erased (Android, with a hand-off) and one not-erased (iPhone) certificate with a
development PKI, verifies them, then renders COUNT PDFs of each in each language in a
process that has already rendered one (fonts registered: the steady state of `verify
--pdf` and of the agent's exports). Reports, per language, the best and median of REPEAT
rounds of the mean per PDF, in CPU time of this thread (unaffected by other processes
being scheduled) and wall time. --profile prints where the time goes (cProfile).

The package imported is the one on sys.path: point PYTHONPATH at another checkout to
measure it with the same script (docs/benchmarks.md, before/after).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "certs"))

import certs_fixtures as fx  # noqa: E402

import wipeagent  # noqa: E402
from wipeagent.certs import issue_certificate, pki, verify_certificate  # noqa: E402
from wipeagent.certs.pdf import render_pdf  # noqa: E402


def certificates(directory: Path) -> list[object]:
    signer = pki.ensure_dev_pki(directory, station_id="bench-01")
    root = pki.dev_trust_root(directory)
    made = []
    for record, seq, prev in ((fx.erased_record(), 1, None),
                              (fx.not_erased_record(), 2, "a" * 64)):
        issued = issue_certificate(record, signer, sequence=seq, previous_hash=prev,
                                   development=True,
                                   verification_url="https://platform.example/verify")
        made.append(verify_certificate(issued.data, trust_roots=[root]))
    return made


def measure(certs: list[object], language: str, count: int) -> tuple[float, float, int]:
    """(CPU ms, wall ms) per PDF over `count` renderings of each certificate, and bytes."""
    cpu0, wall0 = time.thread_time(), time.perf_counter()
    size = 0
    for _ in range(count):
        for cert in certs:
            size = len(render_pdf(cert, language=language))  # type: ignore[arg-type]
    n = count * len(certs)
    return ((time.thread_time() - cpu0) / n * 1000, (time.perf_counter() - wall0) / n * 1000,
            size)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-pdf-") as tmp:
        certs = certificates(Path(tmp))
    for language in ("en", "zh"):
        measure(certs, language, 1)  # fonts registered, caches warm
    print(f"machine: {platform.machine()} {os.cpu_count()} CPUs, python "
          f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f}; "
          f"wipeagent from {Path(wipeagent.__file__).parent}")
    if args.profile:
        profiler = cProfile.Profile(time.thread_time)
        profiler.enable()
        measure(certs, "en", args.count)
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(25)
        print(out.getvalue())
        return 0
    print(f"{args.count} x {len(certs)} PDFs per round, {args.repeat} rounds")
    print("language  CPU ms/PDF best  median   wall ms/PDF median   PDF bytes")
    for language in ("en", "zh"):
        rows = [measure(certs, language, args.count) for _ in range(args.repeat)]
        cpu = [r[0] for r in rows]
        wall = [r[1] for r in rows]
        print(f"{language:8s}  {min(cpu):15.1f} {statistics.median(cpu):7.1f}   "
              f"{statistics.median(wall):18.1f}   {rows[-1][2]:9d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
