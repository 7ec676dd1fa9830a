"""In-memory dedupe claims with expiry (one process)."""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable


class MemoryDedupeStore:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._expiry: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []

    def _purge(self, now: float) -> None:
        while self._heap and self._heap[0][0] <= now:
            expires, key = heapq.heappop(self._heap)
            if self._expiry.get(key) == expires:
                del self._expiry[key]

    async def claim(self, key: str, ttl_seconds: float) -> bool:
        now = self._clock()
        self._purge(now)
        if key in self._expiry:
            return False
        expires = now + ttl_seconds
        self._expiry[key] = expires
        heapq.heappush(self._heap, (expires, key))
        return True

    async def exists(self, key: str) -> bool:
        self._purge(self._clock())
        return key in self._expiry
