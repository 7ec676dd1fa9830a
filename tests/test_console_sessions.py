"""Operators' sign-in sessions, the sign-in lockout (memory and real Redis) and the history search."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from core.console.search import HistorySearch, SearchQuery
from core.console.sessions import (
    ConsoleSessions,
    LoginLockout,
    MemoryConsoleSessions,
    MemoryLoginLockout,
    RedisConsoleSessions,
    RedisLoginLockout,
)
from core.redisio import client_from_url
from core.stores.base import StoredMessage
from core.stores.sql import SqlHistoryStore


@pytest.fixture(params=["memory", "redis"])
async def stores(request: pytest.FixtureRequest) -> AsyncIterator[tuple[ConsoleSessions, LoginLockout]]:
    if request.param == "memory":
        yield MemoryConsoleSessions(), MemoryLoginLockout()
        return
    client = client_from_url(request.getfixturevalue("redis_url"))
    yield RedisConsoleSessions(client), RedisLoginLockout(client)
    await client.aclose()


async def test_a_session_is_found_by_its_token_until_it_ends(stores: tuple[ConsoleSessions, LoginLockout]) -> None:
    sessions, _ = stores
    token, session = await sessions.create("ana@example.com", 60)
    other, _ = await sessions.create("ana@example.com", 60)
    found = await sessions.get(token)
    assert found is not None and found.email == "ana@example.com" and found.csrf == session.csrf
    assert session.csrf != token and len(token) >= 40
    assert await sessions.get(token + "x") is None
    await sessions.end(token)
    assert await sessions.get(token) is None
    assert await sessions.get(other) is not None


async def test_the_lockout_starts_at_the_limit_and_a_success_clears_the_account(
    stores: tuple[ConsoleSessions, LoginLockout],
) -> None:
    _, lockout = stores
    limits = {"account:ana@example.com": 3, "ip:10.0.0.1": 5}
    for _ in range(2):
        assert not (await lockout.failed(limits, 900)).locked
    await lockout.succeeded("account:ana@example.com")
    assert not (await lockout.failed(limits, 900)).locked  # counted from zero again (ip: 3 of 5)
    assert not (await lockout.failed(limits, 900)).locked
    state = await lockout.failed(limits, 900)  # account: 3 of 3
    assert state.locked and 890 <= state.retry_after <= 900
    assert (await lockout.check(["account:ana@example.com"])).locked
    assert not (await lockout.check(["account:ben@example.com"])).locked
    assert (await lockout.failed({"account:ben@example.com": 3, "ip:10.0.0.1": 5}, 900)).locked  # ip: 5 of 5
    assert (await lockout.check(["account:carl@example.com", "ip:10.0.0.1"])).locked


async def test_search_finds_conversations_by_text_user_and_channel_within_the_operators_bots(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/relaybot.db"
    history = SqlHistoryStore.from_url(url)
    await history.create_schema()
    for session_id, bot, channel, user, text in [
        ("support:web:a", "support", "web", "web:a", "My invoice is wrong"),
        ("support:sms:b", "support", "sms", "sms:+15550001", "Where is my INVOICE 100%?"),
        ("sales:web:c", "sales", "web", "web:c", "invoice for the quote"),
    ]:
        await history.append(
            session_id=session_id,
            bot=bot,
            channel=channel,
            user_id=user,
            messages=[StoredMessage(role="user", content=text)],
        )
    await history.close()
    search = HistorySearch.from_url(url)
    try:
        hits = await search.search(SearchQuery(text="invoice", bots=["support"]))
        assert {h.session_id for h in hits} == {"support:web:a", "support:sms:b"}
        assert [h.session_id for h in await search.search(SearchQuery(text="invoice", channel="sms"))] == [
            "support:sms:b"
        ]
        assert [h.session_id for h in await search.search(SearchQuery(user="+1555"))] == ["support:sms:b"]
        assert [h.session_id for h in await search.search(SearchQuery(text="100%"))] == ["support:sms:b"]
        assert await search.search(SearchQuery(text="10_%")) == []  # wildcards are literal
        assert await search.search(SearchQuery()) == []
        assert await search.search(SearchQuery(text="invoice", bots=[])) == []
    finally:
        await search.close()
