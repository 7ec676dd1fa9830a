"""Which conversations are open at the desk (waiting for or held by a person).

The state itself is in each session; the index only lists the sessions to look at, so the queue
and the timeout sweep never scan every session. An entry whose session went back to the bot (or
expired) is dropped by whoever reads it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol

__all__ = ["HandoffIndex", "MemoryHandoffIndex"]


class HandoffIndex(Protocol):
    async def add(self, session_id: str, at: datetime) -> None:
        """List the session (again: `at` is replaced), with when the person was asked for."""
        ...

    async def remove(self, session_id: str) -> None: ...

    async def members(self) -> list[tuple[str, datetime]]:
        """Every listed session with its time, oldest first."""
        ...


class MemoryHandoffIndex:
    """`HandoffIndex` for one process."""

    def __init__(self) -> None:
        self._open: dict[str, datetime] = {}

    async def add(self, session_id: str, at: datetime) -> None:
        self._open[session_id] = at.astimezone(UTC)

    async def remove(self, session_id: str) -> None:
        self._open.pop(session_id, None)

    async def members(self) -> list[tuple[str, datetime]]:
        return sorted(self._open.items(), key=lambda item: item[1])
