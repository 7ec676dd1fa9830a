"""The reads that open every turn, in one Redis round trip when they can share one.

A turn starts with its rate limit, its session with the history window, and what memory holds of
the user (facts, the summary). On the bus all three live on the same Redis and none depends on
another, so `OpenTurnStage` queues them in one `RedisBatch`: one round trip instead of three, which
was a sixth of a worker's Redis requests per message. The decisions are those of the stages it
stands for (`RateLimitStage`, `LoadSessionStage`, `HistoryWindowStage`, `LoadMemoryStage`), applied
in their order; where the stores are not all on one Redis (embedded, tests with their own
limiter) it simply runs those stages one after another.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

import redis.asyncio as aioredis

from core.clock import Clock
from core.memory.stages import LoadMemoryStage
from core.pipeline.stages import HistoryWindowStage, LoadSessionStage, RateLimitStage, turn_limits, usage_key
from core.pipeline.turn import Turn
from core.ratelimit.base import RateDecision, RateLimiter, RateLimits
from core.redisio import RedisBatch, describe, redis_errors
from core.stores.base import HistoryStore, Session, SessionStore, StoredMessage, Summary, UserFact

__all__ = ["OpenTurnStage"]


@runtime_checkable
class _BatchedLimiter(Protocol):
    @property
    def redis(self) -> aioredis.Redis: ...

    def queue_hit(self, batch: RedisBatch, key: str, limits: RateLimits) -> Callable[[], RateDecision]: ...


@runtime_checkable
class _BatchedSessions(Protocol):
    @property
    def redis(self) -> aioredis.Redis: ...

    def queue_load_with_recent(
        self, batch: RedisBatch, session_id: str, limit: int
    ) -> Callable[[], tuple[Session | None, list[StoredMessage]]]: ...


@runtime_checkable
class _BatchedMemory(Protocol):
    @property
    def redis(self) -> aioredis.Redis | None: ...

    def queue_facts_and_summary(
        self, batch: RedisBatch, bot: str, user_id: str, session_id: str
    ) -> Callable[[], Awaitable[tuple[list[UserFact], Summary | None]]] | None: ...


class OpenTurnStage:
    def __init__(
        self, limiter: RateLimiter, sessions: SessionStore, history: HistoryStore, *, clock: Clock | None = None
    ) -> None:
        self._rate = RateLimitStage(limiter)
        self._session = LoadSessionStage(sessions, history, clock=clock)
        self._window = HistoryWindowStage(sessions)
        self._memory = LoadMemoryStage(history)
        self._batched: tuple[_BatchedLimiter, _BatchedSessions, _BatchedMemory] | None = None
        if (
            isinstance(limiter, _BatchedLimiter)
            and isinstance(sessions, _BatchedSessions)
            and isinstance(history, _BatchedMemory)
            and limiter.redis is sessions.redis is history.redis
        ):
            self._batched = (limiter, sessions, history)

    @property
    def batched(self) -> bool:
        """Whether the three reads go to Redis together."""
        return self._batched is not None

    async def __call__(self, turn: Turn) -> None:
        if self._batched is None:
            await self._one_by_one(turn)
            return
        limiter, sessions, memory = self._batched
        env = turn.envelope
        batch = RedisBatch(limiter.redis)
        decision = limiter.queue_hit(batch, usage_key(turn), turn_limits(turn))
        loaded = sessions.queue_load_with_recent(batch, env.session_id, turn.bot.history.max_messages)
        remembered = memory.queue_facts_and_summary(batch, env.bot, env.user_id, env.session_id)
        with redis_errors(describe(limiter.redis), "opening a turn (rate limit, session, memory)"):
            await batch.run()
        self._rate.apply(turn, decision())
        if turn.done:
            return
        await self._session.apply(turn, *loaded())
        await self._window(turn)
        if remembered is None:  # the cache is not on Redis after all: read it on its own
            await self._memory(turn)
        else:
            self._memory.apply(turn, *await remembered())

    async def _one_by_one(self, turn: Turn) -> None:
        for stage in (self._rate, self._session, self._window, self._memory):
            await stage(turn)
            if turn.done:
                return
