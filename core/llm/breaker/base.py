"""Circuit breakers per provider + model: stop sending requests to a step that keeps failing.

After `failure_threshold` consecutive failures the circuit opens and the step is skipped for
`cooldown_seconds`. Then exactly one caller gets a probe through: its success closes the circuit,
its failure opens it for another cooldown. A probe that never reports (its worker died) holds the
circuit for one cooldown, after which another probe may go.

Two backends behind one Protocol, side by side: memory.py (one process) and redis.py (every
worker sees the same state; the transitions are Lua scripts timed by the Redis server's clock, so workers on hosts with
different clocks agree).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["BreakerPolicy", "CircuitBreaker"]


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerPolicy:
    failure_threshold: int = 5
    cooldown_seconds: float = 30.0

    @property
    def forget_after(self) -> float:
        """Failures further apart than this are not an outage: the count starts over."""
        return max(60.0, 2 * self.cooldown_seconds)


class CircuitBreaker(Protocol):
    async def allow(self, key: str, policy: BreakerPolicy) -> bool:
        """May a request go to `key` now? False while open; after the cooldown, True for one probe."""
        ...

    async def record_success(self, key: str) -> None:
        """The provider answered: close the circuit and forget earlier failures."""
        ...

    async def record_failure(self, key: str, policy: BreakerPolicy) -> None:
        """The provider failed in a way that says it is unwell (429, 5xx, timeout, broken stream)."""
        ...
