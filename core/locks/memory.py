"""Embedded per-conversation locks (asyncio.Lock is FIFO-fair, so arrival order is kept)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MemoryLease:
    fencing_token: int

    async def still_held(self) -> bool:
        # One process: a lock cannot expire under its holder.
        return True


class MemoryConversationLocks:
    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}
        self._tokens = itertools.count(1)

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[MemoryLease]:
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._users[key] = self._users.get(key, 0) + 1
        try:
            async with lock:
                yield MemoryLease(next(self._tokens))
        finally:
            # Drop idle locks so memory stays bounded by active conversations.
            self._users[key] -= 1
            if self._users[key] == 0:
                del self._users[key]
                del self._locks[key]

    def __len__(self) -> int:
        return len(self._locks)
