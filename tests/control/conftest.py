"""A simulated bench with the control API in front of it, for the control tests.

The phones are the real simulators (fake adbd speaking ADB to adb-shell), the agent is the
real one from assemble.build_agent, the gate is make_gate's, and the API is served on a
real unix socket and reached with the real aiohttp client.
"""

from __future__ import annotations

import asyncio
import functools
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from wipeagent.assemble import build_agent
from wipeagent.clock import Clock
from wipeagent.config import AgentConfig, ControlConfig
from wipeagent.control.bench import BenchState
from wipeagent.control.client import ControlClient
from wipeagent.control.gates import make_gate
from wipeagent.control.operators import OperatorRegistry
from wipeagent.control.server import ControlServer
from wipeagent.daemon import Agent
from wipeagent.session import SessionResult
from wipeagent.store import Store
from wipeagent_sim.android.bench import SimBench
from wipeagent_sim.demo import demo_config

SPEED = 50.0
PIN = "246810"  # every test operator's PIN (enrolled by the harness)
OPERATORS = ("j.smith", "a.tech")


def enrol(state_dir: Path, *names: str, secret: str = PIN) -> None:
    """Enrol operators the way `wipeagent operator add` does (argon2 hash, 0600 file)."""
    registry = OperatorRegistry.for_state_dir(state_dir)
    for name in names:
        registry.add(name, secret)


@dataclass
class Harness:
    clock: Clock
    config: AgentConfig
    bench: BenchState
    sim: SimBench
    agent: Agent
    store: Store
    server: ControlServer
    client: ControlClient
    slots: dict[str, str]  # profile name -> slot
    pin: str = PIN  # the enrolled operators' PIN
    run: asyncio.Task[list[SessionResult]] | None = None

    def start(self, completed: int | None = None) -> None:
        """Let the agent run until `completed` sessions ended (default: one per phone;
        a paused session counts too)."""
        assert self.run is None
        n = len(self.slots) if completed is None else completed
        self.run = asyncio.create_task(self.agent.run(until=lambda a: a.completed >= n))

    async def until(self, predicate: Callable[[dict[str, Any]], bool],
                    bench_seconds: float = 1500) -> dict[str, Any]:
        """Poll GET /status until `predicate(status)` holds."""
        async with self.clock.timeout(bench_seconds):
            while True:
                status = await self.client.status()
                if predicate(status):
                    return status
                await self.clock.sleep(2)

    async def slot_status(self, profile: str) -> dict[str, Any]:
        status = await self.client.status()
        return next(s for s in status["slots"] if s["slot"] == self.slots[profile])

    async def results(self) -> dict[str, SessionResult]:
        assert self.run is not None
        by_slot = {slot: name for name, slot in self.slots.items()}
        return {by_slot[r.slot]: r for r in await asyncio.wait_for(self.run, 60)}

    async def wait_awaiting(self, profile: str) -> dict[str, Any]:
        """Until the phone of `profile` waits for a confirmation; its slot entry."""
        slot = self.slots[profile]
        status = await self.until(lambda st: any(
            s["slot"] == slot and s["awaiting_confirmation"] for s in st["slots"]))
        entry: dict[str, Any] = next(s for s in status["slots"] if s["slot"] == slot)
        return entry


def config_for(state: Path, socket: Path, policy: str, confirm_timeout_s: float,
               handoff: str = "restore", intake_wait_s: float = 0.0,
               imei_timeout_s: float = 300.0) -> AgentConfig:
    config = demo_config(state)
    return config.model_copy(update={
        "policy": config.policy.model_copy(update={"erase": policy, "handoff": handoff}),
        "android": config.android.model_copy(update={"command_timeout_s": 20,
                                                     "reboot_timeout_s": 200}),
        "control": ControlConfig(socket=str(socket), group="",
                                 confirm_timeout_s=confirm_timeout_s,
                                 intake_wait_s=intake_wait_s,
                                 imei_timeout_s=imei_timeout_s),
    })


@asynccontextmanager
async def _control_bench(tmp_path: Path, profiles: list[str], *, policy: str = "confirm",
                        confirm_timeout_s: float = 3600, intake_wait_s: float = 0.0,
                        speed: float = SPEED,
                        metrics: Callable[[], str] | None = None,
                        start: bool = True, handoff: str = "restore",
                        imei_timeout_s: float = 300.0) -> AsyncIterator[Harness]:
    """Phones, agent (with make_gate's gate), ControlServer and a connected client."""
    clock = Clock(speed)
    # A unix socket path must stay under ~107 bytes; pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="wac-") as short:
        config = config_for(tmp_path / "state", Path(short) / "control.sock", policy,
                            confirm_timeout_s, handoff, intake_wait_s, imei_timeout_s)
        enrol(config.state_path, *OPERATORS)
        bench = BenchState(clock, station_id=config.station.id, policy=policy)
        async with SimBench(profiles=profiles, state_dir=tmp_path / "sims", clock=clock) as sim:
            slots = {p.profile: f"tcp:{p.host}:{p.port}" for p in sim.phones}
            agent, store, _ = await build_agent(
                config, clock=clock, observer=bench.observe,
                extra_endpoints=[s.removeprefix("tcp:") for s in slots.values()])
            # The gate needs the store build_agent opens; set it before the agent runs.
            agent.gate = make_gate(config, bench, store, clock)
            bench.attach(agent)
            server = ControlServer(bench, store, config, metrics=metrics)
            # What sessions ask of people (IMEIs, final resets) waits on the API.
            agent.technician = server.technician
            await server.start()
            harness: Harness | None = None
            try:
                async with ControlClient(server.socket_path, clock=clock,
                                         timeout_s=30 * speed) as client:
                    harness = Harness(clock, config, bench, sim, agent, store, server, client,
                                      slots)
                    if start:
                        harness.start()
                    yield harness
            finally:
                if harness is not None and harness.run is not None:
                    harness.run.cancel()
                    await asyncio.gather(harness.run, return_exceptions=True)
                await server.close()
                await store.close()


@pytest.fixture
def control_bench(tmp_path: Path) -> Callable[..., AbstractAsyncContextManager[Harness]]:
    """`async with control_bench(["pixel8-clean"], policy="intake", start=False) as h:`"""
    return functools.partial(_control_bench, tmp_path)
