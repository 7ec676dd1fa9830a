"""In-memory sliding-window rate limiter (one process)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from core.ratelimit.base import RateDecision, RateLimits

MINUTE = 60.0
HOUR = 3600.0


class MemoryRateLimiter:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}

    async def hit(self, key: str, limits: RateLimits) -> RateDecision:
        now = self._clock()
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - HOUR:
            hits.popleft()
        if len(hits) >= limits.per_hour:
            return RateDecision(False, retry_after=hits[-limits.per_hour] + HOUR - now, window="hour")
        in_minute = len(hits) - _first_at_or_after(hits, now - MINUTE)
        if in_minute >= limits.per_minute:
            # The window frees a slot when the oldest hit inside it turns a minute old.
            oldest = hits[len(hits) - in_minute]
            return RateDecision(False, retry_after=oldest + MINUTE - now, window="minute")
        hits.append(now)
        return RateDecision(True)


def _first_at_or_after(hits: deque[float], since: float) -> int:
    """Index of the first hit newer than `since` (hits are sorted)."""
    lo, hi = 0, len(hits)
    while lo < hi:
        mid = (lo + hi) // 2
        if hits[mid] <= since:
            lo = mid + 1
        else:
            hi = mid
    return lo
