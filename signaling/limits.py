"""Per-client offer rate limit: a token bucket per client key.

Each offer costs real work (parsing SDP, gathering ICE candidates, building a peer
connection, attaching a conversation), so one client may make `burst` offers at once and
then `per_minute` on average. The table of buckets is bounded: a bucket that has refilled
completely carries no information and is dropped, and past `max_clients` the least recently
used are dropped (a flood from many addresses then costs each of them nothing more, and the
global session cap still holds).
"""

from __future__ import annotations

import time
from collections.abc import Callable


class RateLimiter:
    def __init__(
        self,
        per_minute: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = 10_000,
    ) -> None:
        self._rate = per_minute / 60.0
        self._burst = float(max(1, burst))
        self._clock = clock
        self._max_clients = max_clients
        # key -> (tokens, time of last update); insertion order is least recently used first.
        self._buckets: dict[str, tuple[float, float]] = {}

    @property
    def enabled(self) -> bool:
        return self._rate > 0

    def __len__(self) -> int:
        return len(self._buckets)

    def acquire(self, key: str) -> float:
        """Take one token for `key`: 0.0 when allowed, else the seconds until one is free
        (nothing is taken then)."""
        if not self.enabled:
            return 0.0
        now = self._clock()
        tokens, last = self._buckets.pop(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self._rate
        self._buckets[key] = (tokens, now)
        self._prune(now)
        return wait

    def _prune(self, now: float) -> None:
        refill_s = self._burst / self._rate
        while self._buckets:
            key, (_, last) = next(iter(self._buckets.items()))
            if now - last < refill_s and len(self._buckets) <= self._max_clients:
                return
            del self._buckets[key]
