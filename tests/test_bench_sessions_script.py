"""Smoke test of scripts/bench_sessions.py: it runs agent and phones in their own
processes, erases every phone, and prints its table.

No timing is asserted (figures belong in docs/benchmarks.md, not in tests)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_sessions_runs_two_phones_and_prints_a_table() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_sessions.py"), "--phones", "2",
         "--speed", "20"],
        capture_output=True, text=True, timeout=300, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    header, rule, row = proc.stdout.strip().splitlines()[-3:]
    assert header.startswith("| gc | speed | phones | sessions |"), proc.stdout
    assert set(rule) <= set("|-: "), rule
    names = [c.strip() for c in header.strip("|").split("|")]
    cells = dict(zip(names, (c.strip() for c in row.strip("|").split("|")), strict=True))
    assert len(names) == rule.count("|") - 1, (header, rule)
    assert (cells["gc"], cells["speed"], cells["phones"], cells["sessions"]) == (
        "tuned", "20", "2", "2"), row
    assert cells["erased 1st"] == "2/2", row  # both phones erased by their first session
    assert cells["pauses"] == "0" and cells["false dep."] == "0", row
    # Counted in the agent's process only: it made at least one authenticated connection
    # a phone, and the phones' CPU is reported apart.
    assert float(cells["signs/phone"]) >= 1, row
    assert float(cells["phones CPU s"]) > 0, row
    # The docs are only written with --write.
    assert "wrote docs/benchmarks.md" not in proc.stderr
