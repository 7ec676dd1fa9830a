"""Delivery records shared through Redis (`<prefix>:delivery:<reply id>`, kept a week)."""

from __future__ import annotations

from datetime import UTC, datetime

import redis.asyncio as aioredis

from core.delivery.records.base import RECORD_TTL_SECONDS, DeliveryRecord
from core.redisio import describe, redis_errors, text


class RedisDeliveryRecords:
    def __init__(self, client: aioredis.Redis, *, prefix: str = "relaybot") -> None:
        self._client = client
        self._prefix = prefix
        self._where = describe(client)

    async def put(self, record: DeliveryRecord) -> None:
        record.updated_at = datetime.now(UTC).isoformat()
        with redis_errors(self._where, "recording a delivery", prefix=self._prefix):
            await self._client.set(
                f"{self._prefix}:delivery:{record.reply_id}", record.to_json(), ex=RECORD_TTL_SECONDS
            )

    async def get(self, reply_id: str) -> DeliveryRecord | None:
        with redis_errors(self._where, "reading a delivery record", prefix=self._prefix):
            raw = await self._client.get(f"{self._prefix}:delivery:{reply_id}")
        return DeliveryRecord.from_json(text(raw)) if raw is not None else None
