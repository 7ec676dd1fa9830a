"""The response cache in this process only, least recently used first out."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from core.llm.cache.base import CachedAnswer

__all__ = ["MemoryResponseCache"]


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
