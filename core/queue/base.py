"""The OrderedQueue seam: at-least-once, partitioned, with per-partition order.

Each entry belongs to a partition (a conversation) and gets a ticket, 1, 2, 3... in the order it
was added to that partition. Consumers handle an entry only when its partition's last done
ticket is the one before it (see `core.queue.consumer`), so any number of consumers keep each
conversation in order while different conversations run in parallel. An entry that is never
acknowledged (its consumer crashed) is handed out again after a visibility timeout; after
`max_attempts` it is moved to the dead letters with its last error.

The queue is also the conversation's lock: `start` checks the entry's turn and claims the
partition in one step (the claim expires if its holder dies, and `touch` renews it), and
`finish` records the ticket as done, gives the claim back and acknowledges the entry in one
step; on Redis each is one round trip.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol


class QueueClosed(Exception):
    """The queue was closed: no more entries for this consumer."""


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueEntry:
    id: str
    partition: str
    ticket: int
    payload: str
    attempt: int = 1

    def with_attempt(self, attempt: int) -> QueueEntry:
        # Not dataclasses.replace: this runs for every entry handled, at a third of its cost.
        return QueueEntry(
            id=self.id, partition=self.partition, ticket=self.ticket, payload=self.payload, attempt=attempt
        )


#: what `start` found: `run` the entry holds its partition and it is its turn (or it was forced
#: past a gap); `late` it holds the partition to handle a ticket that was jumped over earlier;
#: `done` it was handled already (a redelivery: acknowledge it); `wait` an earlier ticket is not
#: done yet; `busy` another consumer holds the partition
StartState = Literal["run", "late", "done", "wait", "busy"]


@dataclass(frozen=True, slots=True)
class Start:
    state: StartState
    #: the partition's last done ticket when `start` looked
    done: int
    #: with `run` and `late`, how many times the entry has been started now, this time included
    #: (counted when claimed, in the same step); 0 otherwise
    attempt: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadEntry:
    id: str
    partition: str
    payload: str
    attempts: int
    error: str
    failed_at: datetime


class OrderedQueue(Protocol):
    @property
    def max_attempts(self) -> int: ...

    async def add(self, partition: str, payload: str, *, dedupe_key: str | None = None) -> int | None:
        """Append to the queue; returns the entry's ticket within its partition.

        With a `dedupe_key`, the add happens at most once per key (atomically): a second add with
        the same key returns None and queues nothing.
        """
        ...

    async def start(self, entry: QueueEntry, *, force: bool = False) -> Start:
        """Claim the entry's partition if it is the entry's turn (`force`: even past a gap, for an
        entry that waited too long); `run` and `late` hold the claim until `finish`, and count
        the attempt (`Start.attempt`, which `max_attempts` is checked against)."""
        ...

    async def finish(self, entry: QueueEntry, *, handled: bool) -> bool:
        """Give back the claim `start` took. `handled`: also record the ticket as done and
        acknowledge the entry. False if the claim had expired meanwhile (a stall: another consumer
        may have taken the partition)."""
        ...

    async def reclaim(self, count: int) -> list[QueueEntry]:
        """Up to `count` entries whose consumer stopped touching them for the visibility timeout
        (it crashed or hung), now this consumer's. Raises QueueClosed once the queue is closed.
        """
        ...

    async def read(self, count: int) -> list[QueueEntry]:
        """Up to `count` new entries for this consumer, waiting briefly for some; [] when there are
        none yet. Raises QueueClosed once the queue is closed.

        The caller asks only for as many as it can start handling (and touching) at once: an
        entry read but left untouched would be taken over by another consumer as if we had died.
        """
        ...

    async def ack(self, entry: QueueEntry) -> None:
        """Done with the entry: it is never handed out again."""
        ...

    async def fail(self, entry: QueueEntry, error: str) -> None:
        """Record why handling failed; the entry is handed out again later."""
        ...

    async def touch(self, entry: QueueEntry) -> None:
        """Still working on it: restart the visibility timeout (and the claim's, if it holds one)."""
        ...

    async def release(self, entry: QueueEntry) -> None:
        """Give the entry back at once (shutting down): another consumer takes it now."""
        ...

    async def dead_letter(self, entry: QueueEntry, error: str) -> None:
        """Move the entry to the dead letters, for a person to inspect and replay."""
        ...

    async def dead(self, limit: int = 100) -> list[DeadEntry]: ...

    async def replay(self, dead_id: str) -> bool:
        """Put a dead entry back at the end of its partition; False if there is no such entry."""
        ...

    async def last_done(self, partition: str) -> int:
        """The highest ticket of the partition that has been handled (0 if none)."""
        ...

    async def mark_done(self, partition: str, ticket: int) -> None:
        """Record the ticket as handled (never moves backwards).

        Jumping ahead (a predecessor never showed up in time) records the tickets in between as
        skipped, so a late predecessor is still handled rather than taken for a duplicate.
        """
        ...

    def progress(self) -> AsyncIterator[str]:
        """Partitions as consumers finish their entries or give back their claims (best effort: a
        waiting consumer still looks again now and then, since a notice can be missed while
        reconnecting)."""
        ...

    async def pending(self) -> int:
        """Entries added and not yet acknowledged."""
        ...

    async def lag(self) -> float:
        """Seconds since the oldest entry not yet acknowledged was added (0 when there is none)."""
        ...

    async def close(self) -> None:
        """Stop handing out entries; iterators end."""
        ...
