"""The embedded bus: an asyncio queue inside one process (`relaybot run`)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

from core.bus.base import BusDelivery
from core.envelope import Envelope

_CLOSED = object()


class MemoryBus:
    def __init__(self, *, maxsize: int = 10_000) -> None:
        self._queue: asyncio.Queue[BusDelivery | object] = asyncio.Queue(maxsize=maxsize)
        self._ids = itertools.count(1)
        self._unacked: set[str] = set()
        self._closed = False

    async def publish(self, envelope: Envelope) -> None:
        if self._closed:
            raise RuntimeError("the bus is closed")
        delivery = BusDelivery(envelope=envelope, delivery_id=str(next(self._ids)))
        self._unacked.add(delivery.delivery_id)
        await self._queue.put(delivery)

    async def consume(self) -> AsyncIterator[BusDelivery]:
        while True:
            item = await self._queue.get()
            if item is _CLOSED:
                # Let every other consumer see the end too.
                self._queue.put_nowait(_CLOSED)
                return
            assert isinstance(item, BusDelivery)
            yield item

    async def ack(self, delivery: BusDelivery) -> None:
        self._unacked.discard(delivery.delivery_id)

    async def pending(self) -> int:
        return len(self._unacked)

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put_nowait(_CLOSED)
