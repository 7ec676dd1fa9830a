"""Rate limits, dedupe claims and conversation locks on a real Redis, shared by every process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from core.dedupe.redis import RedisDedupeStore
from core.locks.redis import RedisConversationLocks
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


async def test_a_conversation_lock_is_exclusive_and_renewed_while_held(client: aioredis.Redis) -> None:
    locks = RedisConversationLocks(client, ttl_seconds=0.3)
    inside: list[str] = []
    overlaps = 0

    async def turn(name: str) -> None:
        nonlocal overlaps
        async with locks.hold("conv") as lease:
            overlaps += bool(inside)
            inside.append(name)
            await asyncio.sleep(0.5)  # longer than the TTL: the holder's renewals keep it
            assert await lease.still_held()
            inside.remove(name)

    await asyncio.gather(turn("a"), turn("b"))
    assert overlaps == 0
    assert not await client.exists("relaybot:lock:conv")


async def test_a_dead_holders_lock_expires_and_the_next_holder_gets_a_higher_fencing_token(
    client: aioredis.Redis,
) -> None:
    locks = RedisConversationLocks(client, ttl_seconds=0.3)
    # A holder that died: its key is there, nobody renews it.
    await client.set("relaybot:lock:conv", "dead-holder", px=300)
    await client.set("relaybot:lock:conv:fence", 7)
    async with asyncio.timeout(2), locks.hold("conv") as lease:
        assert lease.fencing_token == 8
        assert await lease.still_held()
        # A stalled holder finds out it lost the lock instead of committing blindly.
        await client.set("relaybot:lock:conv", "someone-else")
        assert not await lease.still_held()
    assert await client.get("relaybot:lock:conv") == b"someone-else"  # not ours to delete


async def test_a_waiter_takes_the_lock_on_its_release_notice_not_on_a_poll(client: aioredis.Redis) -> None:
    """Two workers (two lock objects) want one conversation: the second gets it as soon as the
    first releases, well before its once-a-second re-check."""
    first, second = RedisConversationLocks(client), RedisConversationLocks(client)
    loop = asyncio.get_running_loop()
    holding = asyncio.Event()
    release = asyncio.Event()
    released_at = 0.0

    async def hold_then_release() -> None:
        nonlocal released_at
        async with first.hold("c1"):
            holding.set()
            await release.wait()
            released_at = loop.time()

    holder = asyncio.create_task(hold_then_release())
    await holding.wait()
    waiter_got: asyncio.Future[tuple[float, int]] = loop.create_future()

    async def wait_for_it() -> None:
        async with second.hold("c1") as lease:
            waiter_got.set_result((loop.time(), lease.fencing_token))

    waiter = asyncio.create_task(wait_for_it())
    await asyncio.sleep(0.3)  # the waiter found the lock taken and is waiting
    assert not waiter_got.done()
    release.set()
    got_at, fencing = await asyncio.wait_for(waiter_got, 5)
    assert got_at - released_at < 0.3, got_at - released_at
    assert fencing == 2
    await asyncio.gather(holder, waiter)
