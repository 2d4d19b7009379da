"""The bench page under a full bench: how fast a step change reaches the screen.

    .venv/bin/python scripts/bench_page.py [--phones 128] [--seconds 30] [--rate 64]

Serves the real bench page (BenchState + ControlServer + BenchPage on 127.0.0.1:0) and
opens it in Debian's chromium (Playwright as a driver). It then feeds SessionEvents for
PHONES slots, RATE step changes a second spread over random slots, for SECONDS, and
measures, for every step change, the time until the tile of that slot was redrawn in the
browser (a MutationObserver in the page stamps each tile replacement with Date.now();
the same machine's clock as time.time()). Also: the agent process's CPU time for the
page (events, SSE, JSON), the bytes streamed, and a 1920x1080 screenshot of the bench
(artifacts/screenshots/bench-page-<N>.png). Synthetic events: this measures the page path
(observe -> SSE -> browser), not the phones.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from browser import chromium, screenshot  # noqa: E402

from wipeagent.clock import Clock  # noqa: E402
from wipeagent.config import AgentConfig, ControlConfig, PageConfig  # noqa: E402
from wipeagent.control.bench import BenchState  # noqa: E402
from wipeagent.control.page import BenchPage  # noqa: E402
from wipeagent.control.server import ControlServer  # noqa: E402
from wipeagent.models import Outcome  # noqa: E402
from wipeagent.session import SessionEvent  # noqa: E402
from wipeagent.steps import SessionStep  # noqa: E402
from wipeagent.store import Store  # noqa: E402

CYCLE = [SessionStep.CONNECT, SessionStep.IDENTIFY, SessionStep.DIAGNOSE, SessionStep.PLAN,
         SessionStep.ERASE, SessionStep.AWAIT_RETURN, SessionStep.VERIFY]

WATCH = """() => {
  window.__stamps = [];
  new MutationObserver((records) => {
    const now = Date.now();
    for (const r of records) for (const n of r.addedNodes) {
      if (n.dataset && n.dataset.slot) window.__stamps.push([n.dataset.slot, now]);
    }
  }).observe(document.getElementById('grid'), {childList: true});
}"""


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run(phones: int, seconds: float, rate: float) -> dict[str, object]:
    clock = Clock(1.0)
    with tempfile.TemporaryDirectory(prefix="bench-page-") as tmp:
        state_dir = Path(tmp) / "state"
        config = AgentConfig(state_dir=str(state_dir),
                             control=ControlConfig(socket=f"{tmp}/c.sock", group=""),
                             page=PageConfig(listen="127.0.0.1:0", columns=16))
        bench = BenchState(clock, station_id="bench-page", policy="auto")
        slots = [f"usb:1-{1 + i // 16}.{1 + i % 16}" for i in range(phones)]
        step_of = dict.fromkeys(slots, 0)
        for i, slot in enumerate(slots):
            bench.observe(SessionEvent(slot, f"s{i}", SessionStep.CONNECT, "connecting"))
        async with Store(state_dir / "journal.sqlite3") as store:
            server = ControlServer(bench, store, config, trust_roots=[])
            async with server:
                page_server = BenchPage(server, config)
                await page_server.start()
                streamed = 0
                try:
                    async with chromium(Path(tmp)) as context:
                        page = await context.new_page()
                        await page.goto(page_server.url)
                        await page.wait_for_function(
                            "n => document.querySelectorAll('.tile').length === n", arg=phones,
                            timeout=60_000)
                        await page.evaluate(WATCH)
                        sent: list[tuple[str, float]] = []
                        rng = random.Random(7)
                        cpu0, t0 = _cpu(), time.monotonic()
                        next_at = t0
                        while time.monotonic() - t0 < seconds:
                            slot = rng.choice(slots)
                            step_of[slot] = (step_of[slot] + 1) % (len(CYCLE) + 1)
                            index = step_of[slot]
                            sid = f"s{slots.index(slot)}"
                            if index == len(CYCLE):
                                event = SessionEvent(slot, sid, SessionStep.DONE, "erased",
                                                     outcome=Outcome.ERASED)
                            else:
                                event = SessionEvent(slot, sid, CYCLE[index], "working")
                            sent.append((slot, time.time() * 1000))
                            bench.observe(event)
                            next_at += 1 / rate
                            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                        await asyncio.sleep(2.0)  # the last changes arrive
                        cpu = _cpu() - cpu0
                        stamps: list[list[object]] = await page.evaluate("window.__stamps")
                        await screenshot(page, f"bench-page-{phones}")
                        streamed = await page.evaluate(
                            "performance.getEntriesByType('resource')"
                            ".filter(e => e.name.endsWith('/api/events'))"
                            ".reduce((a, e) => a + (e.transferSize || 0), 0)")
                finally:
                    await page_server.close()
    by_slot: dict[str, list[float]] = {}
    for slot, at in stamps:
        by_slot.setdefault(str(slot), []).append(float(at))  # type: ignore[arg-type]
    latencies: list[float] = []
    missed = 0
    for slot, at in sent:
        later = [u for u in by_slot.get(slot, []) if u >= at]
        if later:
            latencies.append(min(later) - at)
        else:
            missed += 1
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))]

    return {
        "phones": phones, "seconds": seconds, "events": len(sent),
        "events_per_s": round(len(sent) / seconds, 1), "redraws": len(stamps),
        "latency_ms": {"p50": round(pct(0.5)), "p95": round(pct(0.95)),
                       "p99": round(pct(0.99)), "max": round(latencies[-1]),
                       "mean": round(statistics.fmean(latencies))},
        "not_seen": missed,
        "agent_cpu_s": round(cpu, 2), "agent_cpu_percent": round(100 * cpu / seconds, 1),
        "sse_bytes_reported": streamed,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phones", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=64.0, help="step changes per second")
    args = parser.parse_args()
    result = asyncio.run(run(args.phones, args.seconds, args.rate))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
