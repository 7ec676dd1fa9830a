"""The Telegram channel: a webhook on our aiohttp app, or long polling, on python-telegram-bot.

This module puts the channel's parts together; each does one job:

- `channels.telegram.application`: python-telegram-bot's Application, built without its updater or
  web server (we use its `Bot`), initialized once (getMe), with what to check when it fails;
- `channels.telegram.webhook`: `POST /telegram/webhook`, its secret (TELEGRAM_WEBHOOK_SECRET, or one
  derived from the bot token that `relaybot telegram set-webhook URL` registers), its body limit;
- `channels.telegram.polling`: long polling (`getUpdates`) when RELAYBOT_POLLING is set;
- `channels.telegram.intake`: each update, from either, handed to the bus or acted on. Duplicates:
  update ids seen recently are skipped at once (`channels.telegram.dedupe`); the authority is the
  bus, which takes each (chat, message id) once across processes. Buttons: a press (callback query)
  is answered at once and becomes an envelope whose text is the button's label (see
  `channels.telegram.keyboards` for the 64-byte callback_data and the short key it carries);
- `channels.telegram.typing_indicator`: "typing…" until the answer starts arriving;
- `channels.telegram.delivery`: replies as HTML split at 4,096 characters, streamed by editing one
  message (throttled to about one edit a second) or by drafts, never to a user who blocked the bot,
  with flood limits handled as the outbox expects (see `channels.telegram.outbound`);
- `channels.telegram.files`: files users send travel as `telegram-file:FILE_ID` references, never
  download URLs (those contain the bot token); `file_url` and `download` resolve one at use.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

from aiohttp import web
from telegram import InlineKeyboardMarkup

from channels.telegram.application import TelegramBot, build_application, startup_hint
from channels.telegram.blocks import BlockedChats
from channels.telegram.delivery import MAX_LENGTH, TelegramDelivery
from channels.telegram.files import TelegramFiles
from channels.telegram.inbound import ALLOWED_UPDATES
from channels.telegram.intake import STALE_CLICK, Intake
from channels.telegram.outbound import TelegramSender
from channels.telegram.polling import Poller
from channels.telegram.typing_indicator import TypingIndicator
from channels.telegram.webhook import SECRET_HEADER, WEBHOOK_PATH, Webhook, webhook_secret
from core.channel import Capabilities, ChannelContext, DeliveryResult
from core.envelope import Attachment, Reply
from core.errors import ConfigError
from core.settings import Settings

# Defined in this module before it was split: still importable from here.
__all__ = [
    "ALLOWED_UPDATES",
    "MAX_LENGTH",
    "SECRET_HEADER",
    "STALE_CLICK",
    "WEBHOOK_PATH",
    "TelegramChannel",
    "build_application",
    "startup_hint",
    "webhook_secret",
]


class TelegramChannel:
    channel_names = ("telegram",)
    capabilities = Capabilities(
        max_message_length=MAX_LENGTH,
        markdown="telegram-html",
        can_edit=True,
        can_stream=True,
        can_show_typing=True,
    )

    def __init__(self, ctx: ChannelContext) -> None:
        self._ctx = ctx
        self._opts = ctx.settings.telegram
        self._log = ctx.logger.bind(channel="telegram")
        self._bot = TelegramBot(ctx.settings, logger=self._log)
        bot_name = self._opts.bot or ctx.bots.default
        if bot_name not in ctx.bots:
            raise ConfigError(f"RELAYBOT_TELEGRAM__BOT names {bot_name!r}, which is not a bot in the bots folder")
        blocks = BlockedChats(ctx.history)
        self._typing = TypingIndicator(
            sender=self._bot.sender, max_seconds=self._opts.typing_max_seconds, logger=self._log
        )
        self._intake = Intake(
            bot_name=bot_name,
            bus=ctx.bus,
            history=ctx.history,
            blocks=blocks,
            ready=self._bot.ready,
            sender=self._bot.sender,
            typing=self._typing,
            spawn=self._spawn,
            require_mention=self._opts.groups_require_mention,
            logger=self._log,
        )
        self._webhook = Webhook(
            secret=webhook_secret(ctx.settings),
            max_update_bytes=self._opts.max_update_bytes,
            bot=self._bot.bot,
            accept=self._intake.accept,
            logger=self._log,
        )
        self._delivery = TelegramDelivery(
            streams=ctx.streams,
            blocks=blocks,
            sender=self._bot.sender,
            edit_interval=self._opts.edit_interval_seconds,
            edit_open_after=self._opts.edit_open_after_seconds,
            drafts_in_private_chats=self._opts.drafts_in_private_chats,
            logger=self._log,
        )
        self._files = TelegramFiles(self._bot.bot, token=self._bot.token, timeout=self._opts.file_timeout_seconds)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._poller: asyncio.Task[None] | None = None

    @staticmethod
    def is_configured(settings: Settings) -> bool:
        return settings.telegram_bot_token is not None

    def register(self, app: web.Application) -> None:
        app.router.add_post(WEBHOOK_PATH, self._webhook.handle)

    async def sender(self) -> TelegramSender:
        """The sender, once the bot is initialized; a failing getMe is a DeliveryError like any call."""
        return await self._bot.sender()

    async def start(self) -> None:
        """Long polling when RELAYBOT_POLLING is set; otherwise the webhook route receives."""
        if self._ctx.settings.polling and self._poller is None:
            poller = Poller(
                bot=self._bot.bot,
                accept=self._intake.accept,
                timeout=self._opts.poll_timeout_seconds,
                allowed_updates=list(ALLOWED_UPDATES),
                logger=self._log,
            )
            self._poller = asyncio.create_task(poller.run(), name="telegram-polling")
        else:
            self._spawn(self._bot.warm_up(), "telegram-warm-up")

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- attachments ---------------------------------------------------------------------------

    async def file_url(self, attachment: Attachment) -> str:
        """A download URL for a `telegram-file:` attachment, through getFile with this bot.

        It contains the bot token: fetch it at once and never store or log it. Raises
        AttachmentUnavailable (`retryable` says whether asking again later can help).
        """
        return await self._files.url(attachment)

    async def download(self, attachment: Attachment) -> bytes:
        """The bytes of a `telegram-file:` attachment; raises AttachmentUnavailable."""
        return await self._files.download(attachment)

    # --- outbound -----------------------------------------------------------------------------

    async def guard_blocked(self, reply: Reply, request: Coroutine[Any, Any, Any]) -> Any:
        """Await a send; on 403 record the chat as blocked before re-raising."""
        return await self._delivery.guard_blocked(reply, request)

    async def post_part(
        self, reply: Reply, text_html: str, *, first: bool, keyboard: InlineKeyboardMarkup | None = None
    ) -> int:
        return await self._delivery.post_part(reply, text_html, first=first, keyboard=keyboard)

    async def deliver(self, reply: Reply) -> DeliveryResult:
        self._typing.answered(reply)
        return await self._delivery.deliver(reply)

    # --- shutdown -----------------------------------------------------------------------------

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._delivery.close()
        await self._bot.close()
