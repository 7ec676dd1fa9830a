"""The reads that open a turn (rate limit, session and window, facts and summary) and the writes
that close it (session window, token totals) in one Redis round trip each, against a real Redis and
SQLite: same decisions and the same data as the stages one by one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from core.bots import load_bot
from core.envelope import Envelope
from core.errors import StoreError
from core.pipeline.closing import SaveTurnStage
from core.pipeline.opening import OpenTurnStage
from core.pipeline.turn import Turn
from core.ratelimit.memory import MemoryRateLimiter
from core.ratelimit.redis import RedisRateLimiter
from core.redisio import RedisBatch, client_from_url, round_trips
from core.stores.base import StoredMessage, Summary, UserFact
from core.stores.cached import CachedHistoryStore
from core.stores.memory import MemoryReadCache, MemorySessionStore
from core.stores.redis import RedisReadCache, RedisSessionStore
from core.stores.sql import SqlHistoryStore
from tests.support.harness import write_bot

SESSION = "support:api:conv-1"


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    c = client_from_url(redis_url)
    await c.flushdb()
    yield c
    await c.aclose()


@pytest.fixture
async def history(tmp_path: Path) -> AsyncIterator[SqlHistoryStore]:
    store = SqlHistoryStore.from_url(f"sqlite:///{tmp_path / 'history.db'}")
    await store.create_schema()
    yield store
    await store.close()


def turn_for(bot_dir: Path, text: str, msg_id: str) -> Turn:
    envelope = Envelope.create(
        bot="support",
        channel="api",
        channel_message_id=msg_id,
        conversation_id="conv-1",
        user_id="api:conv-1",
        text=text,
    )
    return Turn(envelope=envelope, bot=load_bot(bot_dir))


async def test_a_batch_sends_commands_and_scripts_in_one_round_trip_and_reloads_a_flushed_script(
    client: aioredis.Redis,
) -> None:
    script = client.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    await client.set("b:a", "x")
    start = round_trips(client)
    batch = RedisBatch(client)
    got = batch.command("GET", "b:a")
    added = batch.script(script, ["b:n"], [5])
    await batch.run()
    # The script was never loaded: EVALSHA fails in the batch and is run again on its own
    # (redis-py's script call: EVALSHA, SCRIPT LOAD, EVALSHA).
    assert (batch.result(got), batch.result(added)) == (b"x", 5)
    loaded_now = round_trips(client)

    batch = RedisBatch(client)
    added = batch.script(script, ["b:n"], [2])
    got = batch.command("GET", "b:a")
    await batch.run()
    assert (batch.result(added), batch.result(got)) == (7, b"x")
    assert round_trips(client) - loaded_now == 1
    assert loaded_now - start > 1

    await client.script_flush()
    batch = RedisBatch(client)
    added = batch.script(script, ["b:n"], [1])
    await batch.run()
    assert batch.result(added) == 8


async def test_a_failing_command_in_a_batch_raises_instead_of_returning_the_error(client: aioredis.Redis) -> None:
    await client.set("b:s", "a string")
    batch = RedisBatch(client)
    batch.command("GET", "b:s")
    batch.command("LRANGE", "b:s", 0, -1)
    with pytest.raises(Exception, match="WRONGTYPE"):
        await batch.run()
    with pytest.raises(RuntimeError, match="not run"):
        batch.result(0)


async def test_on_one_redis_a_turn_opens_in_one_round_trip_with_the_same_decisions(
    tmp_path: Path, client: aioredis.Redis, history: SqlHistoryStore
) -> None:
    bot_dir = write_bot(tmp_path / "bots", history={"max_messages": 4}, limits={"messages_per_minute": 3})
    sessions = RedisSessionStore(client, ttl_seconds=60)
    cached = CachedHistoryStore(history, RedisReadCache(client), ttl_seconds=60)
    stage = OpenTurnStage(RedisRateLimiter(client), sessions, cached)
    assert stage.batched

    first = turn_for(bot_dir, "hello", "m1")
    await stage(first)  # a new session: created, seeded from the durable history (empty)
    assert first.session is not None and first.session_created
    assert (first.history, first.facts, first.summary) == ([], [], None)

    saved = await cached.append(
        session_id=SESSION,
        bot="support",
        channel="api",
        user_id="api:conv-1",
        messages=[StoredMessage(role="user", content="hello"), StoredMessage(role="assistant", content="hi!")],
    )
    await sessions.append(SESSION, saved, keep=4)
    await cached.remember(bot="support", user_id="api:conv-1", facts=[UserFact(key="city", value="Lyon")])
    await cached.save_summary(SESSION, Summary(text="They said hello.", through_seq=1))
    await stage(turn_for(bot_dir, "warm the cache", "m2"))

    second = turn_for(bot_dir, "and now?", "m3")
    before = round_trips(client)
    await stage(second)
    assert round_trips(client) - before == 1
    assert second.session is not None and not second.session_created
    assert [f.value for f in second.facts] == ["Lyon"]
    assert second.summary is not None and second.summary.text == "They said hello."
    # The window leaves out what the summary folded (seq 1).
    assert [m.content for m in second.history] == ["hi!"]

    refused = turn_for(bot_dir, "too fast", "m4")
    await stage(refused)
    assert refused.done and refused.notice == "rate_limited"
    assert "faster than I can answer" in (refused.reply_text or "")
    assert refused.session is None  # as before: a refused message never touches the session


async def test_stores_not_on_one_redis_open_the_turn_stage_by_stage(tmp_path: Path, history: SqlHistoryStore) -> None:
    bot_dir = write_bot(tmp_path / "bots", limits={"messages_per_minute": 1})
    stage = OpenTurnStage(
        MemoryRateLimiter(),
        MemorySessionStore(ttl_seconds=60),
        CachedHistoryStore(history, MemoryReadCache(), ttl_seconds=60),
    )
    assert not stage.batched
    first = turn_for(bot_dir, "hello", "m1")
    await stage(first)
    assert first.session is not None and not first.done
    second = turn_for(bot_dir, "again", "m2")
    await stage(second)
    assert second.notice == "rate_limited" and second.session is None


async def test_redis_down_while_opening_a_turn_is_a_store_error_that_says_where(
    tmp_path: Path, history: SqlHistoryStore
) -> None:
    bot_dir = write_bot(tmp_path / "bots")
    dead = client_from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    try:
        stage = OpenTurnStage(
            RedisRateLimiter(dead),
            RedisSessionStore(dead, ttl_seconds=60),
            CachedHistoryStore(history, RedisReadCache(dead), ttl_seconds=60),
        )
        with pytest.raises(StoreError, match=r"cannot reach Redis at redis://127.0.0.1:1/0 while opening a turn"):
            await stage(turn_for(bot_dir, "hello", "m1"))
    finally:
        await dead.aclose()


async def test_on_one_redis_a_turn_saves_its_window_and_tokens_in_one_round_trip(
    tmp_path: Path, client: aioredis.Redis, history: SqlHistoryStore
) -> None:
    bot_dir = write_bot(tmp_path / "bots", history={"max_messages": 3})
    sessions = RedisSessionStore(client, ttl_seconds=60)
    limiter = RedisRateLimiter(client)
    cached = CachedHistoryStore(history, RedisReadCache(client), ttl_seconds=60)
    opening, saving = OpenTurnStage(limiter, sessions, cached), SaveTurnStage(sessions, cached, limiter)
    assert saving.batched

    for n in range(3):
        turn = turn_for(bot_dir, f"question {n}", f"m{n}")
        await opening(turn)
        turn.answer(f"answer {n}")
        turn.tokens_in, turn.tokens_out = 10, 5
        before = round_trips(client)
        await saving(turn)
        if n > 0:  # the first loaded the scripts (Redis had not seen them: EVALSHA, SCRIPT LOAD, EVALSHA)
            assert round_trips(client) - before == 1
        assert turn.seq == 2 * n + 2

    # The window keeps the 3 newest; the durable history all 6; both totals got 3 x 15 tokens.
    assert [m.content for m in await sessions.recent(SESSION, 10)] == ["answer 1", "question 2", "answer 2"]
    assert len(await history.after(SESSION, 0)) == 6
    assert await limiter.tokens_today("support:api:conv-1") == 45
    assert await limiter.tokens_today("bot:support") == 45

    # The session expired mid-turn: the history keeps the exchange, the tokens are counted, and
    # the window's refusal is an error (as the one-by-one stages raised it).
    turn = turn_for(bot_dir, "question 3", "m3")
    await opening(turn)
    turn.answer("answer 3")
    turn.tokens_in = 1
    await client.delete(f"relaybot:session:{SESSION}")
    with pytest.raises(StoreError, match="does not exist or has expired"):
        await saving(turn)
    assert [m.content for m in await history.after(SESSION, 6)] == ["question 3", "answer 3"]
    assert await limiter.tokens_today("support:api:conv-1") == 46
