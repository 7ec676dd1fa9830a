"""The store seams.

`SessionStore` holds active conversations (fields + a window of recent messages) with a TTL that
is extended on every access: memory when embedded, Redis in production. `HistoryStore` is the
durable, append-only transcript (SQL), plus what memory keeps beside it: facts per user and a
running summary per session. Both are append-only per turn: the cost of a turn never
grows with the length of the conversation.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from core.frozen import fast_init
from core.tokens import estimate_tokens

Role = Literal["user", "assistant", "system"]

#: what `SessionStore.swap_fields` did: wrote the fields, found another value, or found no session
SwapOutcome = Literal["swapped", "mismatch", "missing"]


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class StoredMessage:
    """One message of a conversation.

    `ref` is the channel's id for the user message (or, on an assistant message, the id of the
    message it answers); `seq` is the position in the durable history, set once it is saved;
    `meta` carries small string flags (e.g. `kind=notice` for rate-limit notices, which are
    shown to the user but kept out of the model's context).
    """

    role: Role
    content: str
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    ref: str | None = None
    seq: int | None = None
    meta: Mapping[str, str] = field(default_factory=dict)
    #: the content's token estimate once `tokens` has computed it
    _tokens: int | None = field(default=None, init=False, repr=False, compare=False)
    #: `is_notice` once read (the window asks it of every message on every turn)
    _notice: bool | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def is_notice(self) -> bool:
        notice = self._notice
        if notice is None:
            # Kept in the message: `meta` is a dict of its own, elsewhere in memory, and a session's
            # window is walked on every turn long after it was last touched.
            notice = self.meta.get("kind") == "notice"
            object.__setattr__(self, "_notice", notice)
        return notice

    @property
    def tokens(self) -> int:
        """The offline token estimate of `content` (`core.tokens`), computed once per message.

        A message stays in its session's window for many turns, and each turn's window, its fold
        check and its fold plan weigh it again. Read from the shared estimate cache, the window
        alone was 5% of the widget's CPU per message: with thousands of conversations' texts in
        it, each lookup reached memory no longer in the CPU's cache.
        """
        tokens = self._tokens
        if tokens is None:
            tokens = estimate_tokens(self.content)
            object.__setattr__(self, "_tokens", tokens)  # frozen: a cache of its own content, not a change
        return tokens

    def restamped(self, *, seq: int | None, created_at: datetime, meta: Mapping[str, str]) -> StoredMessage:
        """This message with its place, time and flags as stored. `dataclasses.replace` does the
        same generically at three times the cost, and every message stored goes through here."""
        copy = StoredMessage(
            role=self.role, content=self.content, created_at=created_at, ref=self.ref, seq=seq, meta=meta
        )
        if self._tokens is not None:
            object.__setattr__(copy, "_tokens", self._tokens)
        return copy

    def to_dict(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "content": self.content,
            "created_at": self.created_at.isoformat(),
            "ref": self.ref,
            "seq": self.seq,
            "meta": dict(self.meta),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StoredMessage:
        return cls(
            role=data["role"],
            content=data["content"],
            created_at=datetime.fromisoformat(data["created_at"]),
            ref=data.get("ref"),
            seq=data.get("seq"),
            meta=dict(data.get("meta") or {}),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class UserFact:
    """Something a user said about themselves ("plan" = "Pro"), kept per bot and user.

    `source` is the message it came from and `updated_at` when that message was sent: a fact
    replaces a stored one of the same key only if it is not older, so a late extraction of an
    earlier message can never undo a later correction.
    """

    key: str
    value: str
    source: str = ""
    updated_at: datetime = field(default_factory=lambda: datetime.now(UTC))


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Summary:
    """The running summary of a session's older messages: every message up to `through_seq`."""

    text: str
    through_seq: int
    updated_at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(slots=True, kw_only=True)
class Session:
    """An active conversation: who, where, and free-form string fields for multi-step flows."""

    session_id: str
    bot: str
    channel: str
    conversation_id: str
    user_id: str
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    fields: dict[str, str] = field(default_factory=dict)


class SessionStore(Protocol):
    """Active sessions with a TTL; every read or write extends it."""

    async def load(self, session_id: str) -> Session | None:
        """The session, or None if it never existed or expired. Extends the TTL."""
        ...

    async def load_with_recent(self, session_id: str, limit: int) -> tuple[Session | None, list[StoredMessage]]:
        """`load` and `recent(limit)` in one go (one round trip where the backend is remote)."""
        ...

    async def create(self, session: Session) -> None:
        """Store a new session (replacing any expired remains)."""
        ...

    async def append(self, session_id: str, messages: Sequence[StoredMessage], *, keep: int | None = None) -> None:
        """Append messages to the session's list; never rewrites earlier ones. Extends the TTL.

        With `keep`, only the newest `keep` messages stay in the list (the window a bot can use);
        the durable history keeps them all.
        """
        ...

    async def recent(self, session_id: str, limit: int) -> list[StoredMessage]:
        """The last `limit` messages, oldest first."""
        ...

    async def set_fields(self, session_id: str, fields: Mapping[str, str]) -> None:
        """Set (merge) string fields on the session. Extends the TTL."""
        ...

    async def swap_fields(
        self, session_id: str, expect: Mapping[str, Collection[str]], fields: Mapping[str, str]
    ) -> SwapOutcome:
        """Set `fields` only if each field in `expect` holds one of its values ("" also matches an
        unset field), atomically: of two racing callers expecting the same value, one swaps and the
        other sees "mismatch". Extends the TTL; "missing" if the session does not exist."""
        ...

    async def delete(self, session_id: str) -> None: ...

    async def ping(self) -> None:
        """Raise StoreError if the backend is unreachable."""
        ...

    async def close(self) -> None: ...


class HistoryStore(Protocol):
    """The durable, append-only transcript of every conversation."""

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
        """Append messages; returns them with their `seq` (1, 2, 3... per session) set.

        With a `turn_key` (the inbound message's dedupe key), the append happens once per key and
        session: a turn run again after a crash stores nothing and gets back what the first run stored.
        """
        ...

    async def recent(self, session_id: str, limit: int) -> list[StoredMessage]:
        """The last `limit` messages of a session, oldest first."""
        ...

    async def after(
        self, session_id: str, seq: int, *, role: Role | None = None, last: int | None = None
    ) -> list[StoredMessage]:
        """Messages with a sequence number above `seq`, oldest first, optionally of one role;
        with `last`, only the newest `last` of them (read from the end, however many there are)."""
        ...

    async def remember(self, *, bot: str, user_id: str, facts: Sequence[UserFact]) -> None:
        """Store facts about a user; each replaces the stored fact of its key unless that one is newer."""
        ...

    async def facts(self, bot: str, user_id: str) -> list[UserFact]:
        """Everything remembered about a user of a bot, by key."""
        ...

    async def forget(self, bot: str, user_id: str, keys: Sequence[str] | None = None) -> int:
        """Forget the facts of `keys` (None: all of them); returns how many were forgotten."""
        ...

    async def summary(self, session_id: str) -> Summary | None:
        """The session's running summary, or None before its first fold."""
        ...

    async def facts_and_summary(self, bot: str, user_id: str, session_id: str) -> tuple[list[UserFact], Summary | None]:
        """`facts` and `summary` together: what every turn reads before answering."""
        ...

    async def save_summary(self, session_id: str, summary: Summary) -> bool:
        """Store a summary unless the stored one already covers as much (two workers folding at
        once keep the further one); True if it was stored."""
        ...

    async def ping(self) -> None:
        """Raise StoreError if the database is unreachable."""
        ...

    async def close(self) -> None: ...
