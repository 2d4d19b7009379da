"""Runs USB bench scenarios under umockdev, in a subprocess.

libumockdev-preload must be in LD_PRELOAD when a process starts (umockdev-wrapper does
that), and once a testbed exists every /sys and /dev access of that process is redirected.
So each scenario runs in its own `umockdev-wrapper python bench_child.py` process, which
also appends Debian's python3-gi (/usr/lib/python3/dist-packages) to its own sys.path;
the pytest process itself stays untouched.
"""

from __future__ import annotations

import glob
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
BenchRunner = Callable[..., dict[str, Any]]


def umockdev_missing() -> str | None:
    """Why umockdev scenarios cannot run here, or None."""
    if shutil.which("umockdev-wrapper") is None:
        return "umockdev-wrapper not found (Debian package umockdev)"
    if not glob.glob("/usr/lib/*/girepository-1.0/UMockdev-1.0.typelib"):
        return "UMockdev typelib not found (Debian package gir1.2-umockdev-1.0)"
    if not Path("/usr/lib/python3/dist-packages/gi").is_dir():
        return "python3-gi not found (Debian package python3-gi)"
    return None


@pytest.fixture
def run_bench() -> BenchRunner:
    """`run_bench(steps, speed=20, watcher={...})` -> {"results": [...], "events": [...]}."""
    reason = umockdev_missing()
    if reason:
        pytest.skip(reason)

    def run(steps: list[dict[str, Any]], *, speed: float = 20.0, **watcher: Any) -> dict[str, Any]:
        script = {"steps": steps, "speed": speed, "watcher": watcher}
        proc = subprocess.run(
            ["umockdev-wrapper", sys.executable, str(HERE / "bench_child.py")],
            input=json.dumps(script),
            capture_output=True,
            text=True,
            timeout=90,
            cwd=HERE,
            check=False,
        )
        assert proc.returncode == 0, f"bench child failed:\n{proc.stderr[-4000:]}"
        result: dict[str, Any] = json.loads(proc.stdout)
        return result

    return run


@pytest.fixture
def run_agent_bench(tmp_path: Path) -> BenchRunner:
    """`run_agent_bench(steps, sims=[serials], slots={...}, gate=...)` -> agent_child output."""
    reason = umockdev_missing()
    if reason:
        pytest.skip(reason)

    def run(steps: list[dict[str, Any]], **script: Any) -> dict[str, Any]:
        doc = {"tmp": str(tmp_path), "steps": steps, **script}
        proc = subprocess.run(
            ["umockdev-wrapper", sys.executable, str(HERE / "agent_child.py")],
            input=json.dumps(doc),
            capture_output=True,
            text=True,
            timeout=120,
            cwd=HERE,
            check=False,
        )
        assert proc.returncode == 0, f"agent child failed:\n{proc.stderr[-6000:]}"
        result: dict[str, Any] = json.loads(proc.stdout)
        return result

    return run
