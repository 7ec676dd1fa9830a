"""Update ids seen recently, so a re-sent update is skipped at once.

A TTL set, not a high-water mark: update ids are not contiguous, they can jump. It only saves work:
the authority on duplicates is the bus, which takes each (chat, message id) once across processes.
"""

from __future__ import annotations

import time
from collections import OrderedDict

SEEN_TTL_SECONDS = 24 * 3600  # Telegram gives up re-sending an update after about a day
SEEN_MAX = 100_000


class SeenUpdates:
    """Recently seen keys, forgotten after `ttl` seconds or beyond `size` entries (oldest first)."""

    def __init__(self, *, ttl: float = SEEN_TTL_SECONDS, size: int = SEEN_MAX) -> None:
        self._entries: OrderedDict[int, float] = OrderedDict()
        self._ttl = ttl
        self._size = size

    def __contains__(self, key: int) -> bool:
        expires = self._entries.get(key)
        return expires is not None and expires > time.monotonic()

    def add(self, key: int) -> None:
        now = time.monotonic()
        self._entries[key] = now + self._ttl
        self._entries.move_to_end(key)
        while self._entries and (len(self._entries) > self._size or next(iter(self._entries.values())) <= now):
            self._entries.popitem(last=False)
