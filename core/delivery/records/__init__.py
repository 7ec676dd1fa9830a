"""Delivery records: the seam, with memory and Redis backends."""

from core.delivery.records.base import RECORD_TTL_SECONDS, DeliveryRecord, DeliveryRecords, Status

__all__ = ["RECORD_TTL_SECONDS", "DeliveryRecord", "DeliveryRecords", "Status"]
