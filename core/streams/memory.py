"""Streams and sent parts in this process only (embedded mode), the oldest forgotten beyond `keep`."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

from core.streams.base import StreamState, state_of

V = TypeVar("V")


class MemoryStreamRegistry:
    def __init__(self, *, keep: int = 10_000) -> None:
        self._entries: OrderedDict[str, dict[str, str]] = OrderedDict()
        self._parts: OrderedDict[str, list[str]] = OrderedDict()
        self._keep = keep

    def _entry(self, key: str) -> dict[str, str]:
        return _bounded(self._entries, key, dict, self._keep)

    async def claim(self, reply_key: str) -> bool:
        entry = self._entry(reply_key)
        if "owner" in entry:
            return False
        entry["owner"] = "1"
        return True

    async def set_ref(self, reply_key: str, message_ref: str) -> None:
        self._entry(reply_key)["ref"] = message_ref

    async def get(self, reply_key: str) -> StreamState:
        return state_of(self._entries.get(reply_key, {}))

    async def close(self, reply_key: str, final_text: str) -> StreamState:
        entry = self._entry(reply_key)
        before = state_of(entry)
        entry["closed"] = "1"
        entry["final"] = final_text
        return before

    async def sent_parts(self, reply_id: str) -> list[str]:
        return list(self._parts.get(reply_id, ()))

    async def part_sent(self, reply_id: str, message_id: str) -> None:
        _bounded(self._parts, reply_id, list, self._keep).append(message_id)


def _bounded(entries: OrderedDict[str, V], key: str, new: Callable[[], V], keep: int) -> V:
    """The entry under `key` (made with `new` if missing); the oldest entries go beyond `keep`."""
    entry = entries.setdefault(key, new())
    while len(entries) > keep:
        entries.popitem(last=False)
    return entry
