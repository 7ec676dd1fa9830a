"""Twilio state shared by every process through Redis (`<prefix>:twilio:*`)."""

from __future__ import annotations

import redis.asyncio as aioredis

from channels.twilio.state.base import STATE_TTL_SECONDS
from core.redisio import describe, redis_errors, reply, text


class RedisTwilioState:
    def __init__(self, client: aioredis.Redis, *, prefix: str = "relaybot", owns_client: bool = False) -> None:
        self._client = client
        self._prefix = f"{prefix}:twilio"
        self._where = describe(client)
        self._owns_client = owns_client

    async def opt_out(self, number: str) -> None:
        with redis_errors(self._where, "recording an SMS opt-out", prefix=self._prefix):
            await reply(self._client.sadd(f"{self._prefix}:optout", number))

    async def opt_in(self, number: str) -> None:
        with redis_errors(self._where, "recording an SMS opt-in", prefix=self._prefix):
            await reply(self._client.srem(f"{self._prefix}:optout", number))

    async def is_opted_out(self, number: str) -> bool:
        with redis_errors(self._where, "reading SMS opt-outs", prefix=self._prefix):
            return bool(await reply(self._client.sismember(f"{self._prefix}:optout", number)))

    async def wrote_at(self, address: str, at: float) -> None:
        # Kept longer than the window, so "wrote 30 hours ago" is told apart from "never seen".
        with redis_errors(self._where, "recording a WhatsApp window", prefix=self._prefix):
            await self._client.set(f"{self._prefix}:wrote:{address}", repr(at), ex=STATE_TTL_SECONDS)

    async def last_wrote(self, address: str) -> float | None:
        with redis_errors(self._where, "reading a WhatsApp window", prefix=self._prefix):
            raw = await self._client.get(f"{self._prefix}:wrote:{address}")
        return float(text(raw)) if raw is not None else None

    async def set_status(self, reply_id: str, message_sid: str, status: str) -> None:
        key = f"{self._prefix}:status:{reply_id}"
        with redis_errors(self._where, "recording a delivery status", prefix=self._prefix):
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hset(key, message_sid, status)
                pipe.expire(key, STATE_TTL_SECONDS)
                await pipe.execute()

    async def statuses(self, reply_id: str) -> dict[str, str]:
        with redis_errors(self._where, "reading delivery statuses", prefix=self._prefix):
            raw = await reply(self._client.hgetall(f"{self._prefix}:status:{reply_id}"))
        return {text(k): text(v) for k, v in raw.items()}

    async def content_sid(self, key: str) -> str | None:
        with redis_errors(self._where, "reading a WhatsApp button content", prefix=self._prefix):
            raw = await self._client.get(f"{self._prefix}:content:{key}")
        return text(raw) if raw is not None else None

    async def remember_content(self, key: str, sid: str) -> None:
        # No expiry: the resource lives in Twilio until someone deletes it (then forget_content).
        with redis_errors(self._where, "recording a WhatsApp button content", prefix=self._prefix):
            await self._client.set(f"{self._prefix}:content:{key}", sid)

    async def forget_content(self, key: str) -> None:
        with redis_errors(self._where, "forgetting a WhatsApp button content", prefix=self._prefix):
            await self._client.delete(f"{self._prefix}:content:{key}")

    async def close(self) -> None:
        if self._owns_client:
            await self._client.aclose()
