"""Session and history stores: protocols in `base`, one module per backend."""

from core.stores.base import HistoryStore, Session, SessionStore, StoredMessage

__all__ = ["HistoryStore", "Session", "SessionStore", "StoredMessage"]
