"""Reply delivery: the outbox stores each reply, then sends it through its channel with retries."""

from core.delivery.outbox import Outbox, OutboxRecord, RetryPolicy

__all__ = ["Outbox", "OutboxRecord", "RetryPolicy"]
