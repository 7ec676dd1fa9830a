"""In-process stores: the embedded default for sessions, and a fast double for history in unit tests.

Nothing here survives a restart; `relaybot run` on one machine accepts that for active sessions,
while the durable transcript goes to SQL (`core.stores.sql`).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import MappingProxyType

from core.errors import StoreError
from core.stores.base import Role, Session, StoredMessage, Summary, SwapOutcome, UserFact

__all__ = ["MemoryHistoryStore", "MemoryReadCache", "MemorySessionStore"]


def _copy_message(message: StoredMessage) -> StoredMessage:
    # `meta` is a caller-owned mapping; snapshot it so the store behaves like a serializing backend.
    return message.restamped(seq=message.seq, created_at=message.created_at, meta=dict(message.meta))


def _as_utc(value: datetime) -> datetime:
    # Same rule as the SQL store, so code tested against this double sees what production returns.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _copy_session(session: Session) -> Session:
    return replace(session, fields=dict(session.fields))


@dataclass(slots=True)
class _Entry:
    session: Session
    expires_at: float
    messages: list[StoredMessage] = field(default_factory=list)


class MemorySessionStore:
    """Sessions in a dict, each living `ttl_seconds` past its last access.

    Entries are kept in last-access order: since every access pushes the expiry to
    `now + ttl` with the same ttl, the entries that expire first are always at the front, so
    sweeping them is cheap and abandoned conversations do not accumulate.
    """

    def __init__(self, ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        self._ttl = ttl_seconds
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def _sweep(self, now: float) -> None:
        while self._entries:
            session_id, entry = next(iter(self._entries.items()))
            if entry.expires_at > now:
                break
            del self._entries[session_id]

    def _touch(self, session_id: str) -> _Entry | None:
        now = self._clock()
        self._sweep(now)
        entry = self._entries.get(session_id)
        if entry is None:
            return None
        entry.expires_at = now + self._ttl
        self._entries.move_to_end(session_id)
        return entry

    def _require(self, session_id: str) -> _Entry:
        entry = self._touch(session_id)
        if entry is None:
            raise StoreError(f"session {session_id!r} does not exist or has expired; create it first")
        return entry

    async def load(self, session_id: str) -> Session | None:
        entry = self._touch(session_id)
        return None if entry is None else _copy_session(entry.session)

    async def load_with_recent(self, session_id: str, limit: int) -> tuple[Session | None, list[StoredMessage]]:
        entry = self._touch(session_id)
        if entry is None:
            return None, []
        return _copy_session(entry.session), entry.messages[-limit:] if limit > 0 else []

    async def create(self, session: Session) -> None:
        now = self._clock()
        self._sweep(now)
        self._entries.pop(session.session_id, None)
        self._entries[session.session_id] = _Entry(_copy_session(session), now + self._ttl)

    async def append(self, session_id: str, messages: Sequence[StoredMessage], *, keep: int | None = None) -> None:
        entry = self._require(session_id)
        # Stored frozen (read-only meta), so reads can hand out the same objects without copying.
        entry.messages.extend(
            m.restamped(seq=m.seq, created_at=m.created_at, meta=MappingProxyType(dict(m.meta))) for m in messages
        )
        if keep and len(entry.messages) > keep:
            del entry.messages[:-keep]

    async def recent(self, session_id: str, limit: int) -> list[StoredMessage]:
        entry = self._touch(session_id)
        if entry is None or limit <= 0:
            return []
        return entry.messages[-limit:]

    async def set_fields(self, session_id: str, fields: Mapping[str, str]) -> None:
        self._require(session_id).session.fields.update(fields)

    async def swap_fields(
        self, session_id: str, expect: Mapping[str, Collection[str]], fields: Mapping[str, str]
    ) -> SwapOutcome:
        # No await between the check and the write: atomic within the event loop.
        entry = self._touch(session_id)
        if entry is None:
            return "missing"
        current = entry.session.fields
        if any(current.get(name, "") not in allowed for name, allowed in expect.items()):
            return "mismatch"
        current.update(fields)
        return "swapped"

    async def delete(self, session_id: str) -> None:
        self._entries.pop(session_id, None)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None


class MemoryHistoryStore:
    """The durable-history contract without durability: for unit tests and throwaway runs."""

    def __init__(self) -> None:
        self._messages: dict[str, list[StoredMessage]] = {}
        #: (session, turn key) -> (first seq, count) of what that turn stored
        self._turns: dict[tuple[str, str], tuple[int, int]] = {}
        self._facts: dict[tuple[str, str], dict[str, UserFact]] = {}
        self._summaries: dict[str, Summary] = {}

    async def append(
        self,
        *,
        session_id: str,
        bot: str,
        channel: str,
        user_id: str,
        messages: Sequence[StoredMessage],
        turn_key: str | None = None,
    ) -> list[StoredMessage]:
        if turn_key is not None and (session_id, turn_key) in self._turns:
            first, count = self._turns[(session_id, turn_key)]
            return [_copy_message(m) for m in self._messages[session_id][first - 1 : first - 1 + count]]
        stored = self._messages.setdefault(session_id, [])
        if turn_key is not None and messages:
            self._turns[(session_id, turn_key)] = (len(stored) + 1, len(messages))
        saved = [
            replace(_copy_message(m), seq=len(stored) + i, created_at=_as_utc(m.created_at))
            for i, m in enumerate(messages, start=1)
        ]
        stored.extend(saved)
        return [_copy_message(m) for m in saved]

    async def recent(self, session_id: str, limit: int) -> list[StoredMessage]:
        if limit <= 0:
            return []
        return [_copy_message(m) for m in self._messages.get(session_id, [])[-limit:]]

    async def after(
        self, session_id: str, seq: int, *, role: Role | None = None, last: int | None = None
    ) -> list[StoredMessage]:
        # Positions are seq - 1, so slicing skips the earlier messages without scanning them.
        tail = self._messages.get(session_id, [])[max(seq, 0) :]
        found = [_copy_message(m) for m in tail if role is None or m.role == role]
        return found[-last:] if last else ([] if last == 0 else found)

    async def remember(self, *, bot: str, user_id: str, facts: Sequence[UserFact]) -> None:
        known = self._facts.setdefault((bot, user_id), {})
        for fact in facts:
            fact = replace(fact, updated_at=_as_utc(fact.updated_at))
            stored = known.get(fact.key)
            if stored is None or stored.updated_at <= fact.updated_at:
                known[fact.key] = fact

    async def facts(self, bot: str, user_id: str) -> list[UserFact]:
        known = self._facts.get((bot, user_id), {})
        return [known[key] for key in sorted(known)]

    async def forget(self, bot: str, user_id: str, keys: Sequence[str] | None = None) -> int:
        known = self._facts.get((bot, user_id), {})
        doomed = list(known) if keys is None else [key for key in keys if key in known]
        for key in doomed:
            del known[key]
        return len(doomed)

    async def summary(self, session_id: str) -> Summary | None:
        return self._summaries.get(session_id)

    async def facts_and_summary(self, bot: str, user_id: str, session_id: str) -> tuple[list[UserFact], Summary | None]:
        return await self.facts(bot, user_id), await self.summary(session_id)

    async def save_summary(self, session_id: str, summary: Summary) -> bool:
        stored = self._summaries.get(session_id)
        if stored is not None and stored.through_seq >= summary.through_seq:
            return False
        self._summaries[session_id] = replace(summary, updated_at=_as_utc(summary.updated_at))
        return True

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None


class MemoryReadCache:
    """`ReadCache` for one process: a bounded dict, the least recently used entries dropped first."""

    def __init__(self, *, max_entries: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._values: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._generations: dict[str, int] = {}
        self._max = max_entries
        self._clock = clock

    async def get(self, key: str) -> tuple[str | None, str]:
        generation = str(self._generations.get(key, 0))
        entry = self._values.get(key)
        if entry is None:
            return None, generation
        if entry[1] <= self._clock():
            del self._values[key]
            return None, generation
        self._values.move_to_end(key)
        return entry[0], generation

    async def set(self, key: str, value: str, generation: str, ttl_seconds: int) -> None:
        if str(self._generations.get(key, 0)) != generation:
            return  # invalidated while the caller read the store: its value may be the old one
        self._values[key] = (value, self._clock() + ttl_seconds)
        self._values.move_to_end(key)
        while len(self._values) > self._max:
            old, _ = self._values.popitem(last=False)
            # Nobody can hold a generation of a key read that long ago in a live turn.
            self._generations.pop(old, None)

    async def get_many(self, keys: Sequence[str]) -> list[tuple[str | None, str]]:
        return [await self.get(key) for key in keys]

    async def invalidate(self, key: str) -> None:
        self._values.pop(key, None)
        self._generations[key] = self._generations.get(key, 0) + 1

    async def replace(self, key: str, value: str, ttl_seconds: int) -> None:
        await self.invalidate(key)
        await self.set(key, value, str(self._generations[key]), ttl_seconds)
