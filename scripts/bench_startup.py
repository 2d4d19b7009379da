#!/usr/bin/env python3
"""Benchmark: start-up of `wipeagent --version`, `verify` (one certificate) and `status`.

    .venv/bin/python scripts/bench_startup.py [--runs 15] [--checkout DIR ...]

Each command runs as a fresh process (`python -m wipeagent.cli ...`, what the installed
`wipeagent` script does), timed from fork to exit, RUNS times; the median and best wall
times are reported, and the modules each imported (`-X importtime`, the largest). `status`
talks to a real agent: `wipeagent run` on an empty bench (no USB, no usbmuxd, a TCP
endpoint nobody listens on, development PKI) started by this script on a private socket.

--checkout DIR (repeatable) measures the wipeagent package of other checkouts too, side by
side in one run (rounds interleaved, so machine load hits each alike): e.g. a worktree of
the commit before a change, for before/after figures (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CORPUS = ROOT / "tests" / "certs" / "corpus"

CONFIG = """\
state_dir = "{state}"
[station]
id = "bench-01"
[android]
endpoints = ["127.0.0.1:{port}"]
[usb]
enabled = false
[ios]
enabled = false
[certificates]
allow_development_pki = true
[control]
socket = "{sock}"
group = ""
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port  # nothing listens there: the agent polls an empty slot


@contextlib.contextmanager
def running_agent(directory: Path) -> Iterator[Path]:
    """`wipeagent run` with its control socket at the returned path."""
    sock = directory / "control.sock"
    config = directory / "agent.toml"
    config.write_text(CONFIG.format(state=directory / "state", port=free_port(), sock=sock))
    agent = subprocess.Popen(
        [sys.executable, "-m", "wipeagent.cli", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=directory,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 60
        while not sock.exists():
            if agent.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the agent did not start: {agent.stderr.read()!r}"
                                 if agent.stderr else "the agent did not start")
            time.sleep(0.1)
        yield sock
    finally:
        agent.terminate()
        agent.wait(timeout=60)


def timed(checkout: Path, argv: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(checkout), "PYTHONDONTWRITEBYTECODE": "1"}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "wipeagent.cli", *argv], cwd=CORPUS,
                          env=env, capture_output=True, check=False, timeout=120)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{argv} failed in {checkout}: {done.stderr.decode()[-500:]}")
    return elapsed


def heaviest_imports(checkout: Path, argv: list[str], top: int = 4) -> str:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "wipeagent.cli", *argv],
                          cwd=CORPUS, env=env, capture_output=True, text=True, check=False,
                          timeout=120)
    rows = []
    for line in done.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit() and not parts[2].startswith("  "):
            rows.append((int(parts[1]), parts[2].strip()))  # top-level imports only
    total = sum(us for us, _ in rows)
    rows.sort(reverse=True)
    named = ", ".join(f"{name} {us / 1000:.0f}" for us, name in rows[:top])
    return f"imports {total / 1000:.0f} ms (largest: {named})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--checkout", action="append", default=[], type=Path,
                        help="another checkout to measure beside this one")
    args = parser.parse_args()
    checkouts = [ROOT, *(c.resolve() for c in args.checkout)]
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp, \
            running_agent(Path(tmp)) as sock:
        commands = {
            "--version": ["--version"],
            "verify": ["verify", "--trust", "root.pem", "valid-v2-ed25519.jws"],
            "status": ["status", "--json", "--socket", str(sock)],
        }
        times: dict[tuple[Path, str], list[float]] = {
            (c, name): [] for c in checkouts for name in commands}
        for checkout in checkouts:  # warm the page cache and any .pyc
            for argv in commands.values():
                timed(checkout, argv)
        for _ in range(args.runs):
            for name, argv in commands.items():
                for checkout in checkouts:
                    times[(checkout, name)].append(timed(checkout, argv))
        print(f"machine: {platform.machine()} {os.cpu_count()} CPUs, python "
              f"{platform.python_version()}, load average "
              f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}; {args.runs} runs each")
        for checkout in checkouts:
            print(f"\n{checkout}")
            for name, argv in commands.items():
                row = times[(checkout, name)]
                print(f"  wipeagent {name:10s} median {statistics.median(row) * 1000:6.0f} ms"
                      f"  best {min(row) * 1000:6.0f} ms   "
                      f"{heaviest_imports(checkout, argv)}")
    return 0


if __name__ == "__main__":
    if not shutil.which(sys.executable):
        raise SystemExit("no python")
    sys.exit(main())
