"""The one clock every wait, sleep and retry in the agent and the simulators goes through.

Simulated benches run faster than real time: a `Clock(speed=20)` makes a 60-second phone
reboot take 3 real seconds, and scales every timeout the same way, so the ratio between
what the agent waits for and what the phone does stays the same as on a real bench.
Durations given to and returned by a Clock are always *bench seconds* (simulated time).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TypeVar

T = TypeVar("T")


class Clock:
    """A monotonic clock with an adjustable speed factor.

    speed=1.0 is real time (production). Larger values make every `sleep` and `timeout`
    proportionally shorter in real time.
    """

    def __init__(self, speed: float = 1.0) -> None:
        if not speed > 0:
            raise ValueError(f"clock speed must be positive, got {speed!r}")
        self.speed = float(speed)
        self._origin = time.monotonic()

    def real_seconds(self, bench_seconds: float) -> float:
        """How many real seconds `bench_seconds` of bench time take."""
        return max(0.0, bench_seconds) / self.speed

    def monotonic(self) -> float:
        """Bench seconds elapsed since this clock was created."""
        return (time.monotonic() - self._origin) * self.speed

    def now(self) -> datetime:
        """Wall-clock time (UTC). Certificates carry real time, never scaled time."""
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        """Sleep for `seconds` of bench time."""
        await asyncio.sleep(self.real_seconds(seconds))

    @asynccontextmanager
    async def timeout(self, seconds: float) -> AsyncIterator[None]:
        """Like `asyncio.timeout`, in bench seconds; raises the built-in TimeoutError."""
        async with asyncio.timeout(self.real_seconds(seconds)):
            yield

    async def wait_for(self, aw: Awaitable[T], seconds: float) -> T:
        """Await `aw` for at most `seconds` of bench time (TimeoutError otherwise).

        Like `asyncio.wait_for` (`aw` runs as its own task; on a timeout or a cancellation
        it is cancelled and waited for), but the wait is `asyncio.timeout`: in Python 3.11,
        wait_for drops a cancellation that arrives in the moment `aw` completes and returns
        its result instead (CPython gh-86296; 3.12 rebuilt wait_for on timeout, gh-96764),
        so a task being stopped could carry on, e.g. a source reconnecting forever while
        the agent waits for it to end."""
        inner = asyncio.ensure_future(aw)
        try:
            async with asyncio.timeout(self.real_seconds(seconds)):
                return await inner
        finally:
            if not inner.done():
                inner.cancel()
                await asyncio.wait([inner])
                if not inner.cancelled():
                    inner.exception()  # retrieved: it ended after we stopped waiting


REAL_TIME = Clock(1.0)
