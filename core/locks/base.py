from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Protocol


class Lease(Protocol):
    """A held lock. `fencing_token` grows with every acquisition of the same key."""

    @property
    def fencing_token(self) -> int: ...

    async def still_held(self) -> bool:
        """False once the lock expired or was taken over (e.g. the holder stalled past its TTL)."""
        ...


class ConversationLocks(Protocol):
    def hold(self, key: str) -> AbstractAsyncContextManager[Lease]:
        """Hold the lock of one conversation until the block ends."""
        ...
