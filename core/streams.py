"""Progress of replies being shown, shared so that any adapter process can take over.

Streams: who shows a streamed reply, and where. Parts: which parts of a split reply were sent,
so a delivery retried after a partial send (a 429 on part 2 of 3) resumes instead of repeating.

A channel that streams by editing one message (Slack `chat.update`, Telegram `editMessageText`)
gets every fragment in every process that hosts it. The first process to `claim` a reply posts
the message and records its reference; the final reply, delivered by whichever process takes it
from the outbox, `close`s the stream and edits that message with the complete text. Entries
expire: a stream is only interesting while its turn runs.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

import redis.asyncio as aioredis

from core.redisio import describe, redis_errors, text

STREAM_TTL_SECONDS = 3600
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class StreamState:
    #: the platform's reference to the message being edited (Slack ts, Telegram message id)
    message_ref: str | None = None
    closed: bool = False
    #: the text the final reply put in the message; a late fragment edit re-applies it
    final_text: str | None = None


class StreamRegistry(Protocol):
    async def claim(self, reply_key: str) -> bool:
        """True for exactly one caller per reply: that process shows the stream."""
        ...

    async def set_ref(self, reply_key: str, message_ref: str) -> None: ...

    async def get(self, reply_key: str) -> StreamState: ...

    async def close(self, reply_key: str, final_text: str) -> StreamState:
        """Mark the stream finished (fragments arriving later are dropped); returns its state before."""
        ...

    async def sent_parts(self, reply_id: str) -> list[str]:
        """Message ids of the parts of a split reply already sent, in order (a retry resumes after them)."""
        ...

    async def part_sent(self, reply_id: str, message_id: str) -> None: ...


class MemoryStreamRegistry:
    def __init__(self, *, keep: int = 10_000) -> None:
        self._entries: OrderedDict[str, dict[str, str]] = OrderedDict()
        self._parts: OrderedDict[str, list[str]] = OrderedDict()
        self._keep = keep

    def _entry(self, key: str) -> dict[str, str]:
        return _bounded(self._entries, key, dict, self._keep)

    async def claim(self, reply_key: str) -> bool:
        entry = self._entry(reply_key)
        if "owner" in entry:
            return False
        entry["owner"] = "1"
        return True

    async def set_ref(self, reply_key: str, message_ref: str) -> None:
        self._entry(reply_key)["ref"] = message_ref

    async def get(self, reply_key: str) -> StreamState:
        return _state(self._entries.get(reply_key, {}))

    async def close(self, reply_key: str, final_text: str) -> StreamState:
        entry = self._entry(reply_key)
        before = _state(entry)
        entry["closed"] = "1"
        entry["final"] = final_text
        return before

    async def sent_parts(self, reply_id: str) -> list[str]:
        return list(self._parts.get(reply_id, ()))

    async def part_sent(self, reply_id: str, message_id: str) -> None:
        _bounded(self._parts, reply_id, list, self._keep).append(message_id)


def _bounded(entries: OrderedDict[str, V], key: str, new: Callable[[], V], keep: int) -> V:
    """The entry under `key` (made with `new` if missing); the oldest entries go beyond `keep`."""
    entry = entries.setdefault(key, new())
    while len(entries) > keep:
        entries.popitem(last=False)
    return entry


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
            await self._client.hset(self._key(reply_key), "ref", message_ref)

    async def get(self, reply_key: str) -> StreamState:
        with redis_errors(self._where, "reading a streamed reply", prefix=self._prefix):
            raw = await self._client.hgetall(self._key(reply_key))
        return _state({text(k): text(v) for k, v in raw.items()})

    async def close(self, reply_key: str, final_text: str) -> StreamState:
        key = self._key(reply_key)
        with redis_errors(self._where, "closing a streamed reply", prefix=self._prefix):
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hgetall(key)
                pipe.hset(key, mapping={"closed": "1", "final": final_text})
                pipe.expire(key, STREAM_TTL_SECONDS)
                raw, _, _ = await pipe.execute()
        return _state({text(k): text(v) for k, v in raw.items()})

    async def sent_parts(self, reply_id: str) -> list[str]:
        with redis_errors(self._where, "reading the sent parts of a reply", prefix=self._prefix):
            return [text(v) for v in await self._client.lrange(f"{self._prefix}:parts:{reply_id}", 0, -1)]

    async def part_sent(self, reply_id: str, message_id: str) -> None:
        key = f"{self._prefix}:parts:{reply_id}"
        with redis_errors(self._where, "recording a sent part", prefix=self._prefix):
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.rpush(key, message_id)
                pipe.expire(key, STREAM_TTL_SECONDS * 24)
                await pipe.execute()


def _state(entry: dict[str, str]) -> StreamState:
    return StreamState(message_ref=entry.get("ref"), closed="closed" in entry, final_text=entry.get("final"))
