"""Reads of user facts and session summaries from a cache in front of the durable history.

Every turn reads the user's facts and the session's summary, and a turn of a bare bot read them
from SQL each time: two queries (about a millisecond of CPU) for values that change once every
few turns at most. `CachedHistoryStore` serves them from a `ReadCache` (memory when embedded,
Redis when processes share state) and drops the cached value whenever it writes one.

A reader that loaded an old value from SQL while a writer changed it must not put the old value
back after the writer dropped it: each key has a generation that every invalidation bumps, `get`
returns the generation it saw, and `set` stores only if it is still the same. So a cached value is
never older than the last completed write.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Protocol, TypeVar, runtime_checkable

import redis.asyncio as aioredis

from core.redisio import RedisBatch
from core.stores.base import HistoryStore, Role, StoredMessage, Summary, UserFact

__all__ = ["BatchedReadCache", "CachedHistoryStore", "ReadCache"]

T = TypeVar("T")


class ReadCache(Protocol):
    async def get(self, key: str) -> tuple[str | None, str]:
        """The cached value (None on a miss) and the key's generation, to hand back to `set`."""
        ...

    async def set(self, key: str, value: str, generation: str, ttl_seconds: int) -> None:
        """Store `value` unless the key was invalidated since `get` returned `generation`."""
        ...

    async def invalidate(self, key: str) -> None:
        """Drop the cached value and start a new generation."""
        ...

    async def replace(self, key: str, value: str, ttl_seconds: int) -> None:
        """Start a new generation holding `value`: what a writer just stored (readers that loaded
        the old value before cannot put it back)."""
        ...

    async def get_many(self, keys: Sequence[str]) -> list[tuple[str | None, str]]:
        """`get` of several keys at once (one round trip where the cache is remote)."""
        ...


@runtime_checkable
class BatchedReadCache(ReadCache, Protocol):
    """A cache on Redis whose reads can join a turn's `RedisBatch`."""

    @property
    def redis(self) -> aioredis.Redis: ...

    def queue_get_many(self, batch: RedisBatch, keys: Sequence[str]) -> Callable[[], list[tuple[str | None, str]]]:
        """`get_many` as part of `batch`: the values, once the batch has run."""
        ...


def _facts_json(facts: Sequence[UserFact]) -> str:
    return json.dumps([[f.key, f.value, f.source, f.updated_at.isoformat()] for f in facts])


def _facts_from_json(raw: str) -> tuple[UserFact, ...]:
    return tuple(
        UserFact(key=key, value=value, source=source, updated_at=datetime.fromisoformat(at))
        for key, value, source, at in json.loads(raw)
    )


def _summary_json(summary: Summary | None) -> str:
    if summary is None:
        return "null"  # "no summary yet" is cached too: it is what most sessions have
    return json.dumps([summary.text, summary.through_seq, summary.updated_at.isoformat()])


def _summary_from_json(raw: str) -> Summary | None:
    data = json.loads(raw)
    if data is None:
        return None
    text, through_seq, at = data
    return Summary(text=text, through_seq=through_seq, updated_at=datetime.fromisoformat(at))


class CachedHistoryStore:
    """`HistoryStore` that caches `facts` and `summary`; every other call goes straight through."""

    def __init__(self, history: HistoryStore, cache: ReadCache, *, ttl_seconds: int, decoded_keep: int = 1024) -> None:
        self._history = history
        self._cache = cache
        self._ttl = ttl_seconds
        # Cached values decoded lately, by their JSON: a hit is then a dict lookup, not a parse.
        self._decoded_facts: OrderedDict[str, tuple[UserFact, ...]] = OrderedDict()
        self._decoded_summaries: OrderedDict[str, Summary | None] = OrderedDict()
        self._decoded_keep = decoded_keep

    def _decoded(self, memo: OrderedDict[str, T], raw: str, decode: Callable[[str], T]) -> T:
        if raw in memo:
            return memo[raw]
        value = memo[raw] = decode(raw)
        if len(memo) > self._decoded_keep:
            memo.popitem(last=False)
        return value

    async def _facts_from(self, cached: tuple[str | None, str], bot: str, user_id: str) -> list[UserFact]:
        """The facts a cache read found, or read from the store and put in the cache."""
        raw, generation = cached
        if raw is not None:
            decoded: tuple[UserFact, ...] = self._decoded(self._decoded_facts, raw, _facts_from_json)
            return list(decoded)  # UserFact is frozen; the list is the caller's
        facts = await self._history.facts(bot, user_id)
        await self._cache.set(self._facts_key(bot, user_id), _facts_json(facts), generation, self._ttl)
        return facts

    async def _summary_from(self, cached: tuple[str | None, str], session_id: str) -> Summary | None:
        """The summary a cache read found, or read from the store and put in the cache."""
        raw, generation = cached
        if raw is not None:
            return self._decoded(self._decoded_summaries, raw, _summary_from_json)
        summary = await self._history.summary(session_id)
        await self._cache.set(self._summary_key(session_id), _summary_json(summary), generation, self._ttl)
        return summary

    @staticmethod
    def _facts_key(bot: str, user_id: str) -> str:
        return f"facts:{bot}:{user_id}"

    @staticmethod
    def _summary_key(session_id: str) -> str:
        return f"summary:{session_id}"

    async def facts(self, bot: str, user_id: str) -> list[UserFact]:
        return await self._facts_from(await self._cache.get(self._facts_key(bot, user_id)), bot, user_id)

    async def facts_and_summary(self, bot: str, user_id: str, session_id: str) -> tuple[list[UserFact], Summary | None]:
        """What every turn reads (`facts` and `summary`), in one cache read when both are cached."""
        cached = await self._cache.get_many([self._facts_key(bot, user_id), self._summary_key(session_id)])
        return await self._memory_from(cached, bot, user_id, session_id)

    def queue_facts_and_summary(
        self, batch: RedisBatch, bot: str, user_id: str, session_id: str
    ) -> Callable[[], Awaitable[tuple[list[UserFact], Summary | None]]] | None:
        """`facts_and_summary` with its cache read in `batch` (what is not cached is read from the
        store afterwards); None if the cache is not on Redis."""
        if not isinstance(self._cache, BatchedReadCache):
            return None
        found = self._cache.queue_get_many(batch, [self._facts_key(bot, user_id), self._summary_key(session_id)])
        return lambda: self._memory_from(found(), bot, user_id, session_id)

    @property
    def redis(self) -> aioredis.Redis | None:
        """The Redis its cache reads from, if any (what `queue_facts_and_summary` batches with)."""
        return self._cache.redis if isinstance(self._cache, BatchedReadCache) else None

    async def _memory_from(
        self, cached: list[tuple[str | None, str]], bot: str, user_id: str, session_id: str
    ) -> tuple[list[UserFact], Summary | None]:
        cached_facts, cached_summary = cached
        return await self._facts_from(cached_facts, bot, user_id), await self._summary_from(cached_summary, session_id)

    async def remember(self, *, bot: str, user_id: str, facts: Sequence[UserFact]) -> None:
        try:
            await self._history.remember(bot=bot, user_id=user_id, facts=facts)
        finally:
            # Also after a failure: the write may have landed before the error reached us.
            await self._cache.invalidate(self._facts_key(bot, user_id))

    async def forget(self, bot: str, user_id: str, keys: Sequence[str] | None = None) -> int:
        try:
            return await self._history.forget(bot, user_id, keys)
        finally:
            await self._cache.invalidate(self._facts_key(bot, user_id))

    async def summary(self, session_id: str) -> Summary | None:
        return await self._summary_from(await self._cache.get(self._summary_key(session_id)), session_id)

    async def save_summary(self, session_id: str, summary: Summary) -> bool:
        key = self._summary_key(session_id)
        try:
            stored = await self._history.save_summary(session_id, summary)
        except BaseException:
            await self._cache.invalidate(key)  # the write may have landed before the error reached us
            raise
        if stored:
            # Written through: the next turn reads the summary it is about to use from the cache,
            # not from the database. Summaries of a session are written by the turn holding its
            # conversation, one at a time, so no other writer's newer value can be overwritten here.
            await self._cache.replace(key, _summary_json(summary), self._ttl)
        else:
            await self._cache.invalidate(key)  # the store holds a newer one: read it when needed
        return stored

    async def append(
        self,
        *,
        session_id: str,
        bot: str,
        channel: str,
        user_id: str,
        messages: Sequence[StoredMessage],
        turn_key: str | None = None,
    ) -> list[StoredMessage]:
        return await self._history.append(
            session_id=session_id, bot=bot, channel=channel, user_id=user_id, messages=messages, turn_key=turn_key
        )

    async def recent(self, session_id: str, limit: int) -> list[StoredMessage]:
        return await self._history.recent(session_id, limit)

    async def after(
        self, session_id: str, seq: int, *, role: Role | None = None, last: int | None = None
    ) -> list[StoredMessage]:
        return await self._history.after(session_id, seq, role=role, last=last)

    async def ping(self) -> None:
        await self._history.ping()

    async def close(self) -> None:
        await self._history.close()
