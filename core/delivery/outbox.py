"""The outbox: every reply is stored before it is sent, and sent once per inbound message.

`InlineOutbox` (one process) sends at once, under the conversation's lock, so replies keep their
order. `QueueOutbox` (production) puts each reply on its channel's ordered queue, where the
adapter process's `DeliveryWorker` sends it; channels whose connections live in one process
(the web widget) get their replies by fan-out to every process that hosts them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Protocol

import structlog

from core.channel import Capabilities, DeliveryTarget
from core.dedupe.base import DedupeStore
from core.delivery.records import DeliveryRecord, DeliveryRecords
from core.delivery.sender import ReplySender
from core.envelope import Reply
from core.errors import DeliveryError
from core.fanout.base import Fanout
from core.queue.base import OrderedQueue

ONCE_TTL_SECONDS = 7 * 24 * 3600


def deliver_topic(channel: str) -> str:
    return f"deliver:{channel}"


def fragments_topic(channel: str) -> str:
    return f"fragments:{channel}"


class Outbox(Protocol):
    def can_stream(self, channel: str) -> bool: ...

    async def stream(self, fragment: Reply) -> None:
        """Best effort: a streamed fragment is shown if it can be, never retried or stored."""
        ...

    async def submit(self, reply: Reply) -> bool:
        """Store the reply for delivery; False if a reply to the same inbound message was already taken."""
        ...


class InlineOutbox:
    def __init__(
        self,
        targets: Mapping[str, DeliveryTarget],
        sender: ReplySender,
        *,
        keep: int = 100_000,
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self._targets = targets
        self._sender = sender
        self._sent: OrderedDict[str, None] = OrderedDict()
        self._keep = keep
        self._log = logger or structlog.get_logger("relaybot.outbox")

    def can_stream(self, channel: str) -> bool:
        target = self._targets.get(channel)
        return target is not None and target.capabilities.can_stream

    async def stream(self, fragment: Reply) -> None:
        target = self._targets.get(fragment.channel)
        if target is None:
            return
        try:
            await target.deliver(fragment)
        except DeliveryError as exc:
            await self._log.adebug("stream_fragment_dropped", error=str(exc))

    async def submit(self, reply: Reply) -> bool:
        if reply.dedupe_key:
            if reply.dedupe_key in self._sent:
                await self._log.ainfo("reply_already_sent", dedupe_key=reply.dedupe_key)
                return False
            self._sent[reply.dedupe_key] = None
            while len(self._sent) > self._keep:
                self._sent.popitem(last=False)
        await self._sender.send(reply)
        return True


class QueueOutbox:
    def __init__(
        self,
        *,
        queue_for: Callable[[str], OrderedQueue],
        capabilities: Mapping[str, Capabilities],
        fanout: Fanout,
        dedupe: DedupeStore,
        records: DeliveryRecords,
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self._queue_for = queue_for
        self._capabilities = capabilities
        self._fanout = fanout
        self._dedupe = dedupe
        self._records = records
        self._log = logger or structlog.get_logger("relaybot.outbox")

    def can_stream(self, channel: str) -> bool:
        caps = self._capabilities.get(channel)
        return caps is not None and caps.can_stream

    async def stream(self, fragment: Reply) -> None:
        try:
            await self._fanout.publish(fragments_topic(fragment.channel), fragment.to_json())
        except Exception as exc:
            await self._log.adebug("stream_fragment_dropped", error=str(exc))

    async def submit(self, reply: Reply) -> bool:
        caps = self._capabilities.get(reply.channel)
        if caps is not None and caps.broadcast:
            # The reply is already in the durable history, from which a reconnecting client resumes.
            if reply.dedupe_key and not await self._dedupe.claim(f"outbox:{reply.dedupe_key}", ONCE_TTL_SECONDS):
                return False
            listening = await self._fanout.publish(deliver_topic(reply.channel), reply.to_json())
            record = DeliveryRecord(reply_id=reply.id, channel=reply.channel, session_id=reply.session_id)
            if listening:
                record.status = "sent"
            else:
                # No process hosts this channel right now: the reply waits in the history for a resume.
                record.status = "kept"
                record.error = f"no process hosting {reply.channel} was listening; kept in the history for a resume"
            await self._records.put(record)
            return True
        # No "pending" record first: the queue entry is the reply until the adapter's sender
        # records what became of it (a round trip per turn that nothing read).
        ticket = await self._queue_for(reply.channel).add(
            reply.session_id, reply.to_json(), dedupe_key=reply.dedupe_key or None
        )
        if ticket is None:
            await self._log.ainfo("reply_already_queued", dedupe_key=reply.dedupe_key)
            return False
        return True
