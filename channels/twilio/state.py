"""What the Twilio adapter remembers across messages and processes.

- Opt-outs: numbers that texted STOP get no messages until they text START. Kept without expiry.
  Twilio also blocks sends to them itself (error 21610), so this is a second guard that saves a
  wasted LLM turn and a failed send; a 21610 re-records the opt-out if this store lost it.
- The WhatsApp 24-hour window: when each WhatsApp user last wrote, so a late reply goes out as the
  bot's approved template instead of a free-form message WhatsApp would refuse (63016).
- Delivery statuses: what Twilio's status callbacks said about each message sent for a reply.

Memory in one process; Redis (the deployment's shared Redis) whenever REDIS_URL is set, so every
`relaybot serve twilio` replica and the worker-side deliveries see the same opt-outs.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol

import redis.asyncio as aioredis

from core.redisio import describe, redis_errors, text

STATE_TTL_SECONDS = 7 * 24 * 3600


class TwilioState(Protocol):
    async def opt_out(self, number: str) -> None: ...

    async def opt_in(self, number: str) -> None: ...

    async def is_opted_out(self, number: str) -> bool: ...

    async def wrote_at(self, address: str, at: float) -> None:
        """Record that `address` (e.g. "whatsapp:+1555...") wrote to us at `at` (epoch seconds)."""
        ...

    async def last_wrote(self, address: str) -> float | None:
        """When `address` last wrote (epoch seconds), or None if not known."""
        ...

    async def set_status(self, reply_id: str, message_sid: str, status: str) -> None: ...

    async def statuses(self, reply_id: str) -> dict[str, str]:
        """The latest status Twilio reported for each message sent for the reply, by MessageSid."""
        ...

    async def close(self) -> None: ...


class MemoryTwilioState:
    def __init__(self, *, keep: int = 100_000) -> None:
        self._opted_out: set[str] = set()
        self._wrote: OrderedDict[str, float] = OrderedDict()
        self._statuses: OrderedDict[str, dict[str, str]] = OrderedDict()
        self._keep = keep

    async def opt_out(self, number: str) -> None:
        self._opted_out.add(number)

    async def opt_in(self, number: str) -> None:
        self._opted_out.discard(number)

    async def is_opted_out(self, number: str) -> bool:
        return number in self._opted_out

    async def wrote_at(self, address: str, at: float) -> None:
        self._wrote[address] = at
        self._wrote.move_to_end(address)
        while len(self._wrote) > self._keep:
            self._wrote.popitem(last=False)

    async def last_wrote(self, address: str) -> float | None:
        return self._wrote.get(address)

    async def set_status(self, reply_id: str, message_sid: str, status: str) -> None:
        self._statuses.setdefault(reply_id, {})[message_sid] = status
        while len(self._statuses) > self._keep:
            self._statuses.popitem(last=False)

    async def statuses(self, reply_id: str) -> dict[str, str]:
        return dict(self._statuses.get(reply_id, {}))

    async def close(self) -> None:
        return None


class RedisTwilioState:
    def __init__(self, client: aioredis.Redis, *, prefix: str = "relaybot", owns_client: bool = False) -> None:
        self._client = client
        self._prefix = f"{prefix}:twilio"
        self._where = describe(client)
        self._owns_client = owns_client

    async def opt_out(self, number: str) -> None:
        with redis_errors(self._where, "recording an SMS opt-out", prefix=self._prefix):
            await self._client.sadd(f"{self._prefix}:optout", number)

    async def opt_in(self, number: str) -> None:
        with redis_errors(self._where, "recording an SMS opt-in", prefix=self._prefix):
            await self._client.srem(f"{self._prefix}:optout", number)

    async def is_opted_out(self, number: str) -> bool:
        with redis_errors(self._where, "reading SMS opt-outs", prefix=self._prefix):
            return bool(await self._client.sismember(f"{self._prefix}:optout", number))

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
            raw = await self._client.hgetall(f"{self._prefix}:status:{reply_id}")
        return {text(k): text(v) for k, v in raw.items()}

    async def close(self) -> None:
        if self._owns_client:
            await self._client.aclose()
