"""`HandoffIndex` on Redis, shared by every process (adapters, workers, the console).

P:handoff:open    ZSET  session id -> when a person was asked for (Unix seconds)
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import cast

import redis.asyncio as aioredis

from core.redisio import describe, redis_errors, text

__all__ = ["RedisHandoffIndex"]


class RedisHandoffIndex:
    def __init__(self, client: aioredis.Redis, *, prefix: str = "relaybot") -> None:
        self._client = client
        self._prefix = prefix
        self._key = f"{prefix}:handoff:open"
        self._where = describe(client)

    async def add(self, session_id: str, at: datetime) -> None:
        with redis_errors(self._where, "listing a handoff", prefix=self._prefix):
            await self._client.zadd(self._key, {session_id: at.timestamp()})

    async def remove(self, session_id: str) -> None:
        with redis_errors(self._where, "unlisting a handoff", prefix=self._prefix):
            await self._client.zrem(self._key, session_id)

    async def members(self) -> list[tuple[str, datetime]]:
        with redis_errors(self._where, "reading the handoff queue", prefix=self._prefix):
            found = await self._client.zrange(self._key, 0, -1, withscores=True)
        pairs = cast("list[tuple[bytes | str, float]]", found)
        return [(text(member), datetime.fromtimestamp(float(score), UTC)) for member, score in pairs]
