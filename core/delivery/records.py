"""What happened to each reply: pending, sent, kept, failed, dead or unknown, with the channel's ids."""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Literal, Protocol

import redis.asyncio as aioredis

from core.redisio import describe, redis_errors, text

Status = Literal["pending", "sent", "kept", "failed", "dead", "unknown"]
RECORD_TTL_SECONDS = 7 * 24 * 3600


@dataclass(slots=True, kw_only=True)
class DeliveryRecord:
    reply_id: str
    channel: str
    session_id: str
    status: Status = "pending"
    attempts: int = 0
    error: str | None = None
    channel_message_ids: tuple[str, ...] = ()
    updated_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str) -> DeliveryRecord:
        data = json.loads(raw)
        data["channel_message_ids"] = tuple(data.get("channel_message_ids", ()))
        return cls(**data)


class DeliveryRecords(Protocol):
    async def put(self, record: DeliveryRecord) -> None: ...

    async def get(self, reply_id: str) -> DeliveryRecord | None: ...


class MemoryDeliveryRecords:
    def __init__(self, *, keep: int = 10_000) -> None:
        self._records: OrderedDict[str, DeliveryRecord] = OrderedDict()
        self._keep = keep

    async def put(self, record: DeliveryRecord) -> None:
        record.updated_at = datetime.now(UTC).isoformat()
        self._records[record.reply_id] = record
        self._records.move_to_end(record.reply_id)
        while len(self._records) > self._keep:
            self._records.popitem(last=False)

    async def get(self, reply_id: str) -> DeliveryRecord | None:
        return self._records.get(reply_id)


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
