"""Cached reads of facts and summaries (`CachedHistoryStore`), on both caches, over a real SQLite store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from sqlalchemy import event, text

from core.stores.base import Summary, UserFact
from core.stores.cached import CachedHistoryStore, ReadCache
from core.stores.memory import MemoryReadCache
from core.stores.redis import RedisReadCache
from core.stores.sql import SqlHistoryStore

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


@pytest.fixture(params=["memory", "redis"])
async def cache(request: pytest.FixtureRequest) -> AsyncIterator[ReadCache]:
    if request.param == "memory":
        yield MemoryReadCache()
        return
    client = aioredis.Redis.from_url(request.getfixturevalue("redis_url"))
    try:
        yield RedisReadCache(client)
    finally:
        await client.aclose()


@pytest.fixture
async def sql(tmp_path: Path) -> AsyncIterator[SqlHistoryStore]:
    store = SqlHistoryStore.from_url(f"sqlite:///{tmp_path / 'history.db'}")
    await store.create_schema()
    try:
        yield store
    finally:
        await store.close()


async def count_fact_reads(sql: SqlHistoryStore) -> list[str]:
    """Every SELECT on user_facts or session_summaries, recorded as the engine runs it."""
    seen: list[str] = []

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.lstrip().upper().startswith("SELECT") and (
            "user_facts" in statement or "session_summaries" in statement
        ):
            seen.append(statement)

    event.listen(sql.sync_engine, "before_cursor_execute", record)
    return seen


async def test_facts_and_summary_are_read_from_sql_once_then_from_the_cache(
    sql: SqlHistoryStore, cache: ReadCache
) -> None:
    store = CachedHistoryStore(sql, cache, ttl_seconds=60)
    await sql.remember(bot="b", user_id="u", facts=[UserFact(key="city", value="Lyon", updated_at=T0)])
    reads = await count_fact_reads(sql)
    for _ in range(5):
        assert [(f.key, f.value) for f in await store.facts("b", "u")] == [("city", "Lyon")]
        assert await store.summary("s1") is None  # "no summary" is cached too
    assert len(reads) == 2, reads


async def test_a_write_through_the_store_is_seen_by_the_next_read(sql: SqlHistoryStore, cache: ReadCache) -> None:
    store = CachedHistoryStore(sql, cache, ttl_seconds=60)
    assert await store.facts("b", "u") == []
    await store.remember(bot="b", user_id="u", facts=[UserFact(key="city", value="Lyon", updated_at=T0)])
    assert [f.value for f in await store.facts("b", "u")] == ["Lyon"]
    await store.remember(
        bot="b", user_id="u", facts=[UserFact(key="city", value="Paris", updated_at=T0 + timedelta(minutes=1))]
    )
    assert [f.value for f in await store.facts("b", "u")] == ["Paris"]
    assert await store.forget("b", "u", ["city"]) == 1
    assert await store.facts("b", "u") == []

    assert await store.summary("s1") is None
    assert await store.save_summary("s1", Summary(text="asked about plans", through_seq=10, updated_at=T0))
    cached = await store.summary("s1")
    assert cached is not None and (cached.text, cached.through_seq, cached.updated_at) == (
        "asked about plans",
        10,
        T0,
    )


async def test_two_stores_on_one_cache_see_each_others_writes(sql: SqlHistoryStore, cache: ReadCache) -> None:
    # Two workers: one cache (Redis, or one process's memory), one database.
    a = CachedHistoryStore(sql, cache, ttl_seconds=60)
    b = CachedHistoryStore(sql, cache, ttl_seconds=60)
    assert await b.facts("bot", "u") == []
    await a.remember(bot="bot", user_id="u", facts=[UserFact(key="plan", value="Pro", updated_at=T0)])
    assert [f.value for f in await b.facts("bot", "u")] == ["Pro"]


async def test_a_read_that_raced_a_write_does_not_put_the_old_value_back(
    sql: SqlHistoryStore, cache: ReadCache
) -> None:
    """The reader saw the generation, read the old value, then the writer wrote and invalidated:
    the reader's fill must be refused, or the cache would serve the old value until its TTL."""
    store = CachedHistoryStore(sql, cache, ttl_seconds=60)
    key = "facts:b:u"
    _, generation = await cache.get(key)
    stale = '[["city", "Lyon", "", "2026-01-05T09:00:00+00:00"]]'
    await store.remember(bot="b", user_id="u", facts=[UserFact(key="city", value="Paris", updated_at=T0)])
    await cache.set(key, stale, generation, 60)  # the slow reader's fill, after the write
    assert [f.value for f in await store.facts("b", "u")] == ["Paris"]


async def test_a_failed_write_still_drops_the_cached_value(sql: SqlHistoryStore, cache: ReadCache) -> None:
    store = CachedHistoryStore(sql, cache, ttl_seconds=60)
    assert await store.facts("b", "u") == []
    with sql.sync_engine.begin() as conn:  # another connection to the file, as an operator's would be
        conn.execute(text("DROP TABLE user_facts"))
    with pytest.raises(Exception, match="user facts"):
        await store.remember(bot="b", user_id="u", facts=[UserFact(key="city", value="Lyon", updated_at=T0)])
    # Not served the cached "nothing": the next read goes to the database (and reports its failure).
    with pytest.raises(Exception, match="user facts"):
        await store.facts("b", "u")


async def test_memory_cache_entries_expire_and_the_oldest_are_dropped_first() -> None:
    now = [100.0]
    cache = MemoryReadCache(max_entries=2, clock=lambda: now[0])
    for key in ("a", "b"):
        _, generation = await cache.get(key)
        await cache.set(key, key.upper(), generation, 10)
    assert (await cache.get("a"))[0] == "A"  # "a" is now the most recently used
    _, generation = await cache.get("c")
    await cache.set("c", "C", generation, 10)
    assert [(await cache.get(k))[0] for k in ("a", "b", "c")] == ["A", None, "C"]
    now[0] += 11
    assert (await cache.get("a"))[0] is None


async def test_redis_cache_keys_expire_with_the_ttl(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        cache = RedisReadCache(client)
        _, generation = await cache.get("summary:s1")
        await cache.set("summary:s1", "null", generation, 30)
        assert 0 < await client.ttl("relaybot:cache:summary:s1") <= 30
        await cache.invalidate("summary:s1")
        assert await client.exists("relaybot:cache:summary:s1") == 0
        assert await client.get("relaybot:cachegen:summary:s1") == "1"
    finally:
        await client.aclose()


async def test_facts_and_summary_are_one_cache_read_once_warm(sql: SqlHistoryStore, cache: ReadCache) -> None:
    store = CachedHistoryStore(sql, cache, ttl_seconds=60)
    await sql.remember(bot="b", user_id="u", facts=[UserFact(key="plan", value="Pro", updated_at=T0)])
    await sql.save_summary("s1", Summary(text="earlier", through_seq=4, updated_at=T0))
    reads = await count_fact_reads(sql)
    for _ in range(3):
        facts, summary = await store.facts_and_summary("b", "u", "s1")
        assert [f.value for f in facts] == ["Pro"] and summary is not None and summary.text == "earlier"
    assert len(reads) == 2, reads  # filled once each, then served from the cache


async def test_a_saved_summary_is_written_through_and_an_older_one_never_replaces_it(
    sql: SqlHistoryStore, cache: ReadCache
) -> None:
    store = CachedHistoryStore(sql, cache, ttl_seconds=60)
    assert await store.summary("s1") is None
    reads = await count_fact_reads(sql)
    assert await store.save_summary("s1", Summary(text="asked about plans", through_seq=10, updated_at=T0))
    saved = await store.summary("s1")
    assert saved is not None and (saved.text, saved.through_seq) == ("asked about plans", 10)
    assert reads == []  # the next turn's read of the summary it just folded is a cache hit
    # A late fold of older messages is refused by the store, and the cache keeps the newer summary.
    assert not await store.save_summary("s1", Summary(text="older", through_seq=6, updated_at=T0))
    kept = await store.summary("s1")
    assert kept is not None and (kept.text, kept.through_seq) == ("asked about plans", 10)
