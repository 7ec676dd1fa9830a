"""The embedded outbox: records each reply before sending it, retries with backoff.

Replies of one conversation are submitted under its lock and sent before the lock is released,
so they reach the user in order. The production outbox (Redis, separate delivery workers)
implements the same `submit`.
"""

from __future__ import annotations

import asyncio
import random
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import structlog

from core.channel import DeliveryTarget
from core.envelope import Reply
from core.errors import DeliveryError

Status = Literal["pending", "sent", "kept", "failed", "dead"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_delay)
        backoff = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1))
        return backoff * (0.5 + random.random() / 2)  # jitter keeps retries from bunching


@dataclass(slots=True, kw_only=True)
class OutboxRecord:
    reply: Reply
    status: Status = "pending"
    attempts: int = 0
    error: str | None = None
    channel_message_ids: tuple[str, ...] = ()
    updated_at: datetime = field(default_factory=lambda: datetime.now(UTC))


class Outbox:
    def __init__(
        self,
        targets: Mapping[str, DeliveryTarget],
        *,
        policy: RetryPolicy | None = None,
        keep: int = 10_000,
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self._targets = targets
        self._policy = policy or RetryPolicy()
        self._keep = keep
        self._records: OrderedDict[str, OutboxRecord] = OrderedDict()
        self._log = logger or structlog.get_logger("relaybot.outbox")

    def record(self, reply_id: str) -> OutboxRecord | None:
        return self._records.get(reply_id)

    def can_stream(self, channel: str) -> bool:
        target = self._targets.get(channel)
        return target is not None and target.capabilities.can_stream

    async def stream(self, fragment: Reply) -> None:
        """Best-effort delivery of a streamed fragment: never retried, never stored."""
        target = self._targets.get(fragment.channel)
        if target is None:
            return
        try:
            await target.deliver(fragment)
        except DeliveryError as exc:
            await self._log.adebug("stream_fragment_dropped", error=str(exc))

    async def submit(self, reply: Reply) -> OutboxRecord:
        """Store the reply, then send it; returns its record once it is sent, kept, or dead."""
        record = OutboxRecord(reply=reply)
        self._records[reply.id] = record
        while len(self._records) > self._keep:
            self._records.popitem(last=False)
        target = self._targets.get(reply.channel)
        if target is None:
            self._finish(record, "dead", f"no channel adapter for {reply.channel!r} in this process")
            await self._log.aerror("delivery_dead", reply_id=reply.id, error=record.error)
            return record
        while True:
            record.attempts += 1
            try:
                result = await target.deliver(reply)
            except DeliveryError as exc:
                record.error = str(exc)
                if not exc.retryable or record.attempts >= self._policy.attempts:
                    self._finish(record, "dead" if exc.retryable else "failed", str(exc))
                    await self._log.aerror(
                        "delivery_failed", reply_id=reply.id, attempts=record.attempts, error=str(exc)
                    )
                    return record
                delay = self._policy.delay(record.attempts, exc.retry_after)
                await self._log.awarning(
                    "delivery_retry", reply_id=reply.id, attempt=record.attempts, delay=delay, error=str(exc)
                )
                await asyncio.sleep(delay)
                continue
            record.channel_message_ids = result.channel_message_ids
            self._finish(record, "sent" if result.delivered else "kept", result.detail or None)
            return record

    @staticmethod
    def _finish(record: OutboxRecord, status: Status, error: str | None) -> None:
        record.status = status
        record.error = error
        record.updated_at = datetime.now(UTC)
