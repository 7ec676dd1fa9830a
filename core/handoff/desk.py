"""The seam between conversations and the people who take them over (issue 17).

A conversation is answered by the bot until a handler, a tool, the model or the user asks for a
person (`pending_human`); an operator takes it (`human`) and replies through the conversation's own
channel; handing back (or a pending request that waits too long) returns it to the bot. The state
lives with the session, so every process (adapters, workers, the console) sees the same one.

`HandoffDesk` is what the pipeline and the operator console use; it is implemented over the
session and history stores (and the Redis bus for live updates across processes).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal, Protocol

from core.errors import RelaybotError


class HandoffState(StrEnum):
    BOT = "bot"
    PENDING_HUMAN = "pending_human"
    HUMAN = "human"


#: why a conversation went to (or came back from) a person, recorded with each transition
HandoffCause = Literal["handler", "tool", "model", "user", "operator", "timeout", "closed"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ConversationView:
    """What the console shows of one conversation in the queue or live list."""

    session_id: str
    bot: str
    channel: str
    user_id: str
    state: HandoffState
    #: when the handoff was asked for (None while the bot holds it)
    requested_at: datetime | None = None
    reason: str = ""
    #: the operator (email) holding it while `human`
    operator: str | None = None
    #: the bot's one-paragraph summary of the conversation so far, and what it remembers of the user
    summary: str = ""
    facts: dict[str, str] = field(default_factory=dict)
    last_message_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DeskMessage:
    """One line of a transcript as the console shows it; `author` is "user", "bot", an operator's
    email for a person's reply, or "system" for a transition line."""

    session_id: str
    author: str
    text: str
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    seq: int | None = None


DeskEventKind = Literal["requested", "taken", "message", "handed_back", "timed_out", "closed"]


@dataclass(frozen=True, slots=True, kw_only=True)
class DeskEvent:
    """A change the console pushes to every operator's page (across processes, via Redis)."""

    kind: DeskEventKind
    session_id: str
    conversation: ConversationView | None = None
    message: DeskMessage | None = None
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


class HandoffError(RelaybotError):
    """A handoff request that cannot be carried out; the message says why."""


class HandoffConflict(HandoffError):
    """Another operator took the conversation first (or it is no longer waiting)."""


class ConversationNotFound(HandoffError):
    """No conversation with that session id (expired, or never existed)."""


class NotHeld(HandoffError):
    """The operator acted on a conversation they do not hold (reply, hand back)."""


class HandoffDesk(Protocol):
    async def state(self, session_id: str) -> HandoffState:
        """The conversation's state (`BOT` for an unknown session)."""
        ...

    async def request(self, session_id: str, *, cause: HandoffCause, reason: str = "") -> bool:
        """bot -> pending_human. False if a person was already asked for or holds it."""
        ...

    async def take(self, session_id: str, operator: str) -> ConversationView:
        """pending_human (or bot) -> human, atomically: of two operators racing, exactly one wins
        and the other gets HandoffConflict."""
        ...

    async def reply(self, session_id: str, operator: str, text: str) -> DeskMessage:
        """Send a person's reply through the conversation's own channel (with its formatting,
        splitting and outbox guarantees) and keep it in the history. NotHeld unless `operator`
        holds the conversation."""
        ...

    async def hand_back(self, session_id: str, operator: str, *, cause: HandoffCause = "operator") -> None:
        """human -> bot: the bot answers the next message."""
        ...

    async def expire_waiting(self, now: datetime | None = None) -> list[str]:
        """pending_human past the bot's timeout -> bot (the user is told); the session ids moved."""
        ...

    async def queue(self, bots: Sequence[str] | None = None) -> list[ConversationView]:
        """Conversations waiting for a person and those a person holds (for the given bots)."""
        ...

    async def transcript(self, session_id: str, *, limit: int = 200) -> list[DeskMessage]:
        """The conversation's history, oldest first."""
        ...

    def events(self) -> AsyncIterator[DeskEvent]:
        """Every desk event from now on, from every process, until the iterator is closed."""
        ...
