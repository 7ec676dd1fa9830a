"""A channel adapter for tests of the core: it records what it is asked to deliver.

It implements the same adapter seam as the real channels (nothing in core/ is replaced); it
can be told to fail the next deliveries the way platforms do (429 with Retry-After, 5xx, 4xx).
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from core.channel import Capabilities, DeliveryResult
from core.envelope import Reply
from core.errors import DeliveryError


class RecordingChannel:
    def __init__(self, channel: str = "api", *, can_stream: bool = False) -> None:
        self.channel_names = (channel,)
        self.capabilities = Capabilities(max_message_length=4000, can_stream=can_stream)
        self.replies: list[Reply] = []
        self.fragments: list[Reply] = []
        self.failures: list[DeliveryError] = []
        self.attempts = 0
        self._arrived = asyncio.Condition()

    def register(self, app: web.Application) -> None:
        """No routes: tests publish envelopes on the bus themselves."""

    async def deliver(self, reply: Reply) -> DeliveryResult:
        if not reply.final:
            self.fragments.append(reply)
            return DeliveryResult(delivered=True)
        self.attempts += 1
        if self.failures:
            raise self.failures.pop(0)
        async with self._arrived:
            self.replies.append(reply)
            self._arrived.notify_all()
        return DeliveryResult(delivered=True, channel_message_ids=(f"m{len(self.replies)}",))

    async def wait_for(self, count: int, within: float = 10.0) -> list[Reply]:
        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(lambda: len(self.replies) >= count), within)
        return list(self.replies)

    async def start(self) -> None:
        """Nothing to start: messages arrive through routes."""

    async def close(self) -> None:
        """Nothing to release."""
