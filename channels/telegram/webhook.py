"""The webhook route: Telegram's secret checked, the body bounded, the JSON made an `Update`.

    POST /telegram/webhook   X-Telegram-Bot-Api-Secret-Token: SECRET   (an Update as JSON)
    → 200 at once for anything we accept, skip, or cannot parse (Telegram would re-send it forever)
    → 401 without the right secret; 413 for a body over RELAYBOT_TELEGRAM__MAX_UPDATE_BYTES
    → 503 only when the message could not be handed to the bus: Telegram re-sends it later

The secret is TELEGRAM_WEBHOOK_SECRET, or when unset one derived from the bot token (see
`webhook_secret`), which `relaybot telegram set-webhook URL` registers, so both sides agree
without a second secret to distribute.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web
from telegram import Bot, Update
from telegram.error import TelegramError

from core.errors import StoreError
from core.settings import Settings

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
WEBHOOK_PATH = "/telegram/webhook"


def webhook_secret(settings: Settings) -> str | None:
    """TELEGRAM_WEBHOOK_SECRET, or HMAC-SHA256(bot token, label) in Telegram's alphabet (A-Z a-z 0-9 _ -).

    Deriving it from the token means `set-webhook` and every webhook process agree with nothing
    more to configure, and it is exactly as secret as the token (which controls the bot anyway).
    Rotating the token rotates it: run set-webhook again.
    """
    if settings.telegram_webhook_secret is not None:
        return settings.telegram_webhook_secret.get_secret_value()
    if settings.telegram_bot_token is None:
        return None
    token = settings.telegram_bot_token.get_secret_value().encode()
    digest = hmac.new(token, b"relaybot telegram webhook secret v1", hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


class Webhook:
    """The route's handler: `accept` hands an update over and raises StoreError when it could not."""

    def __init__(
        self,
        *,
        secret: str | None,
        max_update_bytes: int,
        bot: Callable[[], Awaitable[Bot]],
        accept: Callable[[Update], Awaitable[None]],
        logger: structlog.typing.FilteringBoundLogger,
    ) -> None:
        self._secret = (secret or "").encode()
        self._limit = max_update_bytes
        self._bot = bot
        self._accept = accept
        self._log = logger

    def _secret_ok(self, given: str | None) -> bool:
        # Without any secret nothing can be verified: every request is refused (401), not accepted.
        # encode as the header's own bytes: one that is not UTF-8 is a wrong secret (401), not a 500.
        return (
            bool(self._secret)
            and given is not None
            and hmac.compare_digest(given.encode("utf-8", "surrogateescape"), self._secret)
        )

    async def handle(self, request: web.Request) -> web.Response:
        if not self._secret_ok(request.headers.get(SECRET_HEADER)):
            await self._log.awarning("webhook_unauthorized", remote=request.remote)
            return web.json_response({"error": "unauthorized"}, status=401)
        limit = self._limit
        if request.content_length is not None and request.content_length > limit:
            return web.json_response({"error": "too_large"}, status=413)
        raw = await read_at_most(request, limit)
        if raw is None:
            return web.json_response({"error": "too_large"}, status=413)
        try:
            data = json.loads(raw)
        except ValueError:
            # Acknowledged: a 4xx/5xx makes Telegram re-send the same bytes for a day.
            await self._log.awarning("webhook_malformed_json", size=len(raw))
            return web.json_response({"ok": True, "ignored": "malformed JSON"})
        if not isinstance(data, dict) or not isinstance(data.get("update_id"), int):
            await self._log.awarning("webhook_not_an_update")
            return web.json_response({"ok": True, "ignored": "not an update"})
        try:
            bot = await self._bot()
        except TelegramError as exc:
            await self._log.aerror("telegram_unreachable", error=str(exc))
            return web.json_response({"error": "unavailable"}, status=503)
        try:
            update = Update.de_json(data, bot)
        except Exception as exc:  # PTB raises assorted errors on payloads it cannot model
            await self._log.awarning("webhook_bad_update", update_id=data["update_id"], error=repr(exc))
            return web.json_response({"ok": True, "ignored": "unparseable update"})
        try:
            await self._accept(update)
        except StoreError as exc:
            # Not handed over: Telegram re-sends it, and the bus takes it once when it is back.
            await self._log.aerror("publish_failed", update_id=update.update_id, error=str(exc))
            return web.json_response({"error": "unavailable"}, status=503, headers={"Retry-After": "5"})
        return web.json_response({"ok": True})


async def read_at_most(request: web.Request, limit: int) -> bytes | None:
    """The body, or None once it grows past `limit` (the rest is never read or parsed)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
