"""Circuit breaker and response cache: one contract for the memory and Redis backends (real
redis-server), sharing between workers, and the chain carrying on when Redis is down."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from core.errors import StoreError
from core.llm.breaker import BreakerPolicy, CircuitBreaker
from core.llm.breaker.memory import MemoryCircuitBreaker
from core.llm.breaker.redis import RedisCircuitBreaker
from core.llm.cache import CachedAnswer, ResponseCache
from core.llm.cache.memory import MemoryResponseCache
from core.llm.cache.redis import RedisResponseCache
from core.redisio import client_from_url
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.scripted import Answer, Cut, Fail
from tests.support.llm import Deltas, ask, bot, chain_factory, llm_settings
from tests.support.servers import free_port

POLICY = BreakerPolicy(failure_threshold=3, cooldown_seconds=0.3)


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = client_from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture(params=["memory", "redis"])
async def breaker(request: pytest.FixtureRequest) -> AsyncIterator[CircuitBreaker]:
    if request.param == "memory":
        yield MemoryCircuitBreaker()
        return
    client = client_from_url(request.getfixturevalue("redis_url"))
    yield RedisCircuitBreaker(client)
    await client.aclose()


@pytest.fixture(params=["memory", "redis"])
async def cache(request: pytest.FixtureRequest) -> AsyncIterator[ResponseCache]:
    if request.param == "memory":
        yield MemoryResponseCache()
        return
    client = client_from_url(request.getfixturevalue("redis_url"))
    yield RedisResponseCache(client)
    await client.aclose()


async def test_breaker_opens_after_consecutive_failures_and_lets_one_probe_through(breaker: CircuitBreaker) -> None:
    key = "openai:gpt-4o@http://fake"
    for _ in range(POLICY.failure_threshold - 1):
        await breaker.record_failure(key, POLICY)
        assert await breaker.allow(key, POLICY)
    await breaker.record_failure(key, POLICY)
    assert not await breaker.allow(key, POLICY)
    assert await breaker.allow("openai:gpt-4o-mini@http://fake", POLICY)  # per provider + model
    await asyncio.sleep(POLICY.cooldown_seconds + 0.05)
    grants = [await breaker.allow(key, POLICY) for _ in range(5)]
    assert grants == [True, False, False, False, False]  # one probe
    await breaker.record_failure(key, POLICY)  # the probe failed: open for another cooldown
    assert not await breaker.allow(key, POLICY)
    await asyncio.sleep(POLICY.cooldown_seconds + 0.05)
    assert await breaker.allow(key, POLICY)
    await breaker.record_success(key)  # the probe worked: closed, failures forgotten
    assert all([await breaker.allow(key, POLICY) for _ in range(3)])
    await breaker.record_failure(key, POLICY)
    assert await breaker.allow(key, POLICY)


async def test_a_success_resets_the_count_of_consecutive_failures(breaker: CircuitBreaker) -> None:
    for _ in range(5):
        await breaker.record_failure("k", POLICY)
        await breaker.record_failure("k", POLICY)
        await breaker.record_success("k")
    assert await breaker.allow("k", POLICY)


async def test_failures_far_apart_are_not_an_outage() -> None:
    now = [1000.0]
    breaker = MemoryCircuitBreaker(clock=lambda: now[0])
    for _ in range(10):
        await breaker.record_failure("k", POLICY)
        now[0] += POLICY.forget_after + 1
    assert await breaker.allow("k", POLICY)


async def test_the_redis_breaker_is_shared_by_every_worker(redis_url: str) -> None:
    worker_a, worker_b = client_from_url(redis_url), client_from_url(redis_url)
    try:
        a, b = RedisCircuitBreaker(worker_a), RedisCircuitBreaker(worker_b)
        for _ in range(POLICY.failure_threshold):
            await a.record_failure("anthropic:claude", POLICY)
        assert not await b.allow("anthropic:claude", POLICY)
        assert await b.is_open("anthropic:claude")
        await asyncio.sleep(POLICY.cooldown_seconds + 0.05)
        # After the cooldown both workers race for the probe: exactly one of them gets it.
        grants = await asyncio.gather(*(w.allow("anthropic:claude", POLICY) for w in (a, b, a, b)))
        assert sorted(grants) == [False, False, False, True]
        await b.record_success("anthropic:claude")
        assert await a.allow("anthropic:claude", POLICY) and not await a.is_open("anthropic:claude")
        ttl = await worker_a.pttl("relaybot:llm:breaker:anthropic:claude")
        assert ttl == -2  # closed: nothing left behind
        await a.record_failure("anthropic:claude", POLICY)
        ttl = await worker_a.pttl("relaybot:llm:breaker:anthropic:claude")
        assert 0 < ttl <= (POLICY.cooldown_seconds + POLICY.forget_after) * 1000  # state expires on its own
    finally:
        await worker_a.aclose()
        await worker_b.aclose()


async def test_cache_returns_what_was_put_until_it_expires(cache: ResponseCache) -> None:
    answer = CachedAnswer(text="Cached answer.", provider="openai", model="gpt-4o")
    assert await cache.get("k1") is None
    await cache.put("k1", answer, ttl_seconds=0.2)
    assert await cache.get("k1") == answer
    assert await cache.get("k2") is None
    await asyncio.sleep(0.25)
    assert await cache.get("k1") is None


async def test_redis_cache_treats_an_unreadable_entry_as_a_miss(redis_client: aioredis.Redis) -> None:
    await redis_client.set("relaybot:llm:cache:old", b"not json")
    assert await RedisResponseCache(redis_client).get("old") is None


async def test_redis_down_is_a_store_error_naming_redis() -> None:
    client = client_from_url(f"redis://127.0.0.1:{free_port()}/0")
    try:
        with pytest.raises(StoreError, match="cannot reach Redis"):
            await RedisCircuitBreaker(client).allow("k", POLICY)
        with pytest.raises(StoreError, match="cannot reach Redis"):
            await RedisResponseCache(client).get("k")
    finally:
        await client.aclose()


# --- through the chain --------------------------------------------------------------------------


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeOpenAI, FakeAnthropic]]:
    async with FakeOpenAI() as openai_fake, FakeAnthropic() as anthropic_fake:
        yield openai_fake, anthropic_fake


async def test_the_cache_answers_the_same_context_again_for_the_same_user_only(
    tmp_path: Path, fakes: tuple[FakeOpenAI, FakeAnthropic], redis_client: aioredis.Redis
) -> None:
    openai_fake, anthropic_fake = fakes
    openai_fake.always("gpt-4o", Answer("Computed once.", input_tokens=20, output_tokens=3))
    async with chain_factory(llm_settings(tmp_path, openai_fake, anthropic_fake), redis=redis_client) as factory:
        chain = factory.for_bot(bot(cache_ttl_seconds=60))
        first = await chain.run(ask(), user_key="alice")
        again = await chain.run(ask(), user_key="alice")
        other_user = await chain.run(ask(), user_key="bob")
        other_question = await chain.run(ask("Something else?"), user_key="alice")
        shared = factory.for_bot(bot(name="faq", cache_ttl_seconds=60, cache_shared=True))
        await shared.run(ask(), user_key="alice")
        shared_hit = await shared.run(ask(), user_key="bob")
    assert (first.cache_hit, again.cache_hit, other_user.cache_hit, other_question.cache_hit) == (
        False,
        True,
        False,
        False,
    )
    assert again.text == "Computed once." and (again.provider, again.model) == ("openai", "gpt-4o")
    assert (again.usage.tokens_in, again.usage.tokens_out, again.attempts) == (0, 0, ())
    assert shared_hit.cache_hit
    assert openai_fake.count() == 4  # alice, bob, alice's other question, the faq bot once
    assert len(await redis_client.keys("relaybot:llm:cache:*")) == 4


async def test_the_cache_is_off_unless_the_bot_turns_it_on_and_never_keeps_a_cut_answer(
    tmp_path: Path, fakes: tuple[FakeOpenAI, FakeAnthropic]
) -> None:
    openai_fake, anthropic_fake = fakes
    async with chain_factory(llm_settings(tmp_path, openai_fake, anthropic_fake)) as factory:
        plain = factory.for_bot(bot())
        assert not (await plain.run(ask(), user_key="u")).cache_hit
        assert not (await plain.run(ask(), user_key="u")).cache_hit
        cached = factory.for_bot(bot(name="cached", cache_ttl_seconds=60))
        openai_fake.queue("gpt-4o", Cut(after=2))
        cut = await cached.run(ask(), on_delta=Deltas(), user_key="u")
        after_cut = await cached.run(ask(), user_key="u")
    assert cut.outcome == "interrupted"
    assert (after_cut.outcome, after_cut.cache_hit) == ("answered", False)


async def test_with_redis_down_the_chain_still_answers(tmp_path: Path, fakes: tuple[FakeOpenAI, FakeAnthropic]) -> None:
    openai_fake, anthropic_fake = fakes
    openai_fake.always("gpt-4o", Fail(500))
    dead = client_from_url(f"redis://127.0.0.1:{free_port()}/0")
    try:
        settings = llm_settings(tmp_path, openai_fake, anthropic_fake)
        async with chain_factory(settings, redis=dead) as factory:
            with capture_logs() as logs:
                result = await factory.for_bot(bot(cache_ttl_seconds=60)).run(ask(), user_key="u")
    finally:
        await dead.aclose()
    assert (result.model, result.fallback_used) == ("gpt-4o-mini", True)
    events = {e["event"] for e in logs}
    assert {"llm_breaker_unavailable", "llm_cache_unavailable"} <= events
