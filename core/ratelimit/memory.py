"""In-memory sliding-window rate limiter and daily token budget (one process)."""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime

from core.clock import Clock, SystemClock
from core.ratelimit.base import RateDecision, RateLimits

MINUTE = 60.0
HOUR = 3600.0
DAY = 86400.0


def seconds_to_utc_midnight(now: float) -> float:
    return DAY - (now % DAY)


def utc_day(now: float) -> str:
    return _day_label(int(now // DAY))


@functools.lru_cache(maxsize=4)
def _day_label(day_number: int) -> str:
    # Formatting a date on every message showed in profiles; the day changes once a day.
    return datetime.fromtimestamp(day_number * DAY, UTC).strftime("%Y%m%d")


class MemoryRateLimiter:
    """Windows and the day on `clock` (a conversation test's own clock moves them)."""

    def __init__(self, *, clock: Clock | None = None) -> None:
        self._clock = clock or SystemClock()
        self._hits: dict[str, deque[float]] = {}
        self._tokens: dict[str, tuple[str, int]] = {}

    async def hit(self, key: str, limits: RateLimits) -> RateDecision:
        now = self._clock.now().timestamp()
        day, used = self._tokens.get(key, ("", 0))
        if day == utc_day(now) and used >= limits.tokens_per_day:
            return RateDecision(False, retry_after=seconds_to_utc_midnight(now), window="day")
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - HOUR:
            hits.popleft()
        if len(hits) >= limits.per_hour:
            return RateDecision(False, retry_after=hits[-limits.per_hour] + HOUR - now, window="hour")
        in_minute = len(hits) - _first_after(hits, now - MINUTE)
        if in_minute >= limits.per_minute:
            # The window frees a slot when the oldest hit inside it turns a minute old.
            oldest = hits[len(hits) - in_minute]
            return RateDecision(False, retry_after=oldest + MINUTE - now, window="minute")
        hits.append(now)
        return RateDecision(True)

    async def tokens_today(self, key: str) -> int:
        day, used = self._tokens.get(key, ("", 0))
        return used if day == utc_day(self._clock.now().timestamp()) else 0

    async def add_tokens(self, key: str, tokens: int, *, also: Sequence[str] = ()) -> int:
        today = utc_day(self._clock.now().timestamp())
        totals = []
        for each in (key, *also):
            day, used = self._tokens.get(each, (today, 0))
            total = (used if day == today else 0) + tokens
            self._tokens[each] = (today, total)
            totals.append(total)
        return totals[0]


def _first_after(hits: deque[float], since: float) -> int:
    """Index of the first hit newer than `since` (hits are sorted)."""
    lo, hi = 0, len(hits)
    while lo < hi:
        mid = (lo + hi) // 2
        if hits[mid] <= since:
            lo = mid + 1
        else:
            hi = mid
    return lo
