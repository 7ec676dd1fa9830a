"""Ordered work queues: the transport under the bus (envelopes) and the outbox (replies)."""

from core.queue.base import DeadEntry, OrderedQueue, QueueEntry

__all__ = ["DeadEntry", "OrderedQueue", "QueueEntry"]
