"""Sliding-window rate limits, in process memory: each replica counts on its own (N replicas allow up to
N times the limit). Good enough to stop a runaway client; a shared limit would need a shared store."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class SlidingWindowLimiter:
    def __init__(self, limit: int, window_seconds: float, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 100_000) -> None:
        self.limit = limit
        self.window = window_seconds
        self.clock = clock
        self.max_keys = max_keys
        self.hits: dict[str, deque[float]] = {}

    def check(self, key: str) -> float | None:
        """Count a hit; None when allowed, else the seconds to wait (nothing is counted then)."""
        now = self.clock()
        hits = self.hits.get(key)
        if hits is None:
            if len(self.hits) >= self.max_keys:
                self._evict(now)
            hits = self.hits[key] = deque()
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if len(hits) >= self.limit:
            return max(0.0, hits[0] + self.window - now)
        hits.append(now)
        return None

    def _evict(self, now: float) -> None:
        for key in [k for k, v in self.hits.items() if not v or v[-1] <= now - self.window]:
            del self.hits[key]
        if len(self.hits) >= self.max_keys:  # all busy: forget the oldest half rather than grow forever
            for key in list(self.hits)[: self.max_keys // 2]:
                del self.hits[key]
