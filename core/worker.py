"""Core worker: takes envelopes off the bus and turns each into exactly one stored reply.

The ordered consumer holds the conversation's lock and keeps its turns in arrival order, across
any number of worker processes; this module is what one turn does inside it.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from core.bots import BotRegistry
from core.delivery.coalesce import DeltaCoalescer
from core.delivery.outbox import Outbox
from core.envelope import Envelope, Reply
from core.errors import PoisonMessage
from core.pipeline.pipeline import Pipeline
from core.queue.base import OrderedQueue, QueueEntry
from core.queue.consumer import OrderedConsumer


class Worker:
    def __init__(
        self,
        *,
        queue: OrderedQueue,
        pipeline: Pipeline,
        bots: BotRegistry,
        outbox: Outbox,
        concurrency: int = 16,
        visibility_timeout: float = 30.0,
        on_dead_letter: Callable[[], None] | None = None,
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self._pipeline = pipeline
        self._bots = bots
        self._outbox = outbox
        self._max_attempts = queue.max_attempts
        self._log = logger or structlog.get_logger("relaybot.worker")
        self._consumer = OrderedConsumer(
            queue,
            self._turn,
            name="turn",
            concurrency=concurrency,
            visibility_timeout=visibility_timeout,
            on_dead_letter=on_dead_letter,
            logger=self._log,
        )

    async def run(self) -> None:
        await self._consumer.run()

    async def stop(self, grace: float) -> None:
        """Stop taking envelopes; finish turns in flight within `grace`, hand back the rest."""
        await self._consumer.stop(grace)

    @property
    def in_flight(self) -> int:
        return self._consumer.in_flight

    async def _turn(self, entry: QueueEntry) -> None:
        try:
            envelope = Envelope.from_json(entry.payload)
        except (ValueError, KeyError, TypeError) as exc:
            raise PoisonMessage(f"not an envelope: {exc}") from exc
        # Bound and reset by token: `bound_contextvars` also reads every bound variable to restore
        # them, at six times the cost, on every turn.
        tokens = structlog.contextvars.bind_contextvars(
            channel=envelope.channel, session_id=envelope.session_id, user_id=envelope.user_id
        )
        try:
            # Until the last attempt, a store outage is retried rather than answered with an apology.
            await self.process(envelope, retryable=entry.attempt < self._max_attempts)
        finally:
            structlog.contextvars.reset_contextvars(**tokens)

    async def process(self, envelope: Envelope, *, retryable: bool = False) -> Reply | None:
        """Answer one envelope (the caller holds its conversation); None when the bot stays silent
        (a person was asked for or holds the conversation: the message is recorded, not answered).

        A message answered before (the worker died before acknowledging it, or a copy reached the
        queue after the bus's dedupe window) runs again, and is still answered once: the history
        keeps what its first run recorded and that is the reply (RecordStage), and the outbox takes
        one reply per inbound message. The run costs a model call; a "done" mark checked on every
        turn to spare it cost two Redis round trips per message instead.
        """
        bot = self._bots.get(envelope.bot)
        if bot is None:
            raise PoisonMessage(f"no bot named {envelope.bot!r} in this worker's bots folder")
        stream = self._stream_sink(envelope) if self._outbox.can_stream(envelope.channel) else None
        try:
            reply, turn = await self._pipeline.run_turn(envelope, bot, stream=stream, retryable=retryable)
        finally:
            if stream is not None:
                # The last piece of streamed text goes out before the reply, never after it.
                await stream.close()
        if reply is not None:
            await self._outbox.submit(reply)
        # Memory (facts, summary) once the reply is on its way: still under the conversation's lock,
        # so the next message of this conversation sees what this one taught.
        await self._pipeline.follow_up(turn)
        return reply

    def _stream_sink(self, envelope: Envelope) -> DeltaCoalescer:
        async def send(delta: str) -> None:
            # Built per piece, not from a template made up front: most turns send none (an answer
            # complete within the coalescer's first interval goes out as the reply alone).
            piece = Reply(
                envelope_id=envelope.id,
                session_id=envelope.session_id,
                bot=envelope.bot,
                channel=envelope.channel,
                reply_to=envelope.reply_to,
                in_reply_to=envelope.channel_message_id,
                text=delta,
                final=False,
            )
            await self._outbox.stream(piece)

        return DeltaCoalescer(send)
