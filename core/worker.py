"""Core worker: takes envelopes off the bus and turns each into exactly one delivered reply."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace

import structlog

from core.bots import BotRegistry
from core.bus.base import Bus, BusDelivery
from core.dedupe.base import DedupeStore
from core.delivery.outbox import Outbox
from core.envelope import Envelope, Reply
from core.locks.base import ConversationLocks
from core.pipeline.pipeline import Pipeline
from core.pipeline.turn import DeltaSink

DONE_TTL_SECONDS = 7 * 24 * 3600


class Worker:
    def __init__(
        self,
        *,
        bus: Bus,
        pipeline: Pipeline,
        bots: BotRegistry,
        locks: ConversationLocks,
        dedupe: DedupeStore,
        outbox: Outbox,
        concurrency: int = 16,
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self._bus = bus
        self._pipeline = pipeline
        self._bots = bots
        self._locks = locks
        self._dedupe = dedupe
        self._outbox = outbox
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._log = logger or structlog.get_logger("relaybot.worker")

    async def run(self) -> None:
        """Consume until the bus closes, then wait for the turns in flight."""
        async for delivery in self._bus.consume():
            await self._slots.acquire()
            # Taking the conversation's place in line happens inside the task; tasks start in
            # creation order, so turns of one conversation queue on its lock in arrival order.
            task = asyncio.create_task(self._handle(delivery))
            self._tasks.add(task)
            task.add_done_callback(self._done)
        await self.drain()

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, delivery: BusDelivery) -> None:
        envelope = delivery.envelope
        with structlog.contextvars.bound_contextvars(
            channel=envelope.channel, session_id=envelope.session_id, user_id=envelope.user_id
        ):
            try:
                await self.process(envelope)
                await self._bus.ack(delivery)
            except Exception as exc:
                # Not acked: a durable bus hands it out again. Logged with the envelope id to trace it.
                await self._log.aexception("envelope_failed", envelope_id=envelope.id, error=str(exc))

    async def process(self, envelope: Envelope) -> Reply | None:
        """Run one envelope's turn under its conversation lock; None if it was already answered."""
        bot = self._bots.get(envelope.bot)
        if bot is None:
            await self._log.aerror("unknown_bot", bot=envelope.bot, envelope_id=envelope.id)
            return None
        done_key = f"turn:{envelope.dedupe_key}"
        async with self._locks.hold(envelope.session_id):
            if await self._dedupe.exists(done_key):
                await self._log.ainfo(
                    "duplicate_envelope", envelope_id=envelope.id, dedupe_key=envelope.dedupe_key
                )
                return None
            stream = self._stream_sink(envelope) if self._outbox.can_stream(envelope.channel) else None
            reply = await self._pipeline.run(envelope, bot, stream=stream)
            await self._outbox.submit(reply)
            await self._dedupe.claim(done_key, DONE_TTL_SECONDS)
            return reply

    def _stream_sink(self, envelope: Envelope) -> DeltaSink:
        template = Reply(
            envelope_id=envelope.id,
            session_id=envelope.session_id,
            bot=envelope.bot,
            channel=envelope.channel,
            reply_to=envelope.reply_to,
            in_reply_to=envelope.channel_message_id,
            text="",
            final=False,
        )

        async def send(delta: str) -> None:
            await self._outbox.stream(replace(template, text=delta))

        return send

    async def stop(self) -> None:
        """Cancel turns still running (used after the grace period)."""
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.drain()
