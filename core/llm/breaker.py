"""Circuit breakers per provider + model: stop sending requests to a step that keeps failing.

After `failure_threshold` consecutive failures the circuit opens and the step is skipped for
`cooldown_seconds`. Then exactly one caller gets a probe through: its success closes the circuit,
its failure opens it for another cooldown. A probe that never reports (its worker died) holds the
circuit for one cooldown, after which another probe may go.

Two backends behind one Protocol: memory (one process) and Redis (every worker sees the same
state; the transitions are Lua scripts timed by the Redis server's clock, so workers on hosts with
different clocks agree).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as aioredis

from core.redisio import describe, redis_errors

__all__ = ["BreakerPolicy", "CircuitBreaker", "MemoryCircuitBreaker", "RedisCircuitBreaker"]


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


# Times in milliseconds from the server's clock. Hash fields: failures, open_until, probing.
_NOW = "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"

# ARGV: cooldown_ms. Returns 1 to let the request go, 0 to skip the step.
_ALLOW_LUA = (
    _NOW
    + """
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until'))
if not open_until then return 1 end
if now < open_until then return 0 end
redis.call('HSET', KEYS[1], 'open_until', now + tonumber(ARGV[1]), 'probing', 1)
return 1
"""
)

# ARGV: threshold, cooldown_ms, forget_ms. Returns 1 if the circuit is open afterwards.
_FAILURE_LUA = (
    _NOW
    + """
local state = redis.call('HMGET', KEYS[1], 'failures', 'last_failure', 'open_until', 'probing')
local failures = tonumber(state[1]) or 0
local last = tonumber(state[2]) or 0
if not state[3] and now - last > tonumber(ARGV[3]) then failures = 0 end
failures = failures + 1
redis.call('HSET', KEYS[1], 'failures', failures, 'last_failure', now)
local opened = 0
if state[4] == '1' or failures >= tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'open_until', now + tonumber(ARGV[2]), 'probing', 0)
  opened = 1
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) + tonumber(ARGV[3]))
return opened
"""
)


class RedisCircuitBreaker:
    """Breaker state shared by every worker through Redis. Takes the process's client.

    One hash per provider + model under `<prefix>:llm:breaker:`; it expires on its own once the
    provider has been quiet for a cooldown plus `forget_after`, so stale state never lingers.
    """

    def __init__(self, client: aioredis.Redis, *, prefix: str = "relaybot") -> None:
        self._client = client
        self._prefix = prefix
        self._where = describe(client)
        self._allow = client.register_script(_ALLOW_LUA)
        self._failure = client.register_script(_FAILURE_LUA)

    def _key(self, key: str) -> str:
        return f"{self._prefix}:llm:breaker:{key}"

    async def allow(self, key: str, policy: BreakerPolicy) -> bool:
        with redis_errors(self._where, "checking an LLM circuit breaker", prefix=self._prefix):
            allowed = await self._allow(keys=[self._key(key)], args=[_ms(policy.cooldown_seconds)])
        return bool(int(allowed))

    async def record_success(self, key: str) -> None:
        with redis_errors(self._where, "closing an LLM circuit breaker", prefix=self._prefix):
            await self._client.delete(self._key(key))

    async def record_failure(self, key: str, policy: BreakerPolicy) -> None:
        args = [policy.failure_threshold, _ms(policy.cooldown_seconds), _ms(policy.forget_after)]
        with redis_errors(self._where, "recording an LLM failure", prefix=self._prefix):
            await self._failure(keys=[self._key(key)], args=args)

    async def is_open(self, key: str) -> bool:
        """For diagnostics: is the circuit open (or half-open with a probe out) right now?"""
        with redis_errors(self._where, "reading an LLM circuit breaker", prefix=self._prefix):
            open_until, now = await self._client.hget(self._key(key), "open_until"), await self._client.time()
        if open_until is None:
            return False
        return int(open_until) > now[0] * 1000 + now[1] // 1000


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))
