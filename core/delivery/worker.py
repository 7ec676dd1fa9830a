"""Runs in each adapter process: sends the replies queued for the channels it hosts, in order."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import structlog

from core.delivery.sender import ReplySender
from core.envelope import Reply
from core.queue.base import OrderedQueue, QueueEntry
from core.queue.consumer import OrderedConsumer


class DeliveryWorker:
    def __init__(
        self,
        *,
        channels: Sequence[str],
        queue_for: Callable[[str], OrderedQueue],
        sender: ReplySender,
        concurrency: int = 16,
        visibility_timeout: float = 30.0,
        on_dead_letter: Callable[[str], None] | None = None,
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self._sender = sender
        self._consumers = [
            OrderedConsumer(
                queue_for(channel),
                self._send,
                name=f"outbox-{channel}",
                concurrency=concurrency,
                visibility_timeout=visibility_timeout,
                on_dead_letter=_bind(on_dead_letter, f"outbox:{channel}"),
                logger=logger,
            )
            for channel in channels
        ]
        self._log = logger or structlog.get_logger("relaybot.delivery")

    async def _send(self, entry: QueueEntry) -> None:
        await self._sender.send(Reply.from_json(entry.payload))

    async def run(self) -> None:
        await asyncio.gather(*(consumer.run() for consumer in self._consumers))

    async def stop(self, grace: float) -> None:
        await asyncio.gather(*(consumer.stop(grace) for consumer in self._consumers))


def _bind(callback: Callable[[str], None] | None, queue: str) -> Callable[[], None] | None:
    if callback is None:
        return None
    return lambda: callback(queue)
