"""Streams and sent parts shared by every process through Redis (`<prefix>:stream:*`, `<prefix>:parts:*`)."""

from __future__ import annotations

import redis.asyncio as aioredis

from core.redisio import describe, redis_errors, reply, text
from core.streams.base import STREAM_TTL_SECONDS, StreamState, state_of


class RedisStreamRegistry:
    def __init__(self, client: aioredis.Redis, *, prefix: str = "relaybot") -> None:
        self._client = client
        self._prefix = prefix
        self._where = describe(client)

    def _key(self, reply_key: str) -> str:
        return f"{self._prefix}:stream:{reply_key}"

    async def claim(self, reply_key: str) -> bool:
        key = self._key(reply_key)
        with redis_errors(self._where, "claiming a streamed reply", prefix=self._prefix):
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hsetnx(key, "owner", "1")
                pipe.expire(key, STREAM_TTL_SECONDS)
                claimed, _ = await pipe.execute()
        return bool(claimed)

    async def set_ref(self, reply_key: str, message_ref: str) -> None:
        with redis_errors(self._where, "recording a streamed message", prefix=self._prefix):
            await reply(self._client.hset(self._key(reply_key), "ref", message_ref))

    async def get(self, reply_key: str) -> StreamState:
        with redis_errors(self._where, "reading a streamed reply", prefix=self._prefix):
            raw = await reply(self._client.hgetall(self._key(reply_key)))
        return state_of({text(k): text(v) for k, v in raw.items()})

    async def close(self, reply_key: str, final_text: str) -> StreamState:
        key = self._key(reply_key)
        with redis_errors(self._where, "closing a streamed reply", prefix=self._prefix):
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hgetall(key)
                pipe.hset(key, mapping={"closed": "1", "final": final_text})
                pipe.expire(key, STREAM_TTL_SECONDS)
                raw, _, _ = await pipe.execute()
        return state_of({text(k): text(v) for k, v in raw.items()})

    async def sent_parts(self, reply_id: str) -> list[str]:
        with redis_errors(self._where, "reading the sent parts of a reply", prefix=self._prefix):
            return [text(v) for v in await reply(self._client.lrange(f"{self._prefix}:parts:{reply_id}", 0, -1))]

    async def part_sent(self, reply_id: str, message_id: str) -> None:
        key = f"{self._prefix}:parts:{reply_id}"
        with redis_errors(self._where, "recording a sent part", prefix=self._prefix):
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.rpush(key, message_id)
                pipe.expire(key, STREAM_TTL_SECONDS * 24)
                await pipe.execute()
