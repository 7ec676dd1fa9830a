from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Protocol


class ConversationLocks(Protocol):
    def hold(self, key: str) -> AbstractAsyncContextManager[None]:
        """Hold the lock of one conversation; waiters get it in the order they asked."""
        ...
