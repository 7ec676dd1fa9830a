"""Rate limits on Redis, shared by every worker: one Lua script decides atomically.

Per user: a sorted set of message times (sliding minute and hour) and a counter of today's tokens
(UTC day). The script reads Redis's own clock, so workers with skewed clocks agree.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio as aioredis

from core.ratelimit.base import RateDecision, RateLimits
from core.redisio import RedisBatch, describe, redis_errors, text

_HIT_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local day = math.floor(now / 86400000)
local to_midnight = (day + 1) * 86400000 - now
local tokens_key = KEYS[2] .. ':' .. day
local used = tonumber(redis.call('GET', tokens_key) or '0')
if used >= tonumber(ARGV[3]) then return {0, to_midnight, 'day'} end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 3600000)
local hour = redis.call('ZCARD', KEYS[1])
if hour >= tonumber(ARGV[2]) then
  local oldest = redis.call('ZRANGE', KEYS[1], hour - tonumber(ARGV[2]), hour - tonumber(ARGV[2]), 'WITHSCORES')
  return {0, tonumber(oldest[2]) + 3600000 - now, 'hour'}
end
local minute = redis.call('ZCOUNT', KEYS[1], '(' .. (now - 60000), '+inf')
if minute >= tonumber(ARGV[1]) then
  local first = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. (now - 60000), '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  return {0, tonumber(first[2]) + 60000 - now, 'minute'}
end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('PEXPIRE', KEYS[1], 3600000)
return {1, 0, ''}
"""

# Every key gets the tokens; the first key's new total is returned.
_ADD_TOKENS_LUA = """
local t = redis.call('TIME')
local day = math.floor(tonumber(t[1]) / 86400)
local first = nil
for i = 1, #KEYS do
  local key = KEYS[i] .. ':' .. day
  local total = redis.call('INCRBY', key, ARGV[1])
  redis.call('EXPIRE', key, 172800)
  if i == 1 then first = total end
end
return first
"""


# The day by Redis's clock, as the two scripts above count it.
_TOKENS_TODAY_LUA = """
local t = redis.call('TIME')
return tonumber(redis.call('GET', KEYS[1] .. ':' .. math.floor(tonumber(t[1]) / 86400)) or '0')
"""


class RedisRateLimiter:
    def __init__(self, client: aioredis.Redis, *, prefix: str = "relaybot") -> None:
        self._client = client
        self._prefix = prefix
        self._where = describe(client)
        self._hit = client.register_script(_HIT_LUA)
        self._add = client.register_script(_ADD_TOKENS_LUA)
        self._today = client.register_script(_TOKENS_TODAY_LUA)

    def _keys(self, key: str) -> list[str]:
        return [f"{self._prefix}:rate:{key}", f"{self._prefix}:tokens:{key}"]

    @property
    def redis(self) -> aioredis.Redis:
        return self._client

    async def hit(self, key: str, limits: RateLimits) -> RateDecision:
        with redis_errors(self._where, "checking a rate limit", prefix=self._prefix):
            result: Any = await self._hit(keys=self._keys(key), args=self._hit_args(limits))
        return self._decision(result)

    def queue_hit(self, batch: RedisBatch, key: str, limits: RateLimits) -> Callable[[], RateDecision]:
        """`hit` as part of `batch`: the decision, once the batch has run."""
        index = batch.script(self._hit, self._keys(key), self._hit_args(limits))
        return lambda: self._decision(batch.result(index))

    @staticmethod
    def _hit_args(limits: RateLimits) -> list[Any]:
        return [limits.per_minute, limits.per_hour, limits.tokens_per_day, uuid.uuid4().hex]

    @staticmethod
    def _decision(result: Any) -> RateDecision:
        allowed, wait_ms, window = int(result[0]), float(result[1]), text(result[2])
        if allowed:
            return RateDecision(True)
        return RateDecision(False, retry_after=max(0.0, wait_ms / 1000), window=window)  # type: ignore[arg-type]

    async def tokens_today(self, key: str) -> int:
        with redis_errors(self._where, "reading a token total", prefix=self._prefix):
            used = await self._today(keys=[self._keys(key)[1]])
        return int(used or 0)

    async def add_tokens(self, key: str, tokens: int, *, also: Sequence[str] = ()) -> int:
        keys = [self._keys(each)[1] for each in (key, *also)]
        with redis_errors(self._where, "counting tokens", prefix=self._prefix):
            return int(await self._add(keys=keys, args=[max(0, tokens)]))

    def queue_add_tokens(
        self, batch: RedisBatch, key: str, tokens: int, *, also: Sequence[str] = ()
    ) -> Callable[[], int]:
        """`add_tokens` as part of `batch`: the first key's new total, once the batch has run."""
        index = batch.script(self._add, [self._keys(each)[1] for each in (key, *also)], [max(0, tokens)])
        return lambda: int(batch.result(index))
