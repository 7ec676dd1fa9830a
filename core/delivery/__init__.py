"""Reply delivery: the outbox stores each reply, then it is sent through its channel with retries."""

from core.delivery.outbox import InlineOutbox, Outbox, QueueOutbox
from core.delivery.records import DeliveryRecord, DeliveryRecords
from core.delivery.sender import ReplySender, RetryPolicy

__all__ = ["DeliveryRecord", "DeliveryRecords", "InlineOutbox", "Outbox", "QueueOutbox", "ReplySender", "RetryPolicy"]
