"""Optional response cache: an exact match on the assembled context gets the earlier answer.

Off unless a bot sets `[models] cache_ttl_seconds`. The key covers the bot, the model chain, the
generation settings and every message of the context, and (unless the bot sets `cache_shared`)
the user: one user's answer is never served to another, since the context can carry what the
bot knows about that user. Only complete answers are stored, never a cut stream or the static
message.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as aioredis

from core.llm.base import LLMRequest
from core.redisio import describe, redis_errors, text

__all__ = ["CachedAnswer", "MemoryResponseCache", "RedisResponseCache", "ResponseCache", "cache_key"]

SHARED_SCOPE = "*shared*"


@dataclass(frozen=True, slots=True, kw_only=True)
class CachedAnswer:
    text: str
    provider: str
    model: str


class ResponseCache(Protocol):
    async def get(self, key: str) -> CachedAnswer | None: ...

    async def put(self, key: str, answer: CachedAnswer, *, ttl_seconds: float) -> None: ...


def cache_key(*, bot: str, scope: str, steps: Sequence[str], request: LLMRequest) -> str:
    """A digest of everything that shapes the answer; `scope` is the user, or SHARED_SCOPE."""
    material = {
        "bot": bot,
        "scope": scope,
        "steps": list(steps),
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "messages": [[m.role, m.content] for m in request.messages],
    }
    raw = json.dumps(material, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()


class MemoryResponseCache:
    """In this process, least recently used first out beyond `max_entries`."""

    def __init__(self, *, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._entries: OrderedDict[str, tuple[float, CachedAnswer]] = OrderedDict()
        self._max = max_entries
        self._clock = clock

    async def get(self, key: str) -> CachedAnswer | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, answer = entry
        if self._clock() >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return answer

    async def put(self, key: str, answer: CachedAnswer, *, ttl_seconds: float) -> None:
        self._entries[key] = (self._clock() + ttl_seconds, answer)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)


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
