"""Delivering a reply: HTML parts with the keyboard under the last, streamed by edits or drafts.

The Markdown answer (and its card) is rendered as Telegram HTML and split at 4,096 characters; a
retried split reply resumes after the parts already sent (`channels.parts.send_parts`). Streamed
fragments edit one message, throttled (`channels.streaming.EditStreamer`), or, when
RELAYBOT_TELEGRAM__DRAFTS_IN_PRIVATE_CHATS is on, update a private chat's draft preview
(`channels.telegram.drafts`); the final reply edits the streamed message with its first part. In
a group, the first part answers the user's message. Nothing is sent to a chat whose user blocked
the bot, and a 403 on any send records the block (`channels.telegram.blocks`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog
from telegram import InlineKeyboardMarkup

from channels.choices import card_text
from channels.formatting import render_parts
from channels.parts import send_parts
from channels.streaming import EditStreamer
from channels.telegram.blocks import BlockedChats
from channels.telegram.drafts import DraftStreamer
from channels.telegram.inbound import parse_address
from channels.telegram.keyboards import keyboard_for
from channels.telegram.outbound import ChatBlocked, TelegramSender
from core.channel import DeliveryResult
from core.envelope import Reply
from core.errors import DeliveryError, StoreError
from core.streams import StreamRegistry

MAX_LENGTH = 4096


def reply_address(reply: Reply) -> tuple[int, int | None]:
    """The chat (and forum topic) a reply goes to; a non-retryable DeliveryError if it names none."""
    try:
        return parse_address(reply.reply_to)
    except ValueError as exc:
        raise DeliveryError(str(exc), retryable=False) from exc


class _StreamOps:
    """What EditStreamer needs (post, edit), for one reply's chat."""

    def __init__(self, delivery: TelegramDelivery, sender: Callable[[], Awaitable[TelegramSender]]) -> None:
        self._delivery = delivery
        self._sender = sender

    async def post(self, reply: Reply, text: str) -> str:
        return str(await self._delivery.post_part(reply, text, first=True))

    async def edit(self, reply: Reply, message_ref: str, text: str) -> None:
        chat_id, _ = reply_address(reply)
        sender = await self._sender()
        await self._delivery.guard_blocked(reply, sender.edit(chat_id, int(message_ref), text))


class TelegramDelivery:
    def __init__(
        self,
        *,
        streams: StreamRegistry,
        blocks: BlockedChats,
        sender: Callable[[], Awaitable[TelegramSender]],
        edit_interval: float,
        edit_open_after: float,
        drafts_in_private_chats: bool,
        logger: structlog.typing.FilteringBoundLogger,
    ) -> None:
        self._streams = streams
        self._blocks = blocks
        self._sender = sender
        self._log = logger
        self._streamer = EditStreamer(
            streams,
            _StreamOps(self, sender),
            dialect="telegram-html",
            limit=MAX_LENGTH,
            interval=edit_interval,
            open_after=edit_open_after,
            logger=logger,
        )
        self._drafts = (
            DraftStreamer(streams, self._send_draft, limit=MAX_LENGTH, interval=edit_interval, logger=logger)
            if drafts_in_private_chats
            else None
        )

    async def guard_blocked(self, reply: Reply, request: Coroutine[Any, Any, Any]) -> Any:
        """Await a send; on 403 record the chat as blocked before re-raising."""
        try:
            return await request
        except ChatBlocked as exc:
            chat_id, _ = reply_address(reply)
            try:
                await self._blocks.record(
                    session_id=reply.session_id,
                    bot=reply.bot,
                    user_id=f"telegram:{chat_id}",
                    blocked=True,
                    detail=str(exc),
                )
            except StoreError as store_exc:
                await self._log.aerror("block_not_recorded", session_id=reply.session_id, error=str(store_exc))
            await self._log.awarning("chat_blocked", session_id=reply.session_id, error=str(exc))
            raise

    async def _check_not_blocked(self, reply: Reply) -> None:
        try:
            blocked = await self._blocks.is_blocked(reply.session_id)
        except StoreError as exc:
            raise DeliveryError(f"cannot read whether the chat blocked the bot: {exc}", retryable=True) from exc
        if blocked:
            raise DeliveryError("the user blocked the bot on Telegram; not sent", retryable=False)

    async def post_part(
        self, reply: Reply, text_html: str, *, first: bool, keyboard: InlineKeyboardMarkup | None = None
    ) -> int:
        chat_id, thread_id = reply_address(reply)
        if first:
            await self._check_not_blocked(reply)
        # In a group, the first message answers the user's message so the thread of talk is clear.
        original = reply.in_reply_to or ""
        quote = int(original) if first and chat_id < 0 and original.isdigit() else None
        sender = await self._sender()
        message_id: int = await self.guard_blocked(
            reply, sender.send(chat_id, thread_id, text_html, reply_to_message=quote, keyboard=keyboard)
        )
        return message_id

    async def deliver(self, reply: Reply) -> DeliveryResult:
        chat_id, _ = reply_address(reply)
        drafts = self._drafts if chat_id > 0 else None  # drafts exist in private chats only
        if not reply.final:
            if drafts is not None:
                return await drafts.fragment(reply)
            return await self._streamer.fragment(reply)
        if drafts is not None:
            await drafts.finish(reply)
        text = reply.text if reply.card is None else f"{reply.text}\n\n{card_text(reply.card)}"
        parts = render_parts(text, "telegram-html", MAX_LENGTH)
        # The buttons go under the last part, where the question usually is.
        keyboard = keyboard_for(reply)
        try:
            streamed = await self._streamer.finish(reply, parts[0])
        except StoreError as exc:
            raise DeliveryError(f"cannot read the reply's streamed message: {exc}", retryable=True) from exc
        ids: list[str] = []
        start = 0
        if streamed is not None:
            sender = await self._sender()
            try:
                under = keyboard if len(parts) == 1 else None
                await self.guard_blocked(reply, sender.edit(chat_id, int(streamed), parts[0], keyboard=under))
                ids.append(streamed)
                start = 1
            except DeliveryError as exc:
                if exc.retryable or isinstance(exc, ChatBlocked):
                    raise
                # The streamed message is gone (deleted by the user): the whole reply is posted anew.
                await self._log.ainfo("stream_message_lost", error=str(exc))
        rest = parts[start:]

        async def post(index: int, text_html: str) -> str:
            under = keyboard if index == len(rest) - 1 else None
            return str(await self.post_part(reply, text_html, first=start == 0 and index == 0, keyboard=under))

        try:
            ids.extend(await send_parts(self._streams, reply.id, rest, post))
        except StoreError as exc:
            raise DeliveryError(f"cannot record which parts were sent: {exc}", retryable=True) from exc
        return DeliveryResult(delivered=True, channel_message_ids=tuple(ids))

    async def _send_draft(self, reply: Reply, draft_id: int, text_html: str) -> None:
        chat_id, thread_id = reply_address(reply)
        sender = await self._sender()
        await self.guard_blocked(reply, sender.draft(chat_id, thread_id, draft_id, text_html))

    async def close(self) -> None:
        await self._streamer.close()
        if self._drafts is not None:
            await self._drafts.close()
