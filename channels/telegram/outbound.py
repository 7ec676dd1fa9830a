"""Sending to Telegram through python-telegram-bot, with its errors in relaybot's vocabulary.

RetryAfter (429)        → DeliveryError(retryable, retry_after): the outbox waits it out
Forbidden (403)         → ChatBlocked (not retryable): the user blocked the bot or removed it
BadRequest "can't parse entities" → sent again at once as plain text (never lost to markup)
BadRequest "message is not modified" (an edit) → success: the message already says that
BadRequest, InvalidToken → not retryable: the request or the token is wrong
TimedOut                → outcome unknown: the message may have arrived, so it is not repeated
NetworkError, others    → retryable
"""

from __future__ import annotations

import html
import re
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

from telegram import Bot, InlineKeyboardMarkup, LinkPreviewOptions, Message, ReplyParameters
from telegram.constants import ChatAction, ParseMode
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)

from core.errors import DeliveryError

T = TypeVar("T")
_TAGS = re.compile(r"<[^>]+>")


class ChatBlocked(DeliveryError):
    """403: the user blocked the bot (or the bot left the group). Sending again cannot help."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


def as_plain(rendered_html: str) -> str:
    """The text of a rendered HTML part without its markup: the fallback when Telegram rejects the HTML."""
    return html.unescape(_TAGS.sub("", rendered_html))


def _seconds(value: int | float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


async def call(what: str, request: Callable[[], Awaitable[T]]) -> T:
    """Run one Bot API request, converting its errors (see the module docstring)."""
    try:
        return await request()
    except RetryAfter as exc:
        wait = _seconds(exc.retry_after)
        raise DeliveryError(
            f"Telegram flood limit on {what}: retry in {wait:g}s", retryable=True, retry_after=wait
        ) from exc
    except Forbidden as exc:
        raise ChatBlocked(f"Telegram refused {what}: {exc.message}") from exc
    except ChatMigrated as exc:
        raise DeliveryError(
            f"the group became a supergroup with id {exc.new_chat_id}; replies to the old id cannot be sent",
            retryable=False,
        ) from exc
    except InvalidToken as exc:
        raise DeliveryError(
            f"Telegram rejected the bot token on {what}: check TELEGRAM_BOT_TOKEN", retryable=False
        ) from exc
    except BadRequest as exc:
        raise DeliveryError(f"Telegram rejected {what}: {exc.message}", retryable=False) from exc
    except TimedOut as exc:
        raise DeliveryError(
            f"Telegram did not answer {what} in time; it may have been delivered", retryable=True, outcome_unknown=True
        ) from exc
    except NetworkError as exc:
        raise DeliveryError(f"Telegram unreachable on {what}: {exc.message}", retryable=True) from exc
    except TelegramError as exc:
        raise DeliveryError(f"Telegram failed {what}: {exc.message}", retryable=True) from exc


def _parse_error(exc: BadRequest) -> bool:
    return "parse entities" in exc.message.lower()


def _not_modified(exc: BadRequest) -> bool:
    return "message is not modified" in exc.message.lower()


class TelegramSender:
    """The Bot API calls a reply needs, each taking already-rendered HTML."""

    def __init__(self, bot: Bot) -> None:
        self._bot = bot

    async def send(
        self,
        chat_id: int,
        thread_id: int | None,
        text_html: str,
        *,
        reply_to_message: int | None = None,
        keyboard: InlineKeyboardMarkup | None = None,
    ) -> int:
        """sendMessage; returns the new message's id."""
        reply = (
            ReplyParameters(message_id=reply_to_message, allow_sending_without_reply=True)
            if reply_to_message is not None
            else None
        )
        no_preview = LinkPreviewOptions(is_disabled=True)

        async def html_first() -> Message:
            try:
                return await self._bot.send_message(
                    chat_id,
                    text_html,
                    parse_mode=ParseMode.HTML,
                    message_thread_id=thread_id,
                    reply_parameters=reply,
                    link_preview_options=no_preview,
                    reply_markup=keyboard,
                )
            except BadRequest as exc:
                if not _parse_error(exc):
                    raise
                # The renderer escapes everything it does not produce, so this is rare; a reply is
                # never lost to markup: the same words go out without it.
                return await self._bot.send_message(
                    chat_id,
                    as_plain(text_html),
                    message_thread_id=thread_id,
                    reply_parameters=reply,
                    link_preview_options=no_preview,
                    reply_markup=keyboard,
                )

        message = await call("sendMessage", html_first)
        return message.message_id

    async def edit(
        self, chat_id: int, message_id: int, text_html: str, *, keyboard: InlineKeyboardMarkup | None = None
    ) -> None:
        """editMessageText; an edit to the same text is a success."""

        async def html_first() -> None:
            try:
                try:
                    await self._bot.edit_message_text(
                        text_html,
                        chat_id=chat_id,
                        message_id=message_id,
                        parse_mode=ParseMode.HTML,
                        reply_markup=keyboard,
                    )
                except BadRequest as exc:
                    if not _parse_error(exc):
                        raise
                    await self._bot.edit_message_text(
                        as_plain(text_html), chat_id=chat_id, message_id=message_id, reply_markup=keyboard
                    )
            except BadRequest as exc:
                if not _not_modified(exc):
                    raise

        await call("editMessageText", html_first)

    async def answer_click(self, query_id: str, notice: str | None = None) -> None:
        """answerCallbackQuery: stops the button's spinner; `notice` is shown to the user briefly."""
        await call("answerCallbackQuery", lambda: self._bot.answer_callback_query(query_id, text=notice))

    async def draft(self, chat_id: int, thread_id: int | None, draft_id: int, text_html: str) -> None:
        """sendMessageDraft: the animated preview of an answer being written (private chats)."""

        async def html_first() -> None:
            try:
                await self._bot.send_message_draft(
                    chat_id, draft_id, text_html, message_thread_id=thread_id, parse_mode=ParseMode.HTML
                )
            except BadRequest as exc:
                if not _parse_error(exc):
                    raise
                await self._bot.send_message_draft(chat_id, draft_id, as_plain(text_html), message_thread_id=thread_id)

        await call("sendMessageDraft", html_first)

    async def typing(self, chat_id: int, thread_id: int | None) -> None:
        await call(
            "sendChatAction",
            lambda: self._bot.send_chat_action(chat_id, ChatAction.TYPING, message_thread_id=thread_id),
        )
