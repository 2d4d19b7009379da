"""`wipeagent run`: the agent as a long-running process."""

from __future__ import annotations

import asyncio
import logging
import signal

from wipeagent.assemble import build_agent
from wipeagent.clock import Clock
from wipeagent.config import AgentConfig
from wipeagent.errors import ConfigError
from wipeagent.session import SessionEvent

log = logging.getLogger(__name__)


def _log_event(event: SessionEvent) -> None:
    log.warning("[%s] %s: %s", event.slot, event.step, event.message)


async def run_agent(config: AgentConfig, clock: Clock, *, once: bool = False) -> int:
    """Run until SIGTERM/SIGINT (sessions in flight stay resumable in the journal)."""
    if config.policy.erase != "auto":
        # confirm / intake need the technician control API; until it exists, refuse to
        # start rather than silently erasing phones nobody confirmed.
        raise ConfigError(
            f"policy.erase = {config.policy.erase!r} needs the technician control API, "
            "which this version does not have yet; set policy.erase = \"auto\" on benches "
            "whose intake happens elsewhere"
        )
    if not config.android.endpoints:
        raise ConfigError("no phones to watch: android.endpoints is empty")
    agent, store, _ = await build_agent(config, clock=clock, observer=_log_event)
    n = len(config.android.endpoints)
    task = asyncio.create_task(agent.run(until=(lambda a: a.completed >= n) if once else None))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        log.warning("stopping: sessions in flight are journaled and will resume")
    finally:
        await store.close()
    return 0
