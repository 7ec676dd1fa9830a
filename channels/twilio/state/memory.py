"""Twilio state in this process only (the oldest windows and statuses forgotten beyond `keep`)."""

from __future__ import annotations

from collections import OrderedDict


class MemoryTwilioState:
    def __init__(self, *, keep: int = 100_000) -> None:
        self._opted_out: set[str] = set()
        self._wrote: OrderedDict[str, float] = OrderedDict()
        self._statuses: OrderedDict[str, dict[str, str]] = OrderedDict()
        self._contents: dict[str, str] = {}
        self._keep = keep

    async def opt_out(self, number: str) -> None:
        self._opted_out.add(number)

    async def opt_in(self, number: str) -> None:
        self._opted_out.discard(number)

    async def is_opted_out(self, number: str) -> bool:
        return number in self._opted_out

    async def wrote_at(self, address: str, at: float) -> None:
        self._wrote[address] = at
        self._wrote.move_to_end(address)
        while len(self._wrote) > self._keep:
            self._wrote.popitem(last=False)

    async def last_wrote(self, address: str) -> float | None:
        return self._wrote.get(address)

    async def set_status(self, reply_id: str, message_sid: str, status: str) -> None:
        self._statuses.setdefault(reply_id, {})[message_sid] = status
        while len(self._statuses) > self._keep:
            self._statuses.popitem(last=False)

    async def statuses(self, reply_id: str) -> dict[str, str]:
        return dict(self._statuses.get(reply_id, {}))

    async def content_sid(self, key: str) -> str | None:
        return self._contents.get(key)

    async def remember_content(self, key: str, sid: str) -> None:
        self._contents[key] = sid

    async def forget_content(self, key: str) -> None:
        self._contents.pop(key, None)

    async def close(self) -> None:
        return None
