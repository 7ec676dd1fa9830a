"""One contract per store seam, run against every backend, plus what only one backend can show.

Redis and PostgreSQL are real servers (see conftest); SQLite is a file under tmp_path.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from sqlalchemy import event
from sqlalchemy.ext.asyncio import create_async_engine

from core.errors import ConfigError, StoreError
from core.stores.base import HistoryStore, Session, SessionStore, StoredMessage, Summary, UserFact
from core.stores.memory import MemoryHistoryStore, MemorySessionStore
from core.stores.redis import RedisSessionStore
from core.stores.sql import Base, SqlHistoryStore
from tests.support.servers import PostgresServer, free_port, start_redis

CEST = timezone(timedelta(hours=2))


def make_session(session_id: str = "s1", **fields: str) -> Session:
    return Session(
        session_id=session_id,
        bot="support",
        channel="slack",
        conversation_id="C1:1700000000.000100",
        user_id="slack:U1",
        created_at=datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC),
        fields=dict(fields),
    )


def make_messages(n: int, *, start: int = 1) -> list[StoredMessage]:
    """Alternating user/assistant messages with refs, meta and distinct timestamps."""
    base = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    return [
        StoredMessage(
            role="user" if i % 2 else "assistant",
            content=f"message {i} — ünïcode ✓",
            created_at=base + timedelta(seconds=i, microseconds=i),
            ref=f"ref-{i}" if i % 2 else None,
            meta={"kind": "notice"} if i % 3 == 0 else {"i": str(i)},
        )
        for i in range(start, start + n)
    ]


def without_seq(messages: list[StoredMessage]) -> list[StoredMessage]:
    return [replace(m, seq=None) for m in messages]


def assert_utc(messages: list[StoredMessage]) -> None:
    for m in messages:
        assert m.created_at.utcoffset() == timedelta(0), m


# --------------------------------------------------------------------------------------------------
# SessionStore


@dataclass
class FakeClock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class SessionBackend:
    """Builds stores of one backend and lets time pass for it: a fake clock, or real time for Redis."""

    name: str
    make: Callable[[int], SessionStore]
    elapse: Callable[[float], Awaitable[None]]
    opened: list[SessionStore] = field(default_factory=list)

    def store(self, ttl_seconds: int = 60) -> SessionStore:
        store = self.make(ttl_seconds)
        self.opened.append(store)
        return store


@pytest.fixture(params=["memory", "redis"])
async def sessions(request: pytest.FixtureRequest) -> AsyncIterator[SessionBackend]:
    if request.param == "memory":
        clock = FakeClock()

        async def advance(seconds: float) -> None:
            clock.now += seconds

        backend = SessionBackend("memory", lambda ttl: MemorySessionStore(ttl, clock=clock), advance)
    else:
        url: str = request.getfixturevalue("redis_url")
        backend = SessionBackend("redis", lambda ttl: RedisSessionStore.from_url(url, ttl_seconds=ttl), asyncio.sleep)
    yield backend
    for store in backend.opened:
        await store.close()


@pytest.fixture
def session_store(sessions: SessionBackend) -> SessionStore:
    return sessions.store()


async def test_create_then_load_round_trips_identity_and_fields(session_store: SessionStore) -> None:
    # A custom field may share a name with an identity field without clobbering it.
    session = make_session(step="ask-email", bot="not-the-bot", note="ünïcode ✓")
    session.created_at = datetime(2025, 3, 1, 14, 0, tzinfo=CEST)
    await session_store.create(session)

    loaded = await session_store.load("s1")

    assert loaded == session
    assert loaded is not None and loaded.created_at.tzinfo is not None


async def test_unknown_session_is_absent(session_store: SessionStore) -> None:
    assert await session_store.load("nope") is None
    assert await session_store.recent("nope", 10) == []
    await session_store.delete("nope")


async def test_append_then_recent_returns_the_tail_oldest_first(session_store: SessionStore) -> None:
    await session_store.create(make_session())
    messages = make_messages(5)
    await session_store.append("s1", messages[:3])
    await session_store.append("s1", messages[3:])

    everything = await session_store.recent("s1", 100)
    tail = await session_store.recent("s1", 2)

    assert everything == messages  # roles, content, ref, meta, timestamps all preserved
    assert [m.ref for m in everything] == ["ref-1", None, "ref-3", None, "ref-5"]
    assert everything[2].is_notice
    assert tail == messages[3:]
    assert all(m.created_at.tzinfo is not None for m in everything)
    assert await session_store.recent("s1", 0) == []


async def test_append_with_keep_trims_the_list_to_the_newest(session_store: SessionStore) -> None:
    await session_store.create(make_session())
    messages = make_messages(7)
    await session_store.append("s1", messages[:3], keep=4)
    await session_store.append("s1", messages[3:], keep=4)
    assert [m.content for m in await session_store.recent("s1", 10)] == [m.content for m in messages[3:]]


async def test_load_with_recent_reads_the_session_and_its_tail_together(session_store: SessionStore) -> None:
    assert await session_store.load_with_recent("s1", 5) == (None, [])
    await session_store.create(make_session(topic="billing"))
    messages = make_messages(4)
    await session_store.append("s1", messages)
    session, recent = await session_store.load_with_recent("s1", 3)
    assert session is not None and session.fields == {"topic": "billing"}
    assert [m.content for m in recent] == [m.content for m in messages[1:]]
    assert (await session_store.load_with_recent("s1", 0))[1] == []


async def test_append_never_rewrites_earlier_messages(session_store: SessionStore) -> None:
    await session_store.create(make_session())
    first, second = make_messages(2)
    await session_store.append("s1", [first])
    before = await session_store.recent("s1", 10)

    await session_store.append("s1", [second])

    after = await session_store.recent("s1", 10)
    assert after[:1] == before == [first]
    assert after == [first, second]


async def test_set_fields_merges(session_store: SessionStore) -> None:
    await session_store.create(make_session(a="1", b="2"))

    await session_store.set_fields("s1", {"b": "3", "c": "4", "bot": "custom"})

    loaded = await session_store.load("s1")
    assert loaded is not None
    assert loaded.fields == {"a": "1", "b": "3", "c": "4", "bot": "custom"}
    assert loaded.bot == "support"


async def test_swap_fields_writes_only_over_the_expected_values(session_store: SessionStore) -> None:
    await session_store.create(make_session(state="waiting"))

    assert await session_store.swap_fields("s1", {"state": ["", "waiting"], "owner": [""]}, {"state": "held"}) == (
        "swapped"
    )
    assert await session_store.swap_fields("s1", {"state": ["waiting"]}, {"state": "stolen"}) == "mismatch"
    assert await session_store.swap_fields("nope", {}, {"state": "held"}) == "missing"

    loaded = await session_store.load("s1")
    assert loaded is not None and loaded.fields == {"state": "held"}
    assert await session_store.load("nope") is None


async def test_writes_to_an_absent_session_fail_loudly_and_do_not_resurrect_it(
    session_store: SessionStore,
) -> None:
    with pytest.raises(StoreError, match="create it first"):
        await session_store.append("ghost", make_messages(1))
    with pytest.raises(StoreError, match="create it first"):
        await session_store.set_fields("ghost", {"a": "1"})

    assert await session_store.load("ghost") is None
    assert await session_store.recent("ghost", 10) == []


async def test_delete_and_recreate_start_empty(session_store: SessionStore) -> None:
    await session_store.create(make_session(a="1"))
    await session_store.append("s1", make_messages(2))

    await session_store.create(make_session(b="2"))  # a new conversation under the same id
    recreated = await session_store.load("s1")
    assert recreated is not None and recreated.fields == {"b": "2"}
    assert await session_store.recent("s1", 10) == []

    await session_store.append("s1", make_messages(1))
    await session_store.delete("s1")
    assert await session_store.load("s1") is None
    assert await session_store.recent("s1", 10) == []


async def test_every_access_extends_the_ttl_and_idle_sessions_expire(sessions: SessionBackend) -> None:
    store = sessions.store(ttl_seconds=1)
    names = ["loaded", "appended", "read", "fielded", "idle"]
    for name in names:
        await store.create(make_session(name))
        await store.append(name, make_messages(1))

    await sessions.elapse(0.6)
    assert await store.load("loaded") is not None
    await store.append("appended", make_messages(1, start=2))
    assert len(await store.recent("read", 10)) == 1
    await store.set_fields("fielded", {"x": "1"})
    await sessions.elapse(0.6)  # 1.2 s after creation: past the TTL unless extended at 0.6 s

    for name in names[:-1]:
        assert await store.recent(name, 10), name  # the messages live as long as the session
        assert await store.load(name) is not None, name
    assert await store.load("idle") is None
    assert await store.recent("idle", 10) == []


# Redis only: the key layout, TTLs on both keys, and what survives a restart.


async def test_redis_layout_and_ttl_refresh_on_both_keys(redis_url: str) -> None:
    store = RedisSessionStore.from_url(redis_url, ttl_seconds=60)
    raw = aioredis.Redis.from_url(redis_url, decode_responses=True)
    hkey, lkey = "relaybot:session:s1", "relaybot:session:s1:messages"
    try:
        await store.create(make_session(topic="billing"))
        first = make_messages(2)
        await store.append("s1", first)

        assert await raw.type(hkey) == "hash" and await raw.type(lkey) == "list"
        assert await raw.hgetall(hkey) == {
            "bot": "support",
            "channel": "slack",
            "conversation_id": "C1:1700000000.000100",
            "user_id": "slack:U1",
            "created_at": "2025-03-01T12:00:00.123456+00:00",
            "f:topic": "billing",
        }
        items_before = await raw.lrange(lkey, 0, -1)
        assert [json.loads(item) for item in items_before] == [m.to_dict() for m in first]

        accesses: dict[str, Callable[[], Awaitable[Any]]] = {
            "load": lambda: store.load("s1"),
            "append": lambda: store.append("s1", make_messages(1, start=3)),
            "recent": lambda: store.recent("s1", 1),
            "set_fields": lambda: store.set_fields("s1", {"step": "2"}),
        }
        for name, access in accesses.items():
            await raw.pexpire(hkey, 5000)
            await raw.pexpire(lkey, 5000)
            await access()
            assert await raw.pttl(hkey) > 55_000, name
            assert await raw.pttl(lkey) > 55_000, name

        # Appending pushed one item and left the earlier ones byte for byte as they were.
        items_after = await raw.lrange(lkey, 0, -1)
        assert items_after[:2] == items_before and len(items_after) == 3
    finally:
        await raw.aclose()
        await store.close()


async def test_redis_store_works_on_a_client_that_decodes_responses(redis_url: str) -> None:
    # The client is passed in, so its decode_responses setting is the caller's choice.
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    store = RedisSessionStore(client)
    try:
        await store.create(make_session(step="1"))
        await store.append("s1", make_messages(2))
        assert await store.load("s1") == make_session(step="1")
        assert await store.recent("s1", 10) == make_messages(2)
        await store.close()
        assert await client.ping()  # a client passed in stays its owner's to close
    finally:
        await client.aclose()


async def test_redis_conversation_survives_a_new_client(redis_url: str) -> None:
    writer = RedisSessionStore.from_url(redis_url)
    await writer.create(make_session(step="1"))
    await writer.append("s1", make_messages(3))
    await writer.close()

    reader = RedisSessionStore.from_url(redis_url)
    try:
        assert await reader.load("s1") == make_session(step="1")
        assert await reader.recent("s1", 10) == make_messages(3)
    finally:
        await reader.close()


async def test_redis_conversation_survives_a_server_restart(tmp_path: Path) -> None:
    server = start_redis(tmp_path, appendonly=True)
    try:
        store = RedisSessionStore.from_url(server.url)
        await store.create(make_session())
        await store.append("s1", make_messages(2))
        await store.close()

        server.restart()

        store = RedisSessionStore.from_url(server.url)
        try:
            assert await store.load("s1") == make_session()
            assert await store.recent("s1", 10) == make_messages(2)
        finally:
            await store.close()
    finally:
        server.stop()


async def test_unreachable_redis_raises_store_error_that_says_what_to_check() -> None:
    port = free_port()
    # No retries: the point is the error, not redis-py's backoff.
    store = RedisSessionStore.from_url(f"redis://:hunter2@127.0.0.1:{port}/0", retry=Retry(NoBackoff(), 0))
    try:
        with pytest.raises(StoreError) as ping_error:
            await store.ping()
        with pytest.raises(StoreError):
            await store.load("s1")
    finally:
        await store.close()

    message = str(ping_error.value)
    assert f"127.0.0.1:{port}" in message and "REDIS_URL" in message and "redis-server" in message
    assert "hunter2" not in message
    assert isinstance(ping_error.value.__cause__, ConnectionError | OSError | aioredis.ConnectionError)


# --------------------------------------------------------------------------------------------------
# HistoryStore

HISTORY_BACKENDS = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=HISTORY_BACKENDS)
async def history(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[HistoryStore]:
    store = MemoryHistoryStore() if request.param == "memory" else await empty_sql_history(request, tmp_path)
    yield store
    await store.close()


async def empty_sql_history(request: pytest.FixtureRequest, tmp_path: Path) -> SqlHistoryStore:
    """An empty SQL history on the database `request.param` names ("sqlite" or "postgres")."""
    if request.param == "sqlite":
        store = SqlHistoryStore.from_url(f"sqlite+aiosqlite:///{tmp_path}/data/history.db")
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        engine = create_async_engine(server.url)
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.drop_all)
        store = SqlHistoryStore(engine)
    await store.create_schema()
    return store


async def append(store: HistoryStore, session_id: str, messages: list[StoredMessage]) -> list[StoredMessage]:
    return await store.append(
        session_id=session_id, bot="support", channel="slack", user_id="slack:U1", messages=messages
    )


async def test_history_numbers_each_session_from_one(history: HistoryStore) -> None:
    first = await append(history, "s1", make_messages(2))
    other = await append(history, "s2", make_messages(1))
    second = await append(history, "s1", make_messages(2, start=3))

    assert [m.seq for m in first + second] == [1, 2, 3, 4]
    assert [m.seq for m in other] == [1]
    assert without_seq(first + second) == make_messages(4)

    stored = await history.recent("s1", 10)
    assert stored == first + second  # content, role, ref, meta, seq and instant all preserved
    assert_utc(stored)
    assert await history.recent("s2", 10) == other


async def test_history_recent_is_the_tail_oldest_first(history: HistoryStore) -> None:
    for i in range(1, 6):
        await append(history, "s1", make_messages(1, start=i))

    tail = await history.recent("s1", 3)

    assert [m.seq for m in tail] == [3, 4, 5]
    assert without_seq(tail) == make_messages(3, start=3)
    assert await history.recent("s1", 0) == []
    assert await history.recent("nope", 10) == []


async def test_history_after_filters_by_seq_and_role(history: HistoryStore) -> None:
    await append(history, "s1", make_messages(6))  # odd seq: user, even seq: assistant

    assert [m.seq for m in await history.after("s1", 2)] == [3, 4, 5, 6]
    assistant = await history.after("s1", 2, role="assistant")
    assert [(m.seq, m.role) for m in assistant] == [(4, "assistant"), (6, "assistant")]
    assert [m.seq for m in await history.after("s1", 0, role="user")] == [1, 3, 5]
    assert await history.after("s1", 6) == []
    assert await history.after("nope", 0) == []


async def test_history_after_with_last_reads_only_the_newest(history: HistoryStore) -> None:
    await append(history, "s1", make_messages(10))
    newest = await history.after("s1", 2, role="user", last=2)
    assert [m.seq for m in newest] == [7, 9]  # odd seqs are the user's; the two newest, oldest first
    assert [m.seq for m in await history.after("s1", 8, last=5)] == [9, 10]
    assert [m.seq for m in await history.after("s1", 0, role="assistant")] == [2, 4, 6, 8, 10]


async def test_history_append_with_a_turn_key_stores_once(history: HistoryStore) -> None:
    first = await history.append(
        session_id="s1", bot="b", channel="api", user_id="u", messages=make_messages(2), turn_key="t1"
    )
    again = await history.append(
        session_id="s1", bot="b", channel="api", user_id="u", messages=make_messages(2, start=7), turn_key="t1"
    )
    assert [(m.seq, m.content) for m in again] == [(m.seq, m.content) for m in first]
    nxt = await history.append(
        session_id="s1", bot="b", channel="api", user_id="u", messages=make_messages(1, start=3), turn_key="t2"
    )
    assert [m.seq for m in nxt] == [3]
    assert [m.seq for m in await history.recent("s1", 10)] == [1, 2, 3]


async def test_history_append_never_rewrites(history: HistoryStore) -> None:
    await append(history, "s1", make_messages(2))
    before = await history.recent("s1", 10)

    await append(history, "s1", make_messages(1, start=3))
    assert await append(history, "s1", []) == []

    after = await history.recent("s1", 10)
    assert after[:2] == before
    assert [m.seq for m in after] == [1, 2, 3]


async def test_history_stores_instants_as_utc(history: HistoryStore) -> None:
    local = StoredMessage(role="user", content="hi", created_at=datetime(2025, 6, 1, 9, 30, tzinfo=CEST))

    [saved] = await append(history, "s1", [local])
    [stored] = await history.recent("s1", 1)

    assert stored.created_at == local.created_at == datetime(2025, 6, 1, 7, 30, tzinfo=UTC)
    assert_utc([saved, stored])


async def test_history_concurrent_appends_get_distinct_seqs(history: HistoryStore) -> None:
    # The conversation lock normally serializes these; the store must still not lose or reuse a seq.
    # Five writers is the most the SQL store's five tries are guaranteed to absorb.
    results = await asyncio.gather(*(append(history, "s1", make_messages(1, start=i)) for i in range(1, 6)))

    assert sorted(m.seq for [m] in results if m.seq is not None) == [1, 2, 3, 4, 5]
    stored = await history.recent("s1", 20)
    assert [m.seq for m in stored] == [1, 2, 3, 4, 5]
    assert sorted(m.content for m in stored) == sorted(m.content for m in make_messages(5))


async def test_sqlite_appends_waiting_for_the_writer_share_one_commit(tmp_path: Path) -> None:
    store = SqlHistoryStore.from_url(f"sqlite:///{tmp_path}/group.db")
    await store.create_schema()
    commits: list[int] = []
    event.listen(store.sync_engine, "commit", lambda _conn: commits.append(1))
    try:
        # 40 turns of 8 conversations finishing at once, as a busy worker's do.
        results = await asyncio.gather(
            *(append(store, f"s{i % 8}", make_messages(2, start=2 * i + 1)) for i in range(40))
        )
        assert len(commits) < 10, len(commits)
        for n in range(8):
            stored = await store.recent(f"s{n}", 100)
            assert [m.seq for m in stored] == list(range(1, 11))
        # Every caller got the seqs its own messages were stored under.
        for i, saved in enumerate(results):
            assert [m.content for m in saved] == [m.content for m in make_messages(2, start=2 * i + 1)]
            stored = {m.seq: m.content for m in await store.recent(f"s{i % 8}", 100)}
            assert [stored[m.seq] for m in saved if m.seq is not None] == [m.content for m in saved]
    finally:
        await store.close()


def city(value: str, at: datetime) -> UserFact:
    return UserFact(key="city", value=value, source="m", updated_at=at)


@pytest.fixture(params=HISTORY_BACKENDS[1:])
async def sql_history(request: pytest.FixtureRequest, tmp_path: Path) -> SqlHistoryStore:
    """An empty SQL history on either database (closed by the test)."""
    return await empty_sql_history(request, tmp_path)


async def test_summary_and_fact_writes_waiting_for_the_writer_share_commits(sql_history: SqlHistoryStore) -> None:
    store = sql_history
    commits: list[int] = []
    event.listen(store.sync_engine, "commit", lambda _conn: commits.append(1))
    now = datetime.now(UTC)
    try:
        # The upserts after 20 turns that finish at once, each in a write of its own.
        saved = await asyncio.gather(
            *(
                store.save_summary(f"s{i}", Summary(text=f"summary {i}", through_seq=2 * i, updated_at=now))
                for i in range(20)
            ),
            *(
                store.remember(
                    bot="support",
                    user_id=f"u{i}",
                    facts=[UserFact(key="city", value=f"City {i}", source="m", updated_at=now)],
                )
                for i in range(20)
            ),
        )
        assert 0 < len(commits) < 10, len(commits)
        assert saved[:20] == [True] * 20
        for i in range(20):
            assert (await store.summary(f"s{i}")) == Summary(text=f"summary {i}", through_seq=2 * i, updated_at=now)
            assert [(f.key, f.value) for f in await store.facts("support", f"u{i}")] == [("city", f"City {i}")]
    finally:
        await store.close()


async def test_a_sql_write_that_fails_among_others_fails_alone(sql_history: SqlHistoryStore) -> None:
    store = sql_history
    now = datetime.now(UTC)
    try:
        before, broken, after = await asyncio.gather(
            store.save_summary("s1", Summary(text="kept", through_seq=2, updated_at=now)),
            # A summary without text breaks a NOT NULL column: its own error, nobody else's.
            store.save_summary("s2", Summary(text=None, through_seq=2, updated_at=now)),  # type: ignore[arg-type]
            store.remember(
                bot="support", user_id="u1", facts=[UserFact(key="city", value="Lyon", source="m", updated_at=now)]
            ),
            return_exceptions=True,
        )
        assert before is True and after is None
        assert isinstance(broken, StoreError) and "summary" in str(broken)
        assert (await store.summary("s1")) is not None and (await store.summary("s2")) is None
        assert [f.value for f in await store.facts("support", "u1")] == ["Lyon"]
    finally:
        await store.close()


async def test_two_writers_of_one_conversation_never_reuse_a_seq(tmp_path: Path) -> None:
    # Each store remembers the last seq it wrote; the other's appends in between must not be overwritten.
    url = f"sqlite:///{tmp_path}/shared.db"
    first, second = SqlHistoryStore.from_url(url), SqlHistoryStore.from_url(url)
    await first.create_schema()
    try:
        assert [m.seq for m in await append(first, "s1", make_messages(2))] == [1, 2]
        assert [m.seq for m in await append(second, "s1", make_messages(2, start=3))] == [3, 4]
        assert [m.seq for m in await append(first, "s1", make_messages(2, start=5))] == [5, 6]
        assert [m.seq for m in await append(second, "s1", make_messages(1, start=7))] == [7]
        stored = await first.recent("s1", 10)
        assert [m.seq for m in stored] == list(range(1, 8))
        assert [m.content for m in stored] == [m.content for m in make_messages(7)]
    finally:
        await first.close()
        await second.close()


async def test_sqlite_a_bad_append_in_a_group_fails_alone(tmp_path: Path) -> None:
    store = SqlHistoryStore.from_url(f"sqlite:///{tmp_path}/group.db")
    await store.create_schema()
    try:
        bad = replace(make_messages(1)[0], content=None)  # type: ignore[arg-type]  # violates NOT NULL
        results = await asyncio.gather(
            append(store, "a", make_messages(2)),
            append(store, "b", [bad]),
            append(store, "c", make_messages(2)),
            return_exceptions=True,
        )
        assert isinstance(results[1], StoreError)
        assert [m.seq for m in await store.recent("a", 10)] == [1, 2]
        assert [m.seq for m in await store.recent("c", 10)] == [1, 2]
        assert await store.recent("b", 10) == []
    finally:
        await store.close()


# User facts and session summaries (memory) live beside the transcript, on every history backend.

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def fact(key: str, value: str, *, minutes: int = 0, source: str = "") -> UserFact:
    return UserFact(
        key=key, value=value, source=source or f"my {key} is {value}", updated_at=T0 + timedelta(minutes=minutes)
    )


async def test_facts_round_trip_per_bot_and_user_sorted_by_key(history: HistoryStore) -> None:
    local = datetime(2025, 3, 1, 14, 0, tzinfo=CEST)
    await history.remember(
        bot="support",
        user_id="slack:U1",
        facts=[
            fact("plan", "Pro"),
            UserFact(key="name", value="Alice Ünïcode", source="My name is Alice Ünïcode", updated_at=local),
        ],
    )
    await history.remember(bot="support", user_id="slack:U2", facts=[fact("name", "Bob")])
    await history.remember(bot="sales", user_id="slack:U1", facts=[fact("name", "Not Alice")])

    stored = await history.facts("support", "slack:U1")

    assert [(f.key, f.value, f.source) for f in stored] == [
        ("name", "Alice Ünïcode", "My name is Alice Ünïcode"),
        ("plan", "Pro", "my plan is Pro"),
    ]
    assert stored[0].updated_at == datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    assert all(f.updated_at.utcoffset() == timedelta(0) for f in stored)
    assert [f.value for f in await history.facts("support", "slack:U2")] == ["Bob"]
    assert await history.facts("support", "slack:U9") == []


async def test_a_later_fact_replaces_an_earlier_one_and_never_the_reverse(history: HistoryStore) -> None:
    await history.remember(bot="support", user_id="u", facts=[fact("plan", "Basic", minutes=1)])
    await history.remember(bot="support", user_id="u", facts=[fact("plan", "Pro", minutes=5)])
    # A late extraction of an older message (a retry, a slow worker) must not undo the correction.
    await history.remember(bot="support", user_id="u", facts=[fact("plan", "Basic", minutes=3)])
    # Within one batch the newest statement of a key wins too.
    await history.remember(
        bot="support", user_id="u", facts=[fact("location", "Tokyo", minutes=8), fact("location", "Osaka", minutes=7)]
    )

    stored = {f.key: f for f in await history.facts("support", "u")}

    assert stored["plan"].value == "Pro" and stored["plan"].source == "my plan is Pro"
    assert stored["plan"].updated_at == T0 + timedelta(minutes=5)
    assert stored["location"].value == "Tokyo"


async def test_forget_one_key_or_everything_of_one_user(history: HistoryStore) -> None:
    for user in ("u", "other"):
        await history.remember(bot="support", user_id=user, facts=[fact("name", "A"), fact("email", "a@example.com")])

    assert await history.forget("support", "u", ["email", "phone"]) == 1
    assert [f.key for f in await history.facts("support", "u")] == ["name"]
    assert await history.forget("support", "u", []) == 0
    assert await history.forget("support", "u") == 1
    assert await history.facts("support", "u") == []
    assert await history.forget("support", "u") == 0
    assert [f.key for f in await history.facts("support", "other")] == ["email", "name"]


async def test_summary_is_kept_per_session_and_only_moves_forward(history: HistoryStore) -> None:
    assert await history.summary("s1") is None

    assert await history.save_summary("s1", Summary(text="first ✓", through_seq=10, updated_at=T0)) is True
    assert await history.save_summary("s1", Summary(text="further", through_seq=14, updated_at=T0)) is True
    # Two workers folding at once: the one that covers less loses, whichever finishes last.
    assert await history.save_summary("s1", Summary(text="stale", through_seq=12, updated_at=T0)) is False
    assert await history.save_summary("s1", Summary(text="same", through_seq=14, updated_at=T0)) is False
    await history.save_summary("s2", Summary(text="other session", through_seq=2, updated_at=T0))

    stored = await history.summary("s1")
    assert stored is not None
    assert (stored.text, stored.through_seq, stored.updated_at) == ("further", 14, T0)
    other = await history.summary("s2")
    assert other is not None and other.text == "other session"


# SQL only: reopening, the query plan, URLs, and errors.


async def test_sqlite_history_survives_reopening_the_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/relaybot.db"  # plain scheme: the standard library driver
    store = SqlHistoryStore.from_url(url)
    await store.create_schema()
    saved = await append(store, "s1", make_messages(2))
    await store.close()

    store = SqlHistoryStore.from_url(url)
    try:
        await store.create_schema()  # idempotent on an existing database
        assert await store.recent("s1", 10) == saved
        assert [m.seq for m in await append(store, "s1", make_messages(1, start=3))] == [3]
    finally:
        await store.close()

    with sqlite3.connect(tmp_path / "relaybot.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    db.close()


async def test_processes_creating_the_schema_at_once_all_start(tmp_path: Path) -> None:
    # An adapter and workers started together on an empty SQLite file: every CREATE TABLE races
    # (four engines at once here failed every time before create_schema retried).
    stores = [SqlHistoryStore.from_url(f"sqlite:///{tmp_path}/race.db") for _ in range(4)]
    try:
        await asyncio.gather(*(store.create_schema() for store in stores))
        assert [m.seq for m in await append(stores[0], "s1", make_messages(2))] == [1, 2]
    finally:
        for store in stores:
            await store.close()


async def test_sqlite_reads_walk_the_session_seq_index(tmp_path: Path) -> None:
    # Cost must stay flat as a conversation grows: check SQLite's plan for the statements the store runs.
    store = SqlHistoryStore.from_url(f"sqlite:///{tmp_path}/plan.db")
    engine = store.sync_engine
    statements: list[tuple[str, Any]] = []

    @event.listens_for(engine, "before_cursor_execute")
    def record(_conn: Any, _cursor: Any, statement: str, params: Any, _context: Any, _many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append((statement, params))

    try:
        await store.create_schema()
        await append(store, "s1", make_messages(3))
        await store.recent("s1", 2)
        await store.after("s1", 1, role="user")
        # A write that found the file locked by the WAL checkpoint's thread runs again there: its
        # lookup is the same statement, planned once.
        queries = list({(sql, repr(params)): (sql, params) for sql, params in statements}.values())
        with engine.connect() as conn:
            plans = [
                " / ".join(str(row[-1]) for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params))
                for sql, params in queries
            ]
    finally:
        await store.close()

    assert len(plans) == 3, queries  # seq lookup in append, recent, after
    for plan in plans:
        # SQLite names the UNIQUE(session_id, seq) constraint's index sqlite_autoindex_messages_N.
        assert "INDEX sqlite_autoindex_messages" in plan and "(session_id=?" in plan, plan
        assert "TEMP B-TREE" not in plan, plan  # ordered by the index, not sorted afterwards


async def test_sqlite_appends_store_what_sqlalchemy_stores(tmp_path: Path) -> None:
    # Appends go to the driver as plain rows (core.stores.sql_schema.BulkInsert): every column must
    # hold exactly what SQLAlchemy's own insert of the same message writes, so files written before
    # and after read the same, and reads (which go through SQLAlchemy) get back what was appended.
    store = SqlHistoryStore.from_url(f"sqlite:///{tmp_path}/formats.db")
    message = StoredMessage(
        role="assistant",
        content="Prix : 12 € — “quoted”\nsecond line",
        created_at=datetime(2025, 3, 1, 14, 0, 5, 123456, tzinfo=CEST),
        ref="ref-1",
        meta={"kind": "notice", "note": "ünïcode ✓"},
    )
    try:
        await store.create_schema()
        [saved] = await append(store, "plain", [message])
        with store.sync_engine.begin() as conn:
            conn.execute(
                Base.metadata.tables["messages"].insert(),
                {
                    "session_id": "orm",
                    "seq": 1,
                    "bot": "support",
                    "channel": "slack",
                    "user_id": "slack:U1",
                    "role": message.role,
                    "content": message.content,
                    "ref": message.ref,
                    "meta": dict(message.meta),
                    "created_at": message.created_at.astimezone(UTC),
                },
            )
        [read_back] = await store.recent("plain", 1)
    finally:
        await store.close()

    with sqlite3.connect(tmp_path / "formats.db") as db:
        rows = {
            row[0]: row[1:]
            for row in db.execute(
                "SELECT session_id, seq, bot, channel, user_id, role, content, ref, meta, created_at,"
                " typeof(meta), typeof(created_at) FROM messages"
            )
        }
    assert rows["plain"] == rows["orm"]
    assert rows["plain"][-4:] == (
        json.dumps({"kind": "notice", "note": "ünïcode ✓"}),
        "2025-03-01 12:00:05.123456",
        "text",
        "text",
    )
    assert read_back == saved
    assert read_back.created_at == message.created_at and read_back.meta == message.meta


@pytest.mark.postgres
async def test_postgres_plain_url_is_rewritten_to_asyncpg(postgres_server: PostgresServer) -> None:
    # As hosting providers hand them out: libpq scheme and libpq's sslmode parameter.
    plain = postgres_server.url.replace("postgresql+asyncpg://", "postgres://") + "?sslmode=disable"
    store = SqlHistoryStore.from_url(plain)
    try:
        await store.ping()
    finally:
        await store.close()


@pytest.mark.postgres
async def test_postgres_connections_the_server_dropped_are_replaced_without_an_error(
    postgres_server: PostgresServer,
) -> None:
    # No ping before each use (three round trips per turn with asyncpg): a dead pooled connection
    # fails its first statement, and the work runs once more on a fresh one.
    store = SqlHistoryStore.from_url(postgres_server.url)
    admin = await asyncpg.connect(postgres_server.url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await store.create_schema()
        await append(store, "dropped", make_messages(2))
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            postgres_server.database,
        )
        assert killed >= 1  # the store's pooled connection is gone
        assert [m.seq for m in await store.recent("dropped", 10)] == [1, 2]
        await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            postgres_server.database,
        )
        assert [m.seq for m in await append(store, "dropped", make_messages(2, start=3))] == [3, 4]
    finally:
        await admin.close()
        await store.close()


async def test_unsupported_database_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        SqlHistoryStore.from_url("mysql://root@127.0.0.1/relaybot")


async def test_unreachable_postgres_raises_store_error_that_says_what_to_check() -> None:
    port = free_port()
    store = SqlHistoryStore.from_url(f"postgresql://relaybot:hunter2@127.0.0.1:{port}/relaybot")
    try:
        with pytest.raises(StoreError) as ping_error:
            await store.ping()
        with pytest.raises(StoreError):
            await store.recent("s1", 10)
    finally:
        await store.close()

    message = str(ping_error.value)
    assert f"127.0.0.1:{port}" in message and "DATABASE_URL" in message
    assert "hunter2" not in message
    assert ping_error.value.__cause__ is not None


async def test_sqlite_without_schema_or_folder_raises_store_error(tmp_path: Path) -> None:
    store = SqlHistoryStore.from_url(f"sqlite+aiosqlite:///{tmp_path}/empty.db")
    try:
        with pytest.raises(StoreError, match="create_schema"):
            await store.recent("s1", 10)
    finally:
        await store.close()

    (tmp_path / "a-file").write_text("")
    with pytest.raises(StoreError, match="DATABASE_URL"):
        SqlHistoryStore.from_url(f"sqlite+aiosqlite:///{tmp_path}/a-file/history.db")
