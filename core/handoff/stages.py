"""The pipeline's side of handoff: the bot stays silent while a person is asked for or holds the
conversation, and a person asked for during a turn is asked for when the turn ends.

- `HeldStage` (right after the session is loaded): while `pending_human`/`human`, the message is
  recorded and shown at the desk, and the turn has no reply, except the one acknowledgement a
  user gets if nobody told them yet. It reads the state from the session the turn already loaded:
  a turn of a conversation with the bot costs nothing more.
- `UserAsksStage` (after the handlers, before the model): the user asking for a person in their
  own words (the bot's `[handoff] user_phrases`) is asked for without a model call.
- `RequestStage` (first closing stage): carries out a request made during the turn (by a handler,
  a tool, the model through a tool, or `UserAsksStage`), or a user's asking that a handler answered
  anyway; the turn's reply becomes the acknowledgement.
- `DeskNoticeStage` (closing, after the turn is recorded): the messages go to the desk's pages.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Protocol

from core.handoff import fields as f
from core.handoff.desk import HandoffCause, HandoffState
from core.pipeline.turn import PersonAsked, Turn
from core.stores.base import Session, StoredMessage

__all__ = ["DeskNoticeStage", "HeldStage", "RequestStage", "TurnDesk", "UserAsksStage", "asks_for_person"]


class TurnDesk(Protocol):
    """What a turn needs of the desk (`SessionHandoffDesk` is one)."""

    async def request(
        self, session_id: str, *, cause: HandoffCause, reason: str = "", acknowledged: bool = False, reply_to: str = ""
    ) -> bool: ...

    async def acknowledged(self, session_id: str) -> None: ...

    async def keep_address(self, session_id: str, reply_to: str) -> None: ...

    async def recorded(self, session: Session, messages: Sequence[StoredMessage]) -> None: ...


@lru_cache(maxsize=64)
def _phrases(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)


def asks_for_person(text: str, patterns: Sequence[str]) -> bool:
    """Whether a message asks for a person in one of the bot's phrases."""
    found = _phrases(tuple(patterns))
    return found is not None and found.search(text) is not None


class HeldStage:
    def __init__(self, desk: TurnDesk) -> None:
        self._desk = desk

    async def __call__(self, turn: Turn) -> None:
        session = turn.session
        if session is None or not f.held(session.fields):
            return
        env = turn.envelope
        if session.fields.get(f.REPLY_TO) != env.reply_to:
            # Where the person's replies go (a widget reconnected, a new thread): kept only while held.
            await self._desk.keep_address(session.session_id, env.reply_to)
        if f.state_of(session.fields) is HandoffState.PENDING_HUMAN and not session.fields.get(f.ACKED):
            # Asked for from outside a turn (the API, a console): this is the user's one acknowledgement.
            await self._desk.acknowledged(session.session_id)
            turn.answer(turn.bot.handoff.acknowledgement)
            turn.handoff = "acknowledged"
            return
        turn.hold()
        turn.handoff = "held"


class UserAsksStage:
    async def __call__(self, turn: Turn) -> None:
        if turn.session is None or asks_for_person(turn.envelope.text, turn.bot.handoff.user_phrases) is False:
            return
        turn.ask_for_person("user", turn.envelope.text)
        turn.answer(turn.bot.handoff.acknowledgement)


class RequestStage:
    def __init__(self, desk: TurnDesk) -> None:
        self._desk = desk

    async def __call__(self, turn: Turn) -> None:
        env = turn.envelope
        asked = turn.person_asked
        if turn.silent or turn.notice or turn.session is None:
            return
        if asked is None:
            if not asks_for_person(env.text, turn.bot.handoff.user_phrases):
                return
            # A handler answered a message that asks for a person ("talk to a human about a refund"):
            # the user's wish comes first.
            asked = PersonAsked("user", env.text)
        requested = await self._desk.request(
            env.session_id, cause=asked.cause, reason=asked.reason, acknowledged=True, reply_to=env.reply_to
        )
        if requested:
            turn.reply_text = turn.bot.handoff.acknowledgement
            turn.reply_actions, turn.reply_card = (), None
            turn.handoff = "requested"


class DeskNoticeStage:
    def __init__(self, desk: TurnDesk) -> None:
        self._desk = desk

    async def __call__(self, turn: Turn) -> None:
        if turn.handoff is None or turn.session is None or not turn.recorded:
            return
        await self._desk.recorded(turn.session, turn.recorded)
