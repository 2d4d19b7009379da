"""A seeded sample of scripts/fault_matrix.py: the real agent killed (kill -9, SIGTERM, a
full disk) at random moments of an Android and an iPhone session, restarted, and held to
the simulator's truth, the station chain and exactly-once delivery; and one journal deleted
while the agent is down.

The full matrix (>= 200 trials) is a benchmark run by hand; its figures are in
docs/reliability.md. No timing is asserted here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_fault_matrix_sample_keeps_every_invariant() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "fault_matrix.py"), "--trials", "4",
         "--seed", "7", "--profiles", "pixel8-clean,clean",
         "--faults", "kill9,sigterm,diskfull", "--journal-trials", "1"],
        capture_output=True, text=True, timeout=900, cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    lines = proc.stdout.splitlines()
    header = lines[0]
    assert header.startswith("| fault | trials | ok | false claims |"), proc.stdout
    (total,) = [line for line in lines if line.startswith("| **all** |")]
    cells = [c.strip() for c in total.strip("|").split("|")]
    trials, ok = int(cells[1]), int(cells[2])
    # kill9 and sigterm on both platforms; diskfull needs a tmpfs (root) or is skipped.
    assert trials >= 4 and ok == trials, proc.stdout
    # The journal deleted while the agent was down: counted like every other trial.
    assert "| journal:delete | 1 | 1 |" in proc.stdout, proc.stdout
    assert cells[3:] == ["0"] * 6, proc.stdout
    assert "android" in proc.stdout and "ios" in proc.stdout, proc.stdout
    assert proc.stderr.count("trial ") >= 5
