"""What happened to each reply: pending, sent, kept, failed, dead or unknown, with the channel's ids.

Backends side by side: memory.py (one process), redis.py (every process).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Literal, Protocol

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
