"""The embedded queue: an asyncio queue in one process. Nothing to reclaim: a crash ends it all."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from core.queue.base import DeadEntry, QueueClosed, QueueEntry, Start

_CLOSED = object()


class MemoryQueue:
    def __init__(self, *, max_attempts: int = 5, maxsize: int = 10_000, dedupe_keep: int = 100_000) -> None:
        self._queue: asyncio.Queue[QueueEntry | object] = asyncio.Queue(maxsize=maxsize)
        self._ids = itertools.count(1)
        self._tickets: dict[str, int] = {}
        self._done: dict[str, int] = {}
        self._skipped: dict[str, set[int]] = {}
        self._attempts: dict[str, int] = {}
        self._errors: dict[str, str] = {}
        self._unacked: dict[str, QueueEntry] = {}
        self._added: dict[str, float] = {}
        self._dead: dict[str, DeadEntry] = {}
        self._dedupe: OrderedDict[str, None] = OrderedDict()
        self._dedupe_keep = dedupe_keep
        self._closed = False
        self._max_attempts = max_attempts
        #: partition -> id of the entry holding it
        self._claims: dict[str, str] = {}
        self._listeners: list[asyncio.Queue[str]] = []
        #: partitions a `start` was refused for since their last `finish`
        self._waited_on: set[str] = set()

    @property
    def max_attempts(self) -> int:
        return self._max_attempts

    async def add(self, partition: str, payload: str, *, dedupe_key: str | None = None) -> int | None:
        if self._closed:
            raise RuntimeError("the queue is closed")
        if dedupe_key is not None:
            if dedupe_key in self._dedupe:
                return None
            self._dedupe[dedupe_key] = None
            while len(self._dedupe) > self._dedupe_keep:
                self._dedupe.popitem(last=False)  # bounded memory: the oldest ids are forgotten first
        ticket = self._tickets.get(partition, 0) + 1
        self._tickets[partition] = ticket
        entry = QueueEntry(id=str(next(self._ids)), partition=partition, ticket=ticket, payload=payload)
        self._unacked[entry.id] = entry
        self._added[entry.id] = time.monotonic()
        await self._queue.put(entry)
        return ticket

    async def start(self, entry: QueueEntry, *, force: bool = False) -> Start:
        done = self._done.get(entry.partition, 0)
        late = entry.ticket <= done
        if late and entry.ticket not in self._skipped.get(entry.partition, set()):
            return Start("done", done)
        if not late and entry.ticket > done + 1 and not force:
            self._waited_on.add(entry.partition)
            return Start("wait", done)
        if self._claims.get(entry.partition, entry.id) != entry.id:
            self._waited_on.add(entry.partition)
            return Start("busy", done)
        self._claims[entry.partition] = entry.id
        attempt = self._attempts[entry.id] = self._attempts.get(entry.id, 0) + 1
        if late:
            self._skipped[entry.partition].discard(entry.ticket)
            return Start("late", done, attempt)
        return Start("run", done, attempt)

    async def finish(self, entry: QueueEntry, *, handled: bool) -> bool:
        if handled:
            await self.mark_done(entry.partition, entry.ticket)
            self._forget(entry.id)
        ours = self._claims.get(entry.partition) == entry.id
        if ours:
            del self._claims[entry.partition]
        if entry.partition in self._waited_on:
            # Only partitions an entry waits on: the consumer that finished wakes its own waiters itself.
            self._waited_on.discard(entry.partition)
            for listener in self._listeners:
                listener.put_nowait(entry.partition)
        return ours

    async def reclaim(self, count: int) -> list[QueueEntry]:
        """One process: no other consumer could have died holding entries."""
        if self._closed:
            raise QueueClosed
        return []

    async def read(self, count: int, *, wait_seconds: float = 1.0) -> list[QueueEntry]:
        if self._closed:
            raise QueueClosed
        got: list[QueueEntry] = []
        if not self._queue.empty():
            # Entries are waiting: no timer to arm (one costs more than the read itself).
            item = self._queue.get_nowait()
        else:
            try:
                # A timeout, not wait_for: wait_for wraps the get in a task of its own, on every read.
                async with asyncio.timeout(wait_seconds):
                    item = await self._queue.get()
            except TimeoutError:
                return got
        while True:
            if item is _CLOSED:
                self._queue.put_nowait(_CLOSED)  # let every other consumer see the end too
                if not got:
                    raise QueueClosed
                return got
            assert isinstance(item, QueueEntry)
            if item.id in self._unacked:  # else acknowledged or dead-lettered since it was queued again
                got.append(item)
            if len(got) >= count or self._queue.empty():
                return got
            item = self._queue.get_nowait()

    async def ack(self, entry: QueueEntry) -> None:
        self._forget(entry.id)

    def _forget(self, entry_id: str) -> None:
        self._unacked.pop(entry_id, None)
        self._added.pop(entry_id, None)
        self._attempts.pop(entry_id, None)
        self._errors.pop(entry_id, None)

    async def fail(self, entry: QueueEntry, error: str) -> None:
        # One process: "later" is now, at the back of the queue.
        self._errors[entry.id] = error
        if not self._closed and entry.id in self._unacked:
            self._queue.put_nowait(self._unacked[entry.id])

    async def touch(self, entry: QueueEntry) -> None:
        """Nothing times out in one process."""

    async def release(self, entry: QueueEntry) -> None:
        """Nobody else could take it: it ends with the process."""

    async def dead_letter(self, entry: QueueEntry, error: str) -> None:
        last = self._errors.get(entry.id)
        self._dead[entry.id] = DeadEntry(
            id=entry.id,
            partition=entry.partition,
            payload=entry.payload,
            attempts=entry.attempt,
            error=f"{error}; last error: {last}" if last else error,
            failed_at=datetime.now(UTC),
        )
        self._forget(entry.id)

    async def dead(self, limit: int = 100) -> list[DeadEntry]:
        return list(self._dead.values())[:limit]

    async def replay(self, dead_id: str) -> bool:
        entry = self._dead.pop(dead_id, None)
        if entry is None:
            return False
        await self.add(entry.partition, entry.payload)
        return True

    async def last_done(self, partition: str) -> int:
        return self._done.get(partition, 0)

    async def mark_done(self, partition: str, ticket: int) -> None:
        done = self._done.get(partition, 0)
        if ticket <= done:
            return
        self._skipped.setdefault(partition, set()).update(range(done + 1, ticket))
        self._done[partition] = ticket
        if ticket >= self._tickets.get(partition, 0) and not self._skipped.get(partition):
            # Nothing of this conversation is in flight: forget it so memory follows live conversations.
            self._done.pop(partition, None)
            self._tickets.pop(partition, None)
            self._skipped.pop(partition, None)

    async def progress(self) -> AsyncIterator[str]:
        listener: asyncio.Queue[str] = asyncio.Queue()
        self._listeners.append(listener)
        try:
            while True:
                yield await listener.get()
        finally:
            self._listeners.remove(listener)

    async def pending(self) -> int:
        return len(self._unacked)

    async def lag(self) -> float:
        # Entries are kept in insertion order; the first unacknowledged one is the oldest.
        for entry_id in self._unacked:
            return time.monotonic() - self._added[entry_id]
        return 0.0

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put_nowait(_CLOSED)
