"""Proactive messages: the bot (or a back end, or an operator) writes first to a known user.

`OutboundSender.send` sends text to a conversation relaybot has seen, through its own channel and
outbox, and keeps it in the history. The address is the one the user's newest message came with.
Channels that take free-form messages only for a while after the user's last one (WhatsApp: 24
hours) declare a `ReplyWindow`: outside it, the bot's approved template goes instead if it has
one, and otherwise the send is refused with `OutboundRefused` (never dropped silently).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from core.bots import BotRegistry
from core.channel import ReplyWindow
from core.clock import Clock, SystemClock
from core.delivery.outbox import Outbox
from core.envelope import Reply, new_id
from core.errors import RelaybotError
from core.pipeline.stages import describe_wait
from core.settings import Settings
from core.stores.base import HistoryStore, SessionStore, StoredMessage

__all__ = ["OutboundRefused", "OutboundSender", "OutboundSent", "ReplyWindow"]


class OutboundRefused(RelaybotError):
    """A proactive message relaybot will not send; `status` is the HTTP status the API answers."""

    def __init__(self, message: str, *, code: str, status: int) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboundSent:
    reply_id: str
    session_id: str
    channel: str
    seq: int | None
    #: the template sent instead of the text (outside the channel's reply window)
    template: str | None = None


class OutboundSender:
    def __init__(
        self,
        *,
        sessions: SessionStore,
        history: HistoryStore,
        outbox: Outbox,
        bots: BotRegistry,
        settings: Settings,
        windows: Mapping[str, ReplyWindow],
        clock: Clock | None = None,
    ) -> None:
        self._sessions = sessions
        self._history = history
        self._outbox = outbox
        self._bots = bots
        self._settings = settings
        self._windows = windows
        self._clock: Clock = clock or SystemClock()

    async def send(self, session_id: str, text: str, *, author: str = "api") -> OutboundSent:
        """Send `text` to the conversation `session_id` ("bot:channel:conversation")."""
        bot, channel, conversation = [*session_id.split(":", 2), "", ""][:3]
        if not text.strip():
            raise OutboundRefused("text is empty", code="invalid_request", status=400)
        if bot not in self._bots or not conversation:
            raise OutboundRefused(f"no conversation {session_id!r}", code="unknown_conversation", status=404)
        newest = await self._history.after(session_id, 0, role="user", last=1)
        if not newest:
            raise OutboundRefused(
                f"no message from a user in conversation {session_id!r} on record: relaybot writes only to "
                "users who wrote to it first",
                code="unknown_conversation",
                status=404,
            )
        reply_to = newest[-1].meta.get("reply_to", "")
        if not reply_to:
            raise OutboundRefused(
                "the user's last message has no reply address on record (it predates proactive messages); "
                "it is kept from their next message",
                code="no_address",
                status=409,
            )
        template = self._template_outside_window(bot, channel, newest[-1])
        session = await self._sessions.load(session_id)
        saved = await self._history.append(
            session_id=session_id,
            bot=bot,
            channel=channel,
            user_id=session.user_id if session is not None else "",
            messages=[
                StoredMessage(
                    role="assistant",
                    content=text,
                    created_at=self._clock.now(),
                    meta={"author": author, "kind": "outbound"},
                )
            ],
        )
        if session is not None:
            config = self._bots.require(bot)
            await self._sessions.append(session_id, saved, keep=max(1, config.history.max_messages))
        reply_id = new_id()
        await self._outbox.submit(
            Reply(
                envelope_id="",
                session_id=session_id,
                bot=bot,
                channel=channel,
                reply_to=reply_to,
                text=text,
                dedupe_key=f"outbound:{reply_id}",
                seq=saved[-1].seq,
                id=reply_id,
            )
        )
        return OutboundSent(
            reply_id=reply_id, session_id=session_id, channel=channel, seq=saved[-1].seq, template=template
        )

    def _template_outside_window(self, bot: str, channel: str, last: StoredMessage) -> str | None:
        """None inside the channel's window (or a channel without one); the template outside it."""
        window = self._windows.get(channel)
        if window is None:
            return None
        waited = (self._clock.now() - last.created_at).total_seconds()
        if waited <= window.seconds:
            return None
        template = window.template(self._settings, bot)
        if template:
            return template
        hint = f" (set {window.setting})" if window.setting else ""
        raise OutboundRefused(
            f"the user last wrote {describe_wait(waited)} ago: outside {channel}'s {window.seconds / 3600:g}-hour "
            f"window only an approved template may be sent, and bot {bot!r} has none{hint}",
            code="outside_window",
            status=409,
        )
