"""`wipeagent run`, SIGKILLed by itself right after one chosen journal commit.

The crash tests start this file as the agent process. It is the real agent (the real
CLI, store, sessions, adb-shell talking to simulated phones); the only addition is a kill
point: with WIPEAGENT_CRASH_AT set, the process sends itself SIGKILL the moment the chosen
commit has returned, so "the journal ends exactly at step X" is reached deterministically
even where two commits follow each other with no phone I/O between them (diagnose ->
plan, canary -> erase_started, verify -> outcome -> certificate -> certified), which no
outside poller can hit reliably.

WIPEAGENT_CRASH_AT:
    step:NAME        after the journal commit of step NAME (identify, diagnose, plan, canary,
                     erase_started, returned, verify, outcome, certified, superseded)
    created          after the new session row is committed, before the phone is identified
    certificate      after the certificate and its chain link are committed, before the
                     `certified` step is journaled
    term:POINT       the same points, but SIGTERM (a graceful stop) instead of SIGKILL
    term-during:step:NAME   SIGTERM just before the commit of step NAME, so the stop is
                     handled while that commit is in flight
Without it this is plain `wipeagent run`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from wipeagent import store
from wipeagent.cli import main

_SIGNAL = signal.SIGKILL


def _die() -> None:
    # Flush what the log holds so the test can show it; then the hardest possible stop
    # (or, for `term:...`, the graceful one systemd sends first).
    sys.stderr.flush()
    os.kill(os.getpid(), _SIGNAL)


def install(spec: str) -> None:
    """Wrap the Store method that makes the chosen commit (fault injection, child only)."""
    global _SIGNAL
    before = spec.startswith("term-during:")
    if spec.startswith(("term:", "term-during:")):
        _SIGNAL, spec = signal.SIGTERM, spec.partition(":")[2]
    kind, _, name = spec.partition(":")
    cls: Any = store.Store
    if kind == "step":
        journal: Callable[..., Any] = cls.journal

        async def journal_then_die(self: store.Store, session_id: str, step: str,
                                   data: dict[str, Any], **kw: Any) -> None:
            if before and step == name:
                # The race seen in a real run: the stop's cancellation reaches the session
                # while this commit is in flight; the commit lands, the session's await of
                # it raises CancelledError. Made certain here: the commit goes ahead in its
                # own task while the session waits where the cancellation will find it.
                commit = asyncio.ensure_future(journal(self, session_id, step, data, **kw))
                _die()
                await asyncio.sleep(0.3)  # the stop's cancellation arrives within this
                await commit
                return
            await journal(self, session_id, step, data, **kw)
            if step == name and not before:
                _die()

        cls.journal = journal_then_die
    elif kind == "created":
        create: Callable[..., Any] = cls.create_session

        async def create_then_die(self: store.Store, session_id: str, slot: str) -> None:
            await create(self, session_id, slot)
            _die()

        cls.create_session = create_then_die
    elif kind == "certificate":
        append: Callable[..., Any] = cls.append_certificate

        async def append_then_die(self: store.Store, *args: Any, **kw: Any) -> Any:
            await append(self, *args, **kw)
            _die()

        cls.append_certificate = append_then_die
    else:
        raise SystemExit(f"unknown WIPEAGENT_CRASH_AT {spec!r}")


if __name__ == "__main__":
    crash_at = os.environ.get("WIPEAGENT_CRASH_AT")
    if crash_at:
        install(crash_at)
    sys.exit(main(sys.argv[1:]))
