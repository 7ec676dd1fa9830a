"""Claims on message ids, so duplicates are processed once."""

from core.dedupe.base import DedupeStore

__all__ = ["DedupeStore"]
