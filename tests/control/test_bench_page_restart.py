"""The bench page across an agent restart: `wipeagent run`'s service (the runner, its
control extension serving the page) is stopped with SIGTERM while phones wait for a
confirmation and started again on the same address; the open page reconnects by itself
and shows the resumed sessions, which are then confirmed from it and erased."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from pathlib import Path
from typing import Any

import pytest
from browser import chromium, screenshot

from wipeagent.clock import Clock
from wipeagent.control.operators import OperatorRegistry
from wipeagent.models import Outcome
from wipeagent.runner import DEFAULT_EXTENSIONS, Service
from wipeagent.service.notify import Notifier
from wipeagent_sim.android.bench import SimBench
from wipeagent_sim.demo import demo_config

SPEED = 20
PIN = "730518"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _started(service: Service) -> None:
    async with asyncio.timeout(60):
        while service.ctx is None or service.ctx.page_url is None:  # noqa: ASYNC110
            await asyncio.sleep(0.01)


@pytest.mark.timeout(600)
async def test_page_reconnects_after_the_agent_restarts(tmp_path: Path) -> None:
    clock = Clock(SPEED)
    async with SimBench(profiles=["pixel8-clean", "unencrypted"], state_dir=tmp_path / "sims",
                        clock=clock) as bench:
        base = demo_config(tmp_path / "state")
        config = base.model_copy(update={
            "android": base.android.model_copy(update={
                "endpoints": tuple(f"{p.host}:{p.port}" for p in bench.phones),
                "command_timeout_s": 30, "reboot_timeout_s": 300}),
            "policy": base.policy.model_copy(update={"erase": "confirm"}),
            "control": base.control.model_copy(update={
                "socket": str(tmp_path / "run" / "control.sock"), "group": ""}),
            "page": base.page.model_copy(update={"listen": f"127.0.0.1:{_free_port()}"}),
        })
        OperatorRegistry.for_state_dir(config.state_path).add("j.smith", PIN)

        def service() -> Service:
            return Service(config, clock, config_path=None, once=False,
                           extensions=DEFAULT_EXTENSIONS, notifier=Notifier({}))

        first = service()
        run = asyncio.create_task(first.run())
        await _started(first)
        assert first.ctx is not None and first.ctx.page_url is not None
        url = first.ctx.page_url
        async with chromium(tmp_path) as context:
            page: Any = await context.new_page()
            await page.goto(url)
            try:
                await page.wait_for_function(
                    "() => document.querySelectorAll('.tile[data-state=needs_you]').length"
                    " === 2", timeout=120_000)
            except Exception:
                await screenshot(page, "failure-restart")
                raise
            before = await page.evaluate("() => [...document.querySelectorAll('.tile')]"
                                         ".map(t => t.dataset.slot).sort()")
            os.kill(os.getpid(), signal.SIGTERM)
            assert await asyncio.wait_for(run, 60) == 0
            # The page notices the agent is gone...
            await page.wait_for_selector("#offline", timeout=30_000)
            await screenshot(page, "bench-en-agent-stopped")

            second = service()
            run = asyncio.create_task(second.run())
            await _started(second)
            assert second.ctx is not None and second.ctx.page_url == url
            # ...reconnects by itself and shows the resumed sessions waiting again.
            await page.wait_for_selector("#offline", state="detached", timeout=60_000)
            await page.wait_for_function(
                "() => document.querySelectorAll('.tile[data-state=needs_you]').length === 2 &&"
                " document.querySelector('#confirm-all').textContent.includes('2')",
                timeout=120_000)
            after = await page.evaluate("() => [...document.querySelectorAll('.tile')]"
                                        ".map(t => t.dataset.slot).sort()")
            assert after == before
            # Sign-ins do not survive a restart: the page asks again, then confirms both.
            await page.click("#confirm-all")
            await page.fill("#operator", "j.smith")
            await page.fill("#secret", PIN)
            await page.click("form.signin button[type=submit]")
            await page.wait_for_selector(".operator .who")
            await page.click("#confirm-all")
            await page.wait_for_function(
                "() => document.querySelectorAll('.tile[data-state=erased]').length === 2",
                timeout=300_000)
            await screenshot(page, "bench-en-after-restart")
            os.kill(os.getpid(), signal.SIGTERM)
            assert await asyncio.wait_for(run, 60) == 0
    results = second.ctx.agent.results
    assert sorted(r.outcome for r in results) == [Outcome.ERASED, Outcome.ERASED]
    assert {r.record.operator for r in results if r.record} == {"j.smith"}
    # Both sessions are the ones journaled before the restart (resumed, not new).
    assert all(r.session_id for r in results)
