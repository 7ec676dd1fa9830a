"""Dedupe claims on Redis (SET NX EX): atomic across every process."""

from __future__ import annotations

import redis.asyncio as aioredis

from core.redisio import describe, redis_errors


class RedisDedupeStore:
    def __init__(self, client: aioredis.Redis, *, prefix: str = "relaybot") -> None:
        self._client = client
        self._prefix = prefix
        self._where = describe(client)

    async def claim(self, key: str, ttl_seconds: float) -> bool:
        with redis_errors(self._where, "claiming a message id", prefix=self._prefix):
            return bool(
                await self._client.set(f"{self._prefix}:dedupe:{key}", "1", nx=True, px=int(ttl_seconds * 1000))
            )

    async def exists(self, key: str) -> bool:
        with redis_errors(self._where, "checking a message id", prefix=self._prefix):
            return bool(await self._client.exists(f"{self._prefix}:dedupe:{key}"))
