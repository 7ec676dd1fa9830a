from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class RateLimits:
    per_minute: int
    per_hour: int


@dataclass(frozen=True, slots=True)
class RateDecision:
    """Whether a message may be processed; if not, which window is full and when to try again."""

    allowed: bool
    retry_after: float = 0.0
    window: str | None = None


class RateLimiter(Protocol):
    async def hit(self, key: str, limits: RateLimits) -> RateDecision:
        """Count one message for `key` if it is within the limits; rejected messages are not counted."""
        ...
