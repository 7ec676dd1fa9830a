"""The bus between channel adapters and core workers: envelopes on an ordered queue."""

from core.bus.base import Bus
from core.bus.queue import QueueBus

__all__ = ["Bus", "QueueBus"]
