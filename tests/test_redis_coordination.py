"""Rate limits and dedupe claims on a real Redis, shared by every process.

(Conversation locks are the queue's partition claims: see test_queue.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from core.dedupe.redis import RedisDedupeStore
from core.ratelimit.base import RateLimits
from core.ratelimit.memory import MemoryRateLimiter
from core.ratelimit.redis import RedisRateLimiter


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(redis_url)
    yield c
    await c.aclose()


@pytest.fixture(params=["memory", "redis"])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[MemoryRateLimiter | RedisRateLimiter]:
    if request.param == "memory":
        yield MemoryRateLimiter()
        return
    c = aioredis.Redis.from_url(request.getfixturevalue("redis_url"))
    yield RedisRateLimiter(c)
    await c.aclose()


async def test_the_minute_window_refuses_and_says_when(limiter: MemoryRateLimiter | RedisRateLimiter) -> None:
    limits = RateLimits(per_minute=2, per_hour=100, tokens_per_day=10_000)
    assert (await limiter.hit("u", limits)).allowed
    assert (await limiter.hit("u", limits)).allowed
    refused = await limiter.hit("u", limits)
    assert not refused.allowed and refused.window == "minute"
    assert 55 < refused.retry_after <= 60
    assert (await limiter.hit("someone else", limits)).allowed


async def test_the_hour_window(limiter: MemoryRateLimiter | RedisRateLimiter) -> None:
    limits = RateLimits(per_minute=100, per_hour=3, tokens_per_day=10_000)
    for _ in range(3):
        assert (await limiter.hit("u", limits)).allowed
    refused = await limiter.hit("u", limits)
    assert not refused.allowed and refused.window == "hour" and 3590 < refused.retry_after <= 3600


async def test_the_daily_token_budget_refuses_until_midnight_utc(
    limiter: MemoryRateLimiter | RedisRateLimiter,
) -> None:
    limits = RateLimits(per_minute=100, per_hour=100, tokens_per_day=1000)
    assert (await limiter.hit("u", limits)).allowed
    assert await limiter.add_tokens("u", 600) == 600
    assert (await limiter.hit("u", limits)).allowed
    assert await limiter.add_tokens("u", 500) == 1100
    refused = await limiter.hit("u", limits)
    assert not refused.allowed and refused.window == "day" and 0 < refused.retry_after <= 86400
    assert (await limiter.hit("v", limits)).allowed


async def test_two_workers_share_one_limit(client: aioredis.Redis) -> None:
    first, second = RedisRateLimiter(client), RedisRateLimiter(client)
    limits = RateLimits(per_minute=10, per_hour=100)
    results = await asyncio.gather(*(w.hit("u", limits) for w in [first, second] * 10))
    assert sum(r.allowed for r in results) == 10


async def test_a_dedupe_claim_is_won_once_and_expires(client: aioredis.Redis) -> None:
    a, b = RedisDedupeStore(client), RedisDedupeStore(client)
    results = await asyncio.gather(*(store.claim("Ev1", 0.3) for store in [a, b] * 5))
    assert sum(results) == 1
    assert await b.exists("Ev1")
    await asyncio.sleep(0.4)
    assert not await a.exists("Ev1")
    assert await b.claim("Ev1", 1)
