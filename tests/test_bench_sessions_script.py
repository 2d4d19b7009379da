"""Smoke test of scripts/bench_sessions.py: it runs, erases, and prints its table.

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
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    header, rule, row = proc.stdout.strip().splitlines()[-3:]
    assert header.startswith("| speed | phones | sessions |"), proc.stdout
    assert set(rule) <= set("|-: "), rule
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert len(cells) == header.count("|") - 1 == rule.count("|") - 1, (header, row)
    assert cells[:3] == ["20", "2", "2"], row
    assert cells[5] == "2/2", row  # both phones erased by their first session
    # The docs are only written with --write.
    assert "wrote docs/benchmarks.md" not in proc.stderr
