"""The Telegram channel: a webhook on our aiohttp app, or long polling, on python-telegram-bot.

    POST /telegram/webhook   X-Telegram-Bot-Api-Secret-Token: SECRET   (an Update as JSON)
    → 200 at once for anything we accept, skip, or cannot parse (Telegram would re-send it forever)
    → 401 without the right secret; 413 for a body over RELAYBOT_TELEGRAM__MAX_UPDATE_BYTES
    → 503 only when the message could not be handed to the bus: Telegram re-sends it later

The secret is TELEGRAM_WEBHOOK_SECRET, or when unset one derived from the bot token (see
`webhook_secret`), which `relaybot telegram set-webhook URL` registers, so both sides agree
without a second secret to distribute. python-telegram-bot's `Application` is built without its
updater or web server: we use its `Bot` and parse each update with `Update.de_json`.

Duplicates: update ids seen recently are skipped at once (a TTL set: ids are not contiguous, they
can jump); the authority is the bus, which takes each (chat, message id) once across processes.
Replies: HTML rendered from the Markdown answer, split at 4,096 characters, streamed by editing one
message (throttled to about one edit a second), with flood limits and blocked users handled as the
outbox expects (see `channels.telegram.outbound`).
Buttons: an inline keyboard under the reply's last part; a press (callback query) is answered at
once with answerCallbackQuery and becomes an envelope whose text is the button's label (see
`channels.telegram.keyboards` for the 64-byte callback_data and the short key it carries).
Files users send: envelopes carry `telegram-file:FILE_ID` references, never download URLs (those
contain the bot token); `file_url` and `download` resolve one at use (see `channels.telegram.files`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import time
from collections import OrderedDict
from collections.abc import Coroutine
from typing import Any

from aiohttp import web
from telegram import Bot, InlineKeyboardMarkup, Update, User
from telegram.error import BadRequest, InvalidToken, NetworkError, TelegramError
from telegram.ext import Application

from channels.choices import card_text
from channels.formatting import render_parts
from channels.inbound import Ignored
from channels.parts import send_parts
from channels.streaming import EditStreamer
from channels.telegram.blocks import BlockedChats
from channels.telegram.drafts import DraftStreamer
from channels.telegram.files import TelegramFiles, attachment_of
from channels.telegram.inbound import Click, Inbound, MembershipChange, parse, parse_address
from channels.telegram.keyboards import keyboard_for, parse_key
from channels.telegram.outbound import ChatBlocked, TelegramSender, call
from channels.telegram.polling import Poller
from core.channel import Capabilities, ChannelContext, DeliveryResult
from core.envelope import Attachment, Envelope, Reply, session_id_for
from core.errors import ConfigError, DeliveryError, StoreError
from core.offers import last_offer
from core.settings import Settings

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
WEBHOOK_PATH = "/telegram/webhook"
MAX_LENGTH = 4096
#: the updates relaybot handles; set-webhook and long polling ask Telegram for these only
ALLOWED_UPDATES = ("message", "my_chat_member", "callback_query")
#: what a press on a button of an older reply shows (Telegram keeps old keyboards in the chat)
STALE_CLICK = "That choice is no longer available: please type your answer."
_SEEN_TTL_SECONDS = 24 * 3600  # Telegram gives up re-sending an update after about a day
_SEEN_MAX = 100_000
_TYPING_REFRESH_SECONDS = 4.5


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


class _TtlSet:
    """Recently seen keys, forgotten after `ttl` seconds or beyond `size` entries (oldest first)."""

    def __init__(self, *, ttl: float, size: int) -> None:
        self._entries: OrderedDict[int, float] = OrderedDict()
        self._ttl = ttl
        self._size = size

    def __contains__(self, key: int) -> bool:
        expires = self._entries.get(key)
        return expires is not None and expires > time.monotonic()

    def add(self, key: int) -> None:
        now = time.monotonic()
        self._entries[key] = now + self._ttl
        self._entries.move_to_end(key)
        while self._entries and (len(self._entries) > self._size or next(iter(self._entries.values())) <= now):
            self._entries.popitem(last=False)


class _StreamOps:
    """What EditStreamer needs (post, edit), for one reply's chat."""

    def __init__(self, channel: TelegramChannel) -> None:
        self._channel = channel

    async def post(self, reply: Reply, text: str) -> str:
        return str(await self._channel.post_part(reply, text, first=True))

    async def edit(self, reply: Reply, message_ref: str, text: str) -> None:
        chat_id, _ = _address(reply)
        sender = await self._channel.sender()
        await self._channel.guard_blocked(reply, sender.edit(chat_id, int(message_ref), text))


def _address(reply: Reply) -> tuple[int, int | None]:
    try:
        return parse_address(reply.reply_to)
    except ValueError as exc:
        raise DeliveryError(str(exc), retryable=False) from exc


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
        self._application = build_application(ctx.settings)
        self._secret = (webhook_secret(ctx.settings) or "").encode()
        self._bot_name = self._opts.bot or ctx.bots.default
        if self._bot_name not in ctx.bots:
            raise ConfigError(f"RELAYBOT_TELEGRAM__BOT names {self._bot_name!r}, which is not a bot in the bots folder")
        self._me: User | None = None
        self._sender: TelegramSender | None = None
        self._ready_lock = asyncio.Lock()
        self._seen = _TtlSet(ttl=_SEEN_TTL_SECONDS, size=_SEEN_MAX)
        self._blocks = BlockedChats(ctx.history)
        self._streamer = EditStreamer(
            ctx.streams,
            _StreamOps(self),
            dialect="telegram-html",
            limit=MAX_LENGTH,
            interval=self._opts.edit_interval_seconds,
            open_after=self._opts.edit_open_after_seconds,
            logger=ctx.logger.bind(channel="telegram"),
        )
        self._drafts = (
            DraftStreamer(
                ctx.streams,
                self._send_draft,
                limit=MAX_LENGTH,
                interval=self._opts.edit_interval_seconds,
                logger=ctx.logger.bind(channel="telegram"),
            )
            if self._opts.drafts_in_private_chats
            else None
        )
        self._files = TelegramFiles(
            self._bot, token=self._application.bot.token, timeout=self._opts.file_timeout_seconds
        )
        self._tasks: set[asyncio.Task[Any]] = set()
        self._answering: dict[str, asyncio.Event] = {}
        self._poller: asyncio.Task[None] | None = None
        self._log = ctx.logger.bind(channel="telegram")

    @staticmethod
    def is_configured(settings: Settings) -> bool:
        return settings.telegram_bot_token is not None

    def register(self, app: web.Application) -> None:
        app.router.add_post(WEBHOOK_PATH, self._webhook)

    # --- the bot ------------------------------------------------------------------------------

    async def _ready(self) -> tuple[Bot, User]:
        """The initialized bot (getMe once) and who it is; raises TelegramError while unreachable."""
        if self._me is None:
            async with self._ready_lock:
                if self._me is None:
                    await self._application.initialize()
                    self._me = self._application.bot.bot
                    self._sender = TelegramSender(self._application.bot)
        assert self._me is not None
        return self._application.bot, self._me

    async def _bot(self) -> Bot:
        bot, _ = await self._ready()
        return bot

    async def sender(self) -> TelegramSender:
        """The sender, once the bot is initialized; a failing getMe is a DeliveryError like any call."""
        await call("getMe", self._ready)
        assert self._sender is not None
        return self._sender

    # --- inbound: webhook ---------------------------------------------------------------------

    def _secret_ok(self, given: str | None) -> bool:
        # Without any secret nothing can be verified: every request is refused (401), not accepted.
        # encode as the header's own bytes: one that is not UTF-8 is a wrong secret (401), not a 500.
        return (
            bool(self._secret)
            and given is not None
            and hmac.compare_digest(given.encode("utf-8", "surrogateescape"), self._secret)
        )

    async def _webhook(self, request: web.Request) -> web.Response:
        if not self._secret_ok(request.headers.get(SECRET_HEADER)):
            await self._log.awarning("webhook_unauthorized", remote=request.remote)
            return web.json_response({"error": "unauthorized"}, status=401)
        limit = self._opts.max_update_bytes
        if request.content_length is not None and request.content_length > limit:
            return web.json_response({"error": "too_large"}, status=413)
        raw = await _read_at_most(request, limit)
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
            bot, _ = await self._ready()
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

    # --- inbound: shared by webhook and polling -----------------------------------------------

    async def _accept(self, update: Update) -> None:
        """Hand one update to the bus (or act on it); raises StoreError if it could not be."""
        if update.update_id in self._seen:
            await self._log.ainfo("duplicate_update", update_id=update.update_id)
            return
        _, me = await self._ready()
        try:
            outcome: Inbound | Click | Ignored | MembershipChange = parse(
                update, me=me, require_mention=self._opts.groups_require_mention
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
        if not await self._ctx.bus.publish(envelope):
            await self._log.ainfo("duplicate_message", dedupe_key=envelope.dedupe_key)
            return
        await self._log.ainfo("message_accepted", envelope_id=envelope.id, session_id=envelope.session_id)
        self._spawn(self._typing(inbound), f"telegram-typing-{inbound.chat_id}")

    async def _accept_click(self, click: Click) -> None:
        """A button press: published as the button's label with the click, if it is one of the newest
        reply's buttons; else only answered. Raises StoreError when the offer cannot be read (503:
        Telegram sends the press again)."""
        session = session_id_for(self._bot_name, "telegram", click.conversation_id)
        offer = await last_offer(self._ctx.history, session)
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
        accepted = await self._ctx.bus.publish(envelope)
        # Answered in any case (a re-sent update too): until it is, the user's button shows a spinner.
        self._spawn(self._answer_click(click.query_id, None), f"telegram-click-{click.query_id}")
        if not accepted:
            await self._log.ainfo("duplicate_message", dedupe_key=envelope.dedupe_key)
            return
        await self._log.ainfo("click_accepted", envelope_id=envelope.id, action=button.id)
        self._spawn(self._typing(click), f"telegram-typing-{click.chat_id}")

    async def _answer_click(self, query_id: str, notice: str | None) -> None:
        try:
            await (await self.sender()).answer_click(query_id, notice)
        except DeliveryError as exc:  # an old query (answered already, or past Telegram's window): harmless
            await self._log.ainfo("click_not_answered", error=str(exc))

    async def _typing(self, inbound: Inbound | Click) -> None:
        """Show "typing…" until the answer starts arriving in this chat (Telegram shows it for 5 s a time).

        Streamed fragments reach every Telegram process, so whichever took the message stops here.
        """
        address = inbound.conversation_id
        answered = self._answering.setdefault(address, asyncio.Event())
        deadline = time.monotonic() + self._opts.typing_max_seconds
        try:
            while not answered.is_set() and time.monotonic() < deadline:
                try:
                    await (await self.sender()).typing(inbound.chat_id, inbound.thread_id)
                except DeliveryError as exc:
                    await self._log.adebug("typing_not_shown", error=str(exc))
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(answered.wait(), _TYPING_REFRESH_SECONDS)
        finally:
            if self._answering.get(address) is answered:
                del self._answering[address]

    def _answered(self, reply: Reply) -> None:
        event = self._answering.get(reply.reply_to)
        if event is not None:
            event.set()

    async def _record_membership(self, change: MembershipChange) -> None:
        conversation = str(change.chat_id)
        await self._blocks.record(
            session_id=session_id_for(self._bot_name, "telegram", conversation),
            bot=self._bot_name,
            user_id=f"telegram:{change.chat_id}",
            blocked=change.blocked,
        )
        await self._log.ainfo("membership_changed", chat_id=change.chat_id, blocked=change.blocked)

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

    # --- inbound: long polling ----------------------------------------------------------------

    async def start(self) -> None:
        """Long polling when RELAYBOT_POLLING is set; otherwise the webhook route receives."""
        if self._ctx.settings.polling and self._poller is None:
            poller = Poller(
                bot=self._bot,
                accept=self._accept,
                timeout=self._opts.poll_timeout_seconds,
                allowed_updates=list(ALLOWED_UPDATES),
                logger=self._log,
            )
            self._poller = asyncio.create_task(poller.run(), name="telegram-polling")
        else:
            self._spawn(self._warm_up(), "telegram-warm-up")

    async def _warm_up(self) -> None:
        """getMe once at start, so a wrong token or an unreachable API shows in the log at once."""
        try:
            _, me = await self._ready()
            await self._log.ainfo("telegram_ready", username=me.username)
        except TelegramError as exc:
            hint = startup_hint(exc, self._ctx.settings.telegram_api_url)
            await self._log.aerror("telegram_unreachable", error=str(exc), hint=hint)

    # --- outbound -----------------------------------------------------------------------------

    async def guard_blocked(self, reply: Reply, request: Coroutine[Any, Any, Any]) -> Any:
        """Await a send; on 403 record the chat as blocked before re-raising."""
        try:
            return await request
        except ChatBlocked as exc:
            chat_id, _ = _address(reply)
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
        chat_id, thread_id = _address(reply)
        if first:
            await self._check_not_blocked(reply)
        # In a group, the first message answers the user's message so the thread of talk is clear.
        original = reply.in_reply_to or ""
        quote = int(original) if first and chat_id < 0 and original.isdigit() else None
        sender = await self.sender()
        message_id: int = await self.guard_blocked(
            reply, sender.send(chat_id, thread_id, text_html, reply_to_message=quote, keyboard=keyboard)
        )
        return message_id

    async def deliver(self, reply: Reply) -> DeliveryResult:
        self._answered(reply)
        chat_id, _ = _address(reply)
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
            sender = await self.sender()
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
            ids.extend(await send_parts(self._ctx.streams, reply.id, rest, post))
        except StoreError as exc:
            raise DeliveryError(f"cannot record which parts were sent: {exc}", retryable=True) from exc
        return DeliveryResult(delivered=True, channel_message_ids=tuple(ids))

    async def _send_draft(self, reply: Reply, draft_id: int, text_html: str) -> None:
        chat_id, thread_id = _address(reply)
        sender = await self.sender()
        await self.guard_blocked(reply, sender.draft(chat_id, thread_id, draft_id, text_html))

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
        await self._streamer.close()
        if self._drafts is not None:
            await self._drafts.close()
        if self._me is not None:
            with contextlib.suppress(TelegramError):
                await self._application.shutdown()
            self._me = None
        else:
            # A getMe that failed (bad token, network) leaves PTB's HTTP client open but the bot not
            # "initialized", so Application.shutdown would skip it: close the client's connection here.
            with contextlib.suppress(TelegramError):
                await self._application.bot.request.shutdown()


async def _read_at_most(request: web.Request, limit: int) -> bytes | None:
    """The body, or None once it grows past `limit` (the rest is never read or parsed)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
