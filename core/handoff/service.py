"""`HandoffDesk` over the session store: the state machine, the queue, a person's replies.

Every transition is one compare-and-set on the session's fields (`SessionStore.swap_fields`), so
any number of processes (workers, the console) agree on who holds a conversation, and of two
operators taking the same one, exactly one wins. Each transition is then written down four
ways: a `handoff` log event, a metric, a system line in the history, and a desk event.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from datetime import datetime

import structlog

from core.bots import BotRegistry, Handoff
from core.clock import Clock, SystemClock
from core.delivery.outbox import Outbox
from core.envelope import Reply, new_id
from core.handoff import fields as f
from core.handoff.desk import (
    ConversationNotFound,
    ConversationView,
    DeskEvent,
    DeskEventKind,
    DeskMessage,
    HandoffCause,
    HandoffConflict,
    HandoffError,
    HandoffState,
    NotHeld,
)
from core.handoff.events import DeskEventHub
from core.handoff.index import HandoffIndex
from core.metrics import Metrics
from core.stores.base import HistoryStore, Session, SessionStore, StoredMessage

__all__ = ["SessionHandoffDesk", "author_of", "last_address"]

#: what the history's system line says of each transition
_LINES: dict[DeskEventKind, str] = {
    "requested": "A person was asked for",
    "taken": "{operator} took over the conversation",
    "handed_back": "{operator} handed the conversation back to the bot",
    "closed": "{operator} closed the conversation",
    "timed_out": "Nobody took the conversation in time: the bot answers again",
}


async def last_address(history: HistoryStore, session_id: str) -> str:
    """The reply address of the user's newest message ("" if none is on record)."""
    newest = await history.after(session_id, 0, role="user", last=1)
    return newest[-1].meta.get("reply_to", "") if newest else ""


def author_of(message: StoredMessage) -> str:
    """Who wrote a history message, as the desk shows it: "user", "bot", "system" or an operator."""
    author = message.meta.get("author")
    if author:
        return author
    return {"user": "user", "assistant": "bot"}.get(message.role, "system")


class SessionHandoffDesk:
    def __init__(
        self,
        *,
        sessions: SessionStore,
        history: HistoryStore,
        index: HandoffIndex,
        events: DeskEventHub,
        outbox: Outbox,
        bots: BotRegistry,
        metrics: Metrics | None = None,
        clock: Clock | None = None,
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self._sessions = sessions
        self._history = history
        self._index = index
        self._events = events
        self._outbox = outbox
        self._bots = bots
        self._metrics = metrics
        self._clock: Clock = clock or SystemClock()
        self._log = logger or structlog.get_logger("relaybot.handoff")

    # --- the state machine ----------------------------------------------------------------------

    async def state(self, session_id: str) -> HandoffState:
        session = await self._sessions.load(session_id)
        return HandoffState.BOT if session is None else f.state_of(session.fields)

    async def request(
        self, session_id: str, *, cause: HandoffCause, reason: str = "", acknowledged: bool = False, reply_to: str = ""
    ) -> bool:
        """bot -> pending_human. `acknowledged`: the caller tells the user a person will reply (the
        pipeline's turn does), so later messages get no acknowledgement of their own; `reply_to`: the
        channel's address for the person's replies (the pipeline passes the message's)."""
        now = self._clock.now()
        changes = {
            f.STATE: "pending_human",
            f.SINCE: now.isoformat(),
            f.CAUSE: cause,
            f.REASON: reason.strip()[:500],
            f.OPERATOR: "",
            f.ACKED: "1" if acknowledged else "",
        }
        if reply_to:
            changes[f.REPLY_TO] = reply_to
        session = await self._swap(session_id, {f.STATE: [""]}, changes)
        if session is None:
            return False
        await self._index.add(session_id, now)
        await self._record(session, "requested", cause=cause, detail=changes[f.REASON])
        return True

    async def take(self, session_id: str, operator: str) -> ConversationView:
        session = await self._load(session_id)
        state = f.state_of(session.fields)
        holder = session.fields.get(f.OPERATOR, "")
        if state is HandoffState.HUMAN:
            if holder == operator:
                return await self._view(session)
            raise HandoffConflict(f"{holder} already holds this conversation")
        since = session.fields.get(f.SINCE, "")
        now = self._clock.now()
        changes = {f.STATE: "human", f.OPERATOR: operator, f.SINCE: since or now.isoformat()}
        expect = {f.STATE: [f.STORED[state]], f.SINCE: [since]}
        taken = await self._swap(session_id, expect, changes)
        if taken is None:
            current = await self._sessions.load(session_id)
            who = current.fields.get(f.OPERATOR, "") if current is not None else ""
            raise HandoffConflict(
                f"{who} took this conversation first" if who else "this conversation changed meanwhile; reload it"
            )
        if state is HandoffState.BOT:
            await self._index.add(session_id, now)
        return await self._record(taken, "taken", cause="operator", operator=operator)

    async def hand_back(self, session_id: str, operator: str, *, cause: HandoffCause = "operator") -> None:
        session = await self._load(session_id)
        self._check_holder(session, operator)
        back = await self._swap(session_id, {f.STATE: ["human"], f.OPERATOR: [operator]}, f.cleared())
        if back is None:
            raise NotHeld("you no longer hold this conversation (it was handed back or closed meanwhile)")
        await self._index.remove(session_id)
        kind: DeskEventKind = "closed" if cause == "closed" else "handed_back"
        await self._record(back, kind, cause=cause, operator=operator)
        message = self._config(back).handed_back_message
        if message:
            await self._say(back, message, author="bot")

    async def expire_waiting(self, now: datetime | None = None) -> list[str]:
        now = now or self._clock.now()
        moved: list[str] = []
        for session_id, listed_at in await self._index.members():
            session = await self._sessions.load(session_id)
            if session is None or not f.held(session.fields):
                await self._index.remove(session_id)  # expired, or back with the bot
                continue
            if f.state_of(session.fields) is not HandoffState.PENDING_HUMAN:
                continue
            config = self._config(session)
            asked = f.since(session.fields) or listed_at
            if (now - asked).total_seconds() < config.timeout_seconds:
                continue
            since = session.fields.get(f.SINCE, "")
            # Another process sweeping at the same time, or an operator taking it now: one wins.
            back = await self._swap(session_id, {f.STATE: ["pending_human"], f.SINCE: [since]}, f.cleared())
            if back is None:
                continue
            await self._index.remove(session_id)
            await self._record(back, "timed_out", cause="timeout")
            await self._say(back, config.timeout_message, author="bot")
            moved.append(session_id)
        return moved

    # --- what operators do and see --------------------------------------------------------------

    async def reply(self, session_id: str, operator: str, text: str) -> DeskMessage:
        if not text.strip():
            raise HandoffError("the reply is empty: write something to send")
        session = await self._load(session_id)
        self._check_holder(session, operator)
        return await self._say(session, text, author=operator)

    async def queue(self, bots: Sequence[str] | None = None) -> list[ConversationView]:
        views: list[ConversationView] = []
        for session_id, _ in await self._index.members():
            session, recent = await self._sessions.load_with_recent(session_id, 1)
            if session is None or not f.held(session.fields):
                await self._index.remove(session_id)
                continue
            if bots is not None and session.bot not in bots:
                continue
            views.append(await self._view(session, last_message_at=recent[-1].created_at if recent else None))
        return views

    async def transcript(self, session_id: str, *, limit: int = 200) -> list[DeskMessage]:
        messages = await self._history.recent(session_id, limit)
        return [
            DeskMessage(session_id=session_id, author=author_of(m), text=m.content, created_at=m.created_at, seq=m.seq)
            for m in messages
        ]

    def events(self) -> AsyncIterator[DeskEvent]:
        return self._events.listen()

    # --- what the pipeline tells the desk -------------------------------------------------------

    async def recorded(self, session: Session, messages: Sequence[StoredMessage]) -> None:
        """Messages a turn recorded while a person was asked for or holds the conversation: to every console."""
        for message in messages:
            shown = DeskMessage(
                session_id=session.session_id,
                author=author_of(message),
                text=message.content,
                created_at=message.created_at,
                seq=message.seq,
            )
            await self._events.publish(DeskEvent(kind="message", session_id=session.session_id, message=shown))

    async def acknowledged(self, session_id: str) -> None:
        """The user was told a person will reply: later messages get no acknowledgement."""
        await self._sessions.swap_fields(session_id, {f.STATE: ["pending_human", "human"]}, {f.ACKED: "1"})

    async def keep_address(self, session_id: str, reply_to: str) -> None:
        """Where the person's replies go, from the user's latest message."""
        await self._sessions.swap_fields(session_id, {}, {f.REPLY_TO: reply_to})

    # --- helpers --------------------------------------------------------------------------------

    async def _load(self, session_id: str) -> Session:
        session = await self._sessions.load(session_id)
        if session is None:
            raise ConversationNotFound(f"no active conversation {session_id!r} (it ended, or expired when idle)")
        return session

    @staticmethod
    def _check_holder(session: Session, operator: str) -> None:
        if f.state_of(session.fields) is not HandoffState.HUMAN or session.fields.get(f.OPERATOR) != operator:
            holder = session.fields.get(f.OPERATOR) or "nobody"
            raise NotHeld(f"you do not hold this conversation ({holder} does); take it first")

    async def _swap(
        self, session_id: str, expect: Mapping[str, Collection[str]], changes: Mapping[str, str]
    ) -> Session | None:
        """The session after a compare-and-set, or None if it held something else."""
        outcome = await self._sessions.swap_fields(session_id, expect, changes)
        if outcome == "missing":
            raise ConversationNotFound(f"no active conversation {session_id!r} (it ended, or expired when idle)")
        if outcome == "mismatch":
            return None
        session = await self._sessions.load(session_id)
        if session is None:
            raise ConversationNotFound(f"conversation {session_id!r} expired just now")
        return session

    def _config(self, session: Session) -> Handoff:
        bot = self._bots.get(session.bot)
        return bot.handoff if bot is not None else Handoff()

    async def _view(self, session: Session, *, last_message_at: datetime | None = None) -> ConversationView:
        fields = session.fields
        facts, summary = await self._history.facts_and_summary(session.bot, session.user_id, session.session_id)
        return ConversationView(
            session_id=session.session_id,
            bot=session.bot,
            channel=session.channel,
            user_id=session.user_id,
            state=f.state_of(fields),
            requested_at=f.since(fields),
            reason=fields.get(f.REASON, ""),
            operator=fields.get(f.OPERATOR) or None,
            summary=summary.text if summary is not None else "",
            facts={fact.key: fact.value for fact in facts},
            last_message_at=last_message_at,
        )

    async def _record(
        self, session: Session, kind: DeskEventKind, *, cause: HandoffCause, operator: str = "", detail: str = ""
    ) -> ConversationView:
        """Write a transition down: log, metric, history line, desk event."""
        line = _LINES[kind].format(operator=operator or "an operator")
        if detail:
            line = f"{line}: {detail}"
        state = f.state_of(session.fields)
        await self._log.ainfo(
            "handoff",
            transition=kind,
            state=str(state),
            cause=cause,
            operator=operator or None,
            bot=session.bot,
            channel=session.channel,
            session_id=session.session_id,
            user_id=session.user_id,
        )
        if self._metrics is not None:
            self._metrics.handoffs.labels(session.bot, kind, cause).inc()
        note = StoredMessage(
            role="system",
            content=line,
            created_at=self._clock.now(),
            meta={"kind": "handoff", "handoff": kind, "cause": cause},
        )
        await self._history.append(
            session_id=session.session_id,
            bot=session.bot,
            channel=session.channel,
            user_id=session.user_id,
            messages=[note],
        )
        view = await self._view(session)
        await self._events.publish(DeskEvent(kind=kind, session_id=session.session_id, conversation=view))
        return view

    async def _say(self, session: Session, text: str, *, author: str) -> DeskMessage:
        """Send `text` to the user through the conversation's channel and keep it in the history."""
        reply_to = session.fields.get(f.REPLY_TO, "") or await last_address(self._history, session.session_id)
        if not reply_to:
            raise HandoffError(
                f"conversation {session.session_id!r} has no reply address on record: it is kept with each of "
                "the user's messages, so the person can reply once the user writes again"
            )
        meta = {"author": author, "kind": "operator"} if author != "bot" else {"kind": "handoff"}
        saved = await self._history.append(
            session_id=session.session_id,
            bot=session.bot,
            channel=session.channel,
            user_id=session.user_id,
            messages=[StoredMessage(role="assistant", content=text, created_at=self._clock.now(), meta=meta)],
        )
        bot = self._bots.get(session.bot)
        keep = max(1, bot.history.max_messages) if bot is not None else 20
        await self._sessions.append(session.session_id, saved, keep=keep)
        reply_id = new_id()
        await self._outbox.submit(
            Reply(
                envelope_id="",
                session_id=session.session_id,
                bot=session.bot,
                channel=session.channel,
                reply_to=reply_to,
                text=text,
                dedupe_key=f"handoff:{reply_id}",
                seq=saved[-1].seq,
                id=reply_id,
            )
        )
        message = DeskMessage(
            session_id=session.session_id, author=author, text=text, created_at=saved[-1].created_at, seq=saved[-1].seq
        )
        await self._events.publish(DeskEvent(kind="message", session_id=session.session_id, message=message))
        return message
