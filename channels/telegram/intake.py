"""Intake, shared by the webhook and long polling: each update handed to the bus or acted on.

A message becomes an envelope on the bus, with its files as `telegram-file:` references, and the
chat shows "typing…". A button press (callback query) is answered at once with
answerCallbackQuery and becomes an envelope whose text is the button's label, if the button is one
of the conversation's newest reply (see `channels.telegram.keyboards`). A private chat's membership
change (the user blocked or unblocked the bot) is recorded in the conversation's history. Update
ids seen recently are skipped at once (`channels.telegram.dedupe`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog
from telegram import Bot, Update, User

from channels.inbound import Ignored
from channels.telegram.blocks import BlockedChats
from channels.telegram.dedupe import SeenUpdates
from channels.telegram.files import attachment_of
from channels.telegram.inbound import Click, Inbound, MembershipChange, parse
from channels.telegram.keyboards import parse_key
from channels.telegram.outbound import TelegramSender
from channels.telegram.typing_indicator import TypingIndicator
from core.bus.base import Bus
from core.envelope import Attachment, Envelope, session_id_for
from core.errors import DeliveryError
from core.offers import last_offer
from core.stores.base import HistoryStore

#: what a press on a button of an older reply shows (Telegram keeps old keyboards in the chat)
STALE_CLICK = "That choice is no longer available: please type your answer."

#: runs a coroutine as a task the channel owns (cancelled when it closes), under a name
Spawn = Callable[[Coroutine[Any, Any, None], str], None]


class Intake:
    def __init__(
        self,
        *,
        bot_name: str,
        bus: Bus,
        history: HistoryStore,
        blocks: BlockedChats,
        ready: Callable[[], Awaitable[tuple[Bot, User]]],
        sender: Callable[[], Awaitable[TelegramSender]],
        typing: TypingIndicator,
        spawn: Spawn,
        require_mention: bool,
        logger: structlog.typing.FilteringBoundLogger,
    ) -> None:
        self._bot_name = bot_name
        self._bus = bus
        self._history = history
        self._blocks = blocks
        self._ready = ready
        self._sender = sender
        self._typing = typing
        self._spawn = spawn
        self._require_mention = require_mention
        self._log = logger
        self._seen = SeenUpdates()

    async def accept(self, update: Update) -> None:
        """Hand one update to the bus (or act on it); raises StoreError if it could not be."""
        if update.update_id in self._seen:
            await self._log.ainfo("duplicate_update", update_id=update.update_id)
            return
        _, me = await self._ready()
        try:
            outcome: Inbound | Click | Ignored | MembershipChange = parse(
                update, me=me, require_mention=self._require_mention
            )
        except Exception as exc:  # an update PTB modelled but we cannot read: never a retry loop
            outcome = Ignored(f"unreadable update: {exc!r}")
        if isinstance(outcome, Ignored):
            await self._log.ainfo("update_ignored", update_id=update.update_id, reason=outcome.reason)
        elif isinstance(outcome, MembershipChange):
            await self._record_membership(outcome)
        elif isinstance(outcome, Click):
            await self._accept_click(outcome)
        else:
            # Published before the ack: a message held in a task after it would die with the process.
            await self._publish(outcome, tuple(attachment_of(ref) for ref in outcome.files))
        self._seen.add(update.update_id)

    async def _publish(self, inbound: Inbound, attachments: tuple[Attachment, ...]) -> None:
        envelope = Envelope.create(
            bot=self._bot_name,
            channel="telegram",
            channel_message_id=str(inbound.message_id),
            conversation_id=inbound.conversation_id,
            user_id=inbound.user_id,
            user_name=inbound.user_name,
            text=inbound.text,
            attachments=attachments,
        )
        if not await self._bus.publish(envelope):
            await self._log.ainfo("duplicate_message", dedupe_key=envelope.dedupe_key)
            return
        await self._log.ainfo("message_accepted", envelope_id=envelope.id, session_id=envelope.session_id)
        self._spawn(self._typing.show(inbound), f"telegram-typing-{inbound.chat_id}")

    async def _accept_click(self, click: Click) -> None:
        """A button press: published as the button's label with the click, if it is one of the newest
        reply's buttons; else only answered. Raises StoreError when the offer cannot be read (503:
        Telegram sends the press again)."""
        session = session_id_for(self._bot_name, "telegram", click.conversation_id)
        offer = await last_offer(self._history, session)
        found = parse_key(click.data)
        button = None
        if found is not None and found[0] == offer.seq and found[1] < len(offer.buttons):
            button = offer.buttons[found[1]]
        if button is None:
            await self._log.ainfo("click_not_offered", data=click.data, offered_seq=offer.seq)
            self._spawn(self._answer_click(click.query_id, STALE_CLICK), f"telegram-click-{click.query_id}")
            return
        envelope = Envelope.create(
            bot=self._bot_name,
            channel="telegram",
            # A press has no message of its own: the callback query's id is its id, once.
            channel_message_id=f"callback:{click.query_id}",
            conversation_id=click.conversation_id,
            user_id=click.user_id,
            user_name=click.user_name,
            text=button.label,
            action=offer.click(button),
        )
        accepted = await self._bus.publish(envelope)
        # Answered in any case (a re-sent update too): until it is, the user's button shows a spinner.
        self._spawn(self._answer_click(click.query_id, None), f"telegram-click-{click.query_id}")
        if not accepted:
            await self._log.ainfo("duplicate_message", dedupe_key=envelope.dedupe_key)
            return
        await self._log.ainfo("click_accepted", envelope_id=envelope.id, action=button.id)
        self._spawn(self._typing.show(click), f"telegram-typing-{click.chat_id}")

    async def _answer_click(self, query_id: str, notice: str | None) -> None:
        try:
            await (await self._sender()).answer_click(query_id, notice)
        except DeliveryError as exc:  # an old query (answered already, or past Telegram's window): harmless
            await self._log.ainfo("click_not_answered", error=str(exc))

    async def _record_membership(self, change: MembershipChange) -> None:
        conversation = str(change.chat_id)
        await self._blocks.record(
            session_id=session_id_for(self._bot_name, "telegram", conversation),
            bot=self._bot_name,
            user_id=f"telegram:{change.chat_id}",
            blocked=change.blocked,
        )
        await self._log.ainfo("membership_changed", chat_id=change.chat_id, blocked=change.blocked)
