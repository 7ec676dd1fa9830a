from __future__ import annotations

from typing import Protocol


class DedupeStore(Protocol):
    async def claim(self, key: str, ttl_seconds: float) -> bool:
        """Atomically claim `key` for `ttl_seconds`; True for the first caller only."""
        ...

    async def exists(self, key: str) -> bool: ...
