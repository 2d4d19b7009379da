"""A token-bucket rate limiter per client address, for the public lookup.

The public lookup needs an id AND its SHA-256, so guessing is hopeless anyway (122 random
bits of UUIDv7 plus 256 bits of hash); the limit keeps a scraper or a broken client from
turning the public endpoint into load on the database. Buckets are kept for at most
`max_clients` addresses (least recently seen dropped first), so memory stays bounded.
"""

from __future__ import annotations

from collections import OrderedDict

from wipeagent.clock import Clock


class RateLimiter:
    """`rate` requests a second per key on average, bursts of up to `burst`."""

    def __init__(self, clock: Clock, *, rate: float, burst: int,
                 max_clients: int = 10_000) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.clock = clock
        self.rate = rate
        self.burst = float(burst)
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def check(self, key: str) -> float:
        """0 if a request from `key` may go ahead now (and count it), else the seconds
        until it may (for Retry-After)."""
        now = self.clock.monotonic()
        tokens, last = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait
