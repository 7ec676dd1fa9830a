"""Sends one reply through its channel: retries 429/5xx with backoff that honours Retry-After."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from dataclasses import dataclass

import structlog

from core.channel import DeliveryTarget
from core.delivery.records import DeliveryRecord, DeliveryRecords
from core.envelope import Reply
from core.errors import DeliveryError
from core.metrics import Metrics


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


class ReplySender:
    def __init__(
        self,
        targets: Mapping[str, DeliveryTarget],
        records: DeliveryRecords,
        *,
        policy: RetryPolicy | None = None,
        metrics: Metrics | None = None,
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self._metrics = metrics
        self._targets = targets
        self._records = records
        self._policy = policy or RetryPolicy()
        self._log = logger or structlog.get_logger("relaybot.delivery")

    async def send(self, reply: Reply) -> DeliveryRecord:
        """Deliver with retries; returns the final record (sent, kept, failed, dead or unknown)."""
        record = DeliveryRecord(reply_id=reply.id, channel=reply.channel, session_id=reply.session_id)
        target = self._targets.get(reply.channel)
        if target is None:
            return await self._finish(record, "dead", f"no channel adapter for {reply.channel!r} in this process")
        while True:
            record.attempts += 1
            try:
                result = await target.deliver(reply)
            except DeliveryError as exc:
                if exc.outcome_unknown and not target.capabilities.idempotent_sends:
                    # It may have arrived: a second send could answer twice. Recorded for a person.
                    return await self._finish(record, "unknown", str(exc))
                if not exc.retryable:
                    return await self._finish(record, "failed", str(exc))
                if record.attempts >= self._policy.attempts:
                    return await self._finish(record, "dead", str(exc))
                delay = self._policy.delay(record.attempts, exc.retry_after)
                record.error = str(exc)
                await self._records.put(record)
                if self._metrics is not None:
                    self._metrics.delivery_retries.labels(reply.channel).inc()
                await self._log.awarning(
                    "delivery_retry", reply_id=reply.id, attempt=record.attempts, delay=delay, error=str(exc)
                )
                await asyncio.sleep(delay)
                continue
            record.channel_message_ids = result.channel_message_ids
            return await self._finish(record, "sent" if result.delivered else "kept", result.detail or None)

    async def _finish(self, record: DeliveryRecord, status: str, error: str | None) -> DeliveryRecord:
        record.status = status  # type: ignore[assignment]
        record.error = error
        await self._records.put(record)
        if self._metrics is not None:
            self._metrics.deliveries.labels(record.channel, status).inc()
        if status in ("failed", "dead", "unknown"):
            await self._log.aerror(
                "delivery_failed",
                reply_id=record.reply_id,
                status=status,
                attempts=record.attempts,
                error=error,
            )
        return record
