"""Per-conversation locks: turns of one conversation run one at a time, in order."""

from core.locks.base import ConversationLocks

__all__ = ["ConversationLocks"]
