"""Breaker state shared by every worker through Redis: Lua scripts timed by the Redis server's clock."""

from __future__ import annotations

import redis.asyncio as aioredis

from core.llm.breaker.base import BreakerPolicy
from core.redisio import describe, redis_errors, reply

__all__ = ["RedisCircuitBreaker"]


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
            open_until = await reply(self._client.hget(self._key(key), "open_until"))
            seconds, micros = await reply(self._client.time())
        if open_until is None:
            return False
        return int(open_until) > int(seconds) * 1000 + int(micros) // 1000


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))
