"""Delivery records in this process only, the oldest forgotten beyond `keep`."""

from __future__ import annotations

from collections import OrderedDict
from datetime import UTC, datetime

from core.delivery.records.base import DeliveryRecord


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
