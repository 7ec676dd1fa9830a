from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from core.frozen import fast_init

Window = Literal["minute", "hour", "day"]


@fast_init
@dataclass(frozen=True, slots=True)
class RateLimits:
    per_minute: int
    per_hour: int
    tokens_per_day: int = 500_000


@fast_init
@dataclass(frozen=True, slots=True)
class RateDecision:
    """Whether a message may be processed; if not, which window is full and when to try again."""

    allowed: bool
    retry_after: float = 0.0
    window: Window | None = None


class RateLimiter(Protocol):
    async def hit(self, key: str, limits: RateLimits) -> RateDecision:
        """Count one message for `key` if it is within the limits; rejected messages are not counted.

        Messages are limited per sliding minute and hour; tokens per UTC day (see `add_tokens`).
        """
        ...

    async def add_tokens(self, key: str, tokens: int, *, also: Sequence[str] = ()) -> int:
        """Add a turn's tokens to today's total for `key` (and for each key in `also`, in the same
        step); returns the new total of `key`."""
        ...

    async def tokens_today(self, key: str) -> int:
        """Today's (UTC) token total for `key`, without counting anything."""
        ...
