#!/usr/bin/env python3
"""Benchmark: the CPU an iPhone pairing costs the agent, before and after one set of keys
per bench.

    .venv/bin/python scripts/bench_pairing.py [--count 20] [--rounds 3] [--write]

Side by side in each round, for COUNT pair records for one phone's DevicePublicKey:

- **per pairing**: what every pairing cost before, pymobiledevice3's
  `ca.generate_pairing_cert_chain` (a new RSA-2048 root key and host key, three
  certificates), as libimobiledevice does too;
- **bench keys**: `transports.ios.PairingKeys.certificates` (the bench's root and host keys,
  made once and kept in the state directory; three certificates signed).

Reports CPU milliseconds per pair record (time.process_time) and the ratio. With --write,
replaces the block between the `bench_pairing` markers in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pymobiledevice3.ca import generate_pairing_cert_chain  # noqa: E402

from wipeagent.transports.ios import PairingKeys  # noqa: E402
from wipeagent_sim.ios import pki  # noqa: E402

BEGIN = "<!-- bench_pairing:begin -->"
END = "<!-- bench_pairing:end -->"


def cpu_ms(fn: object, count: int) -> float:
    assert callable(fn)
    start = time.process_time()
    for _ in range(count):
        fn()
    return (time.process_time() - start) / count * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    load_before = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    device = pki.device_public_key_pem(pki.generate_device_key())
    with tempfile.TemporaryDirectory(prefix="bench-pairing-") as tmp:
        start = time.process_time()
        keys = PairingKeys.load_or_create(Path(tmp) / "host-keys.pem")
        once = (time.process_time() - start) * 1000
    rows = []
    for index in range(args.rounds):
        old = cpu_ms(lambda: generate_pairing_cert_chain(device), args.count)
        new = cpu_ms(lambda: keys.certificates(device), args.count)
        rows.append((index + 1, old, new))
    lines = ["| round | per pairing (2 new RSA keys) ms | bench keys ms | ratio |",
             "| ---: | ---: | ---: | ---: |"]
    lines += [f"| {i} | {old:.1f} | {new:.1f} | {old / new:.0f}× |" for i, old, new in rows]
    median_old = statistics.median(r[1] for r in rows)
    median_new = statistics.median(r[2] for r in rows)
    text = "\n".join(lines)
    print(text)
    print(f"median: {median_old:.1f} ms -> {median_new:.1f} ms CPU per pair record; the "
          f"bench's keys cost {once:.0f} ms once", file=sys.stderr)
    if args.write:
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        command = "scripts/bench_pairing.py " + " ".join(sys.argv[1:])
        block = (f"Measured {datetime.now(UTC):%Y-%m-%d} on {os.cpu_count()} CPUs "
                 f"({platform.machine()}), Python {platform.python_version()}, load average "
                 f"{load_before} before and {load} after, `{command.strip()}`:\n\n{text}\n\n"
                 f"Median **{median_old:.0f} ms → {median_new:.1f} ms** of CPU per pair record; "
                 f"the bench's two keys cost {once:.0f} ms once, when the first iPhone pairs.")
        path = ROOT / "docs" / "benchmarks.md"
        doc = path.read_text(encoding="utf-8")
        s, e = doc.find(BEGIN), doc.find(END)
        if s < 0 or e < s:
            raise SystemExit(f"docs/benchmarks.md has no {BEGIN} ... {END} block")
        path.write_text(doc[:s + len(BEGIN)] + "\n" + block + "\n" + doc[e:], encoding="utf-8")
        print("wrote docs/benchmarks.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
