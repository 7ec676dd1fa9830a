"""The writes that close every turn, in one Redis round trip when they can share one.

A turn ends by recording the exchange (the durable history in SQL, then the session window) and
adding its tokens to the user's and the bot's daily totals. On the bus the window and the totals
are on the same Redis, so `SaveTurnStage` writes both in one `RedisBatch` after the SQL append;
elsewhere it runs `RecordStage` and `UsageStage` one after the other. Both writes are done, and
checked, before the reply goes to the outbox, as they were as two stages.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import redis.asyncio as aioredis

from core.clock import Clock
from core.pipeline.stages import RecordStage, UsageStage, bot_usage_key, usage_key, window_kept
from core.pipeline.turn import Turn
from core.ratelimit.base import RateLimiter
from core.redisio import RedisBatch, describe, redis_errors
from core.stores.base import HistoryStore, SessionStore, StoredMessage

__all__ = ["SaveTurnStage"]


@runtime_checkable
class _BatchedUsage(Protocol):
    @property
    def redis(self) -> aioredis.Redis: ...

    def queue_add_tokens(
        self, batch: RedisBatch, key: str, tokens: int, *, also: Sequence[str] = ()
    ) -> Callable[[], int]: ...


@runtime_checkable
class _BatchedWindow(Protocol):
    @property
    def redis(self) -> aioredis.Redis: ...

    def queue_append(
        self, batch: RedisBatch, session_id: str, messages: Sequence[StoredMessage], *, keep: int | None = None
    ) -> Callable[[], None]: ...


class SaveTurnStage:
    def __init__(
        self, sessions: SessionStore, history: HistoryStore, limiter: RateLimiter, *, clock: Clock | None = None
    ) -> None:
        self._record = RecordStage(sessions, history, clock=clock)
        self._usage = UsageStage(limiter)
        self._batched: tuple[_BatchedWindow, _BatchedUsage] | None = None
        if (
            isinstance(sessions, _BatchedWindow)
            and isinstance(limiter, _BatchedUsage)
            and sessions.redis is limiter.redis
        ):
            self._batched = (sessions, limiter)

    @property
    def batched(self) -> bool:
        """Whether the window and the token totals go to Redis together."""
        return self._batched is not None

    async def __call__(self, turn: Turn) -> None:
        if self._batched is None:
            await self._record(turn)
            await self._usage(turn)
            return
        sessions, limiter = self._batched
        window = await self._record.record(turn)
        tokens = turn.tokens_in + turn.tokens_out
        if not window and not tokens:
            return
        batch = RedisBatch(sessions.redis)
        appended = (
            sessions.queue_append(batch, turn.envelope.session_id, window, keep=window_kept(turn)) if window else None
        )
        if tokens:
            # And to the bot's total over every user, which channels check before taking a message.
            limiter.queue_add_tokens(batch, usage_key(turn), tokens, also=(bot_usage_key(turn.bot.name),))
        with redis_errors(describe(sessions.redis), "saving a turn (session window, token totals)"):
            await batch.run()
        if appended is not None:
            appended()
