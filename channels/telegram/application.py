"""python-telegram-bot's Application: built from the settings, initialized (getMe) once, shut down.

The Application is built without its updater or web server (the webhook is a route on our aiohttp
app, polling is `channels.telegram.polling`): relaybot uses only its `Bot`. The bot is initialized
by whoever needs it first (the webhook, the poller, a delivery), once, and a failing getMe at
start is logged with what to check (`startup_hint`).
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from telegram import Bot, User
from telegram.error import BadRequest, InvalidToken, NetworkError, TelegramError
from telegram.ext import Application

from channels.telegram.outbound import TelegramSender, call
from core.errors import ConfigError
from core.settings import Settings


def build_application(settings: Settings) -> Application:  # type: ignore[type-arg]
    """PTB's Application without updater or web server, aimed at TELEGRAM_API_URL."""
    if settings.telegram_bot_token is None:
        raise ConfigError("the Telegram channel needs TELEGRAM_BOT_TOKEN (from @BotFather)")
    api = settings.telegram_api_url.rstrip("/")
    timeout = settings.telegram.request_timeout_seconds
    return (
        Application.builder()
        .token(settings.telegram_bot_token.get_secret_value())
        .base_url(f"{api}/bot")
        .base_file_url(f"{api}/file/bot")
        .updater(None)
        .read_timeout(timeout)
        .write_timeout(timeout)
        .connect_timeout(min(timeout, 10.0))
        .build()
    )


def startup_hint(exc: TelegramError, api_url: str) -> str:
    """What to check when getMe fails at start: a DNS failure or a refused connection says nothing about the
    token, and sending the user to re-copy a good token hides the real cause (network, proxy, firewall)."""
    if isinstance(exc, InvalidToken):
        return "Telegram rejected the token: check TELEGRAM_BOT_TOKEN (copy it again from @BotFather)"
    if isinstance(exc, BadRequest):  # a NetworkError subclass in PTB, but Telegram did answer
        return f"Telegram refused getMe: check TELEGRAM_API_URL ({api_url})"
    if isinstance(exc, NetworkError):
        return (
            f"could not reach {api_url}: check this machine's network, DNS, proxy or firewall "
            "(or TELEGRAM_API_URL); the token was not checked"
        )
    return "Telegram refused getMe: see the error"


class TelegramBot:
    """The Application's bot, initialized on first use; raises ConfigError without TELEGRAM_BOT_TOKEN."""

    def __init__(self, settings: Settings, *, logger: structlog.typing.FilteringBoundLogger) -> None:
        self._application = build_application(settings)
        self._api_url = settings.telegram_api_url
        self._log = logger
        self._me: User | None = None
        self._sender: TelegramSender | None = None
        self._ready_lock = asyncio.Lock()

    @property
    def token(self) -> str:
        token: str = self._application.bot.token
        return token

    async def ready(self) -> tuple[Bot, User]:
        """The initialized bot (getMe once) and who it is; raises TelegramError while unreachable."""
        if self._me is None:
            async with self._ready_lock:
                if self._me is None:
                    await self._application.initialize()
                    self._me = self._application.bot.bot
                    self._sender = TelegramSender(self._application.bot)
        assert self._me is not None
        return self._application.bot, self._me

    async def bot(self) -> Bot:
        bot, _ = await self.ready()
        return bot

    async def sender(self) -> TelegramSender:
        """The sender, once the bot is initialized; a failing getMe is a DeliveryError like any call."""
        await call("getMe", self.ready)
        assert self._sender is not None
        return self._sender

    async def warm_up(self) -> None:
        """getMe once at start, so a wrong token or an unreachable API shows in the log at once."""
        try:
            _, me = await self.ready()
            await self._log.ainfo("telegram_ready", username=me.username)
        except TelegramError as exc:
            hint = startup_hint(exc, self._api_url)
            await self._log.aerror("telegram_unreachable", error=str(exc), hint=hint)

    async def close(self) -> None:
        if self._me is not None:
            with contextlib.suppress(TelegramError):
                await self._application.shutdown()
            self._me = None
        else:
            # A getMe that failed (bad token, network) leaves PTB's HTTP client open but the bot not
            # "initialized", so Application.shutdown would skip it: close the client's connection here.
            with contextlib.suppress(TelegramError):
                await self._application.bot.request.shutdown()
