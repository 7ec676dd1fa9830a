"""Rate limits and dedupe claims on a real Redis, shared by every process.

(Conversation locks are the queue's partition claims: see test_queue.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from core.dedupe.redis import RedisDedupeStore
from core.ratelimit.base import RateLimits
from core.ratelimit.memory import MemoryRateLimiter
from core.ratelimit.redis import RedisRateLimiter
from core.redisio import client_from_url, round_trips
from tests.support.harness import make_settings, running_app
from tests.support.web_frames import frames_until_reply


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


async def test_round_trips_count_one_per_command_pipeline_and_script(redis_url: str) -> None:
    client = client_from_url(redis_url)
    script = client.register_script("return redis.call('INCR', KEYS[1])")
    limiter = RedisRateLimiter(client)
    limits = RateLimits(per_minute=10, per_hour=100, tokens_per_day=1000)
    try:
        # Connected (the shared connection and a pooled one, whose handshakes are sends too), and
        # the scripts loaded (a script's first call is EVALSHA, SCRIPT LOAD, EVALSHA).
        await script(keys=["rt:c"])
        await limiter.hit("u", limits)
        async with client.pipeline(transaction=True) as pipe:
            await pipe.get("rt:a").execute()
        start = round_trips(client)
        await client.set("rt:a", "1")
        async with client.pipeline(transaction=True) as pipe:
            pipe.incr("rt:b")
            pipe.expire("rt:b", 60)
            pipe.get("rt:a")
            await pipe.execute()
        await script(keys=["rt:c"])
        await limiter.hit("u", limits)
        assert round_trips(client) - start == 4
    finally:
        await client.aclose()


async def test_the_metrics_page_counts_the_redis_round_trips_of_a_turn(tmp_path: Path, redis_url: str) -> None:
    async with running_app(make_settings(tmp_path, redis_url=redis_url)) as (_, base), aiohttp.ClientSession() as http:
        before = await redis_round_trips(http, base)
        async with http.ws_connect(f"{base}/ws?bot=support") as ws:
            await ws.receive_json()
            await ws.send_json({"type": "message", "id": "m1", "text": "hello"})
            frames = await frames_until_reply(ws)
        assert frames[-1]["type"] == "reply"
        after = await redis_round_trips(http, base)
    assert after > before  # sessions, limits and the reply's bookkeeping live in Redis


async def redis_round_trips(http: aiohttp.ClientSession, base: str) -> float:
    async with http.get(f"{base}/metrics") as response:
        text = await response.text()
    (line,) = [line for line in text.splitlines() if line.startswith("relaybot_redis_round_trips_total ")]
    return float(line.split()[1])
