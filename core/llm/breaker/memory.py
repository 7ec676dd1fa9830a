"""Breaker state in this process only (embedded mode, or tests), on the process's monotonic clock."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from core.llm.breaker.base import BreakerPolicy

__all__ = ["MemoryCircuitBreaker"]


@dataclass(slots=True)
class _State:
    failures: int = 0
    last_failure: float = 0.0
    open_until: float | None = None
    probing: bool = False


class MemoryCircuitBreaker:
    """Breaker state in this process only (embedded mode, or tests)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._states: dict[str, _State] = {}

    async def allow(self, key: str, policy: BreakerPolicy) -> bool:
        state = self._states.get(key)
        if state is None or state.open_until is None:
            return True
        now = self._clock()
        if now < state.open_until:
            return False
        # Cooldown over: this caller is the probe; the others keep skipping until it reports.
        state.open_until = now + policy.cooldown_seconds
        state.probing = True
        return True

    async def record_success(self, key: str) -> None:
        self._states.pop(key, None)

    async def record_failure(self, key: str, policy: BreakerPolicy) -> None:
        now = self._clock()
        state = self._states.setdefault(key, _State())
        if state.open_until is None and now - state.last_failure > policy.forget_after:
            state.failures = 0
        state.failures += 1
        state.last_failure = now
        if state.probing or state.failures >= policy.failure_threshold:
            state.open_until = now + policy.cooldown_seconds
            state.probing = False

    def is_open(self, key: str) -> bool:
        """For diagnostics: is the circuit open (or half-open with a probe out) right now?"""
        state = self._states.get(key)
        return state is not None and state.open_until is not None and self._clock() < state.open_until
