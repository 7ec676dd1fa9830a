from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

FanoutHandler = Callable[[str], Awaitable[None]]


class Fanout(Protocol):
    """Best-effort broadcast: every subscriber of a topic, in any process, gets each message.

    Nothing is stored: what needs to survive (a final reply) is stored elsewhere first.
    """

    async def publish(self, topic: str, payload: str) -> int:
        """Send to every subscriber; returns how many processes (memory: handlers) were listening."""
        ...

    async def subscribe(self, topic: str, handler: FanoutHandler) -> None: ...

    async def close(self) -> None: ...
