"""The response cache shared by every worker through Redis, which expires the entries."""

from __future__ import annotations

import json

import redis.asyncio as aioredis

from core.llm.cache.base import CachedAnswer
from core.redisio import describe, redis_errors, text

__all__ = ["RedisResponseCache"]


class RedisResponseCache:
    """Shared by every worker; Redis expires the entries (`<prefix>:llm:cache:<digest>`)."""

    def __init__(self, client: aioredis.Redis, *, prefix: str = "relaybot") -> None:
        self._client = client
        self._prefix = prefix
        self._where = describe(client)

    def _key(self, key: str) -> str:
        return f"{self._prefix}:llm:cache:{key}"

    async def get(self, key: str) -> CachedAnswer | None:
        with redis_errors(self._where, "reading the LLM response cache", prefix=self._prefix):
            raw = await self._client.get(self._key(key))
        if raw is None:
            return None
        try:
            data = json.loads(text(raw))
            return CachedAnswer(text=data["text"], provider=data["provider"], model=data["model"])
        except (ValueError, KeyError, TypeError):
            return None  # an entry written by another version: a miss, and it expires on its own

    async def put(self, key: str, answer: CachedAnswer, *, ttl_seconds: float) -> None:
        payload = json.dumps({"text": answer.text, "provider": answer.provider, "model": answer.model})
        with redis_errors(self._where, "writing the LLM response cache", prefix=self._prefix):
            await self._client.set(self._key(key), payload, px=max(1, round(ttl_seconds * 1000)))
