"""The bus between channel adapters and core workers."""

from core.bus.base import Bus, BusDelivery

__all__ = ["Bus", "BusDelivery"]
