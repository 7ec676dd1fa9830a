"""The bus as envelopes on an OrderedQueue partitioned by session: an asyncio queue when
embedded, a Redis Stream in production. Workers consume `queue` directly."""

from __future__ import annotations

from core.envelope import Envelope
from core.queue.base import OrderedQueue


class QueueBus:
    def __init__(self, queue: OrderedQueue) -> None:
        self.queue = queue

    async def publish(self, envelope: Envelope) -> bool:
        ticket = await self.queue.add(
            envelope.session_id, envelope.to_json(), dedupe_key=f"inbound:{envelope.dedupe_key}"
        )
        return ticket is not None

    async def pending(self) -> int:
        return await self.queue.pending()

    async def close(self) -> None:
        await self.queue.close()
