"""The Slack channel: a bot in a Slack workspace that answers in threads, once, within the 3-second ack.

Inbound, over HTTP (`POST /slack/events`, the Events API) or Socket Mode (`--polling`, no public URL):
1. the body's size is checked before it is read, its signature (HMAC of the raw body, 5-minute
   window) before it is parsed: a forged or stale request gets 401 and nothing else happens; a
   signed body that is not of the shape Bolt reads (channels.slack.inbound.SlackPayload) gets 400;
2. Bolt's `AsyncApp` (real slack-bolt) answers `url_verification` and drops the bot's own events;
   our listener runs *before* the ack (`process_before_response=True`): it parses the event
   (channels/slack/inbound.py) and publishes the envelope on the bus, then acks. Publishing is quick
   (a Redis XADD) and survives a crash of this process, unlike a task Bolt would run after the ack;
3. Slack retries (at once, after ~1 and ~5 minutes) carry the same `event_id` and the same message:
   the envelope's dedupe key is built from the channel, the thread and the message `ts`, so the
   bus's atomic claim (7-day TTL) takes a message once, whether it comes as a retry or as both a
   `message` and an `app_mention` event. A retry is never dropped for its `X-Slack-Retry-Num`
   alone: if its first delivery never arrived, it is the one that gets processed. If the bus is
   down, the listener raises, Bolt answers 500, and Slack's retry brings the message again.

Buttons (channels/slack/blocks.py): a reply's buttons are a Block Kit actions block under its last
part; a click comes to `POST /slack/interactions` (signed and checked like events), is published as
the button's label before the ack, and the clicked message is then updated to show the choice (its
buttons removed). A click on an older reply's buttons is acked and not handled.

Outbound, `deliver` posts with `chat.postMessage` in the thread (channels/slack/delivery.py): the
Markdown reply becomes mrkdwn split at 3,500 characters; a retried split reply resumes after the
parts already posted (`channels.parts.send_parts`, recorded in the shared stream registry).
Streamed replies post one message and edit it at most once a second (`chat.update`); the final
reply edits it with the complete text.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Coroutine
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped
from slack_bolt.request.internals import parse_body
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from channels.choices import card_text, offered
from channels.formatting import render_parts
from channels.inbound import Ignored
from channels.parts import send_parts
from channels.slack.blocks import ACTION_ID, MAX_SECTION_CHARS, SlackClick, blocks_for, chosen_blocks, parse_click
from channels.slack.delivery import SlackPoster
from channels.slack.inbound import Inbound, check_request_body, parse
from channels.slack.users import UserNames
from channels.streaming import EditStreamer
from core.actions import Button
from core.channel import Capabilities, ChannelContext, DeliveryResult
from core.envelope import Envelope, Reply, session_id_for
from core.errors import ConfigError, DeliveryError, StoreError
from core.offers import last_offer
from core.settings import Settings

MAX_MESSAGE_CHARS = 3500  # Slack truncates at 40,000; shorter parts read better in a thread
EVENTS_PATH = "/slack/events"
INTERACTIONS_PATH = "/slack/interactions"


class SlackChannel:
    channel_names = ("slack",)
    capabilities = Capabilities(max_message_length=MAX_MESSAGE_CHARS, markdown="mrkdwn", can_edit=True, can_stream=True)

    def __init__(self, ctx: ChannelContext) -> None:
        settings = ctx.settings
        if settings.slack_bot_token is None:
            raise ConfigError("the Slack channel needs SLACK_BOT_TOKEN (the app's xoxb- bot token)")
        if settings.slack_signing_secret is None and not settings.polling:
            raise ConfigError(
                "the Slack channel needs SLACK_SIGNING_SECRET to verify events (Basic Information → Signing Secret), "
                "or --polling with SLACK_APP_TOKEN for Socket Mode"
            )
        self._ctx = ctx
        self._options = settings.slack
        self._bot = self._options.bot or ctx.bots.default
        if self._bot not in ctx.bots:
            raise ConfigError(f"RELAYBOT_SLACK__BOT names {self._bot!r}, which is not a bot in {settings.bots_dir}")
        self._log = ctx.logger.bind(channel="slack")
        secret = settings.slack_signing_secret
        self._signing_secret = secret.get_secret_value() if secret else None
        self._verifier = SignatureVerifier(self._signing_secret) if self._signing_secret else None
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._options.api_timeout_seconds))
        # retry_handlers=[]: the outbox retries, knowing which sends are safe to repeat; the SDK's own
        # connection-error retry could post a message twice.
        self.client = AsyncWebClient(
            token=settings.slack_bot_token.get_secret_value(),
            base_url=_with_slash(settings.slack_api_url),
            session=self._http,
            timeout=max(1, round(self._options.api_timeout_seconds)),
            retry_handlers=[],
        )
        self._app = AsyncApp(
            client=self.client,
            signing_secret=self._signing_secret,
            # `_events` verifies the signature before Bolt sees the request (and answers 401 itself);
            # Socket Mode has no signatures. A second HMAC of every event in Bolt would check nothing new.
            request_verification_enabled=False,
            process_before_response=True,
            logger=_bolt_logger(),
        )
        self._app.event("message")(self._on_message)
        self._app.event("app_mention")(self._on_message)
        self._app.event(re.compile(".*"))(self._on_other_event)
        self._app.action(ACTION_ID)(self._on_click)
        self._tasks: set[asyncio.Task[None]] = set()
        self._users = UserNames(
            self.client,
            size=self._options.user_cache_size,
            ttl_seconds=self._options.user_cache_ttl_seconds,
            timeout_seconds=self._options.user_lookup_timeout_seconds,
            logger=self._log,
        )
        self._poster = SlackPoster(self.client)
        self._streamer = EditStreamer(
            ctx.streams,
            self._poster,
            dialect="mrkdwn",
            limit=MAX_MESSAGE_CHARS,
            interval=self._options.stream_interval_seconds,
            open_after=self._options.stream_open_after_seconds,
            logger=self._log,
        )
        self._socket: Any = None

    @staticmethod
    def is_configured(settings: Settings) -> bool:
        if settings.slack_bot_token is None:
            return False
        if settings.polling:
            return settings.slack_app_token is not None
        return settings.slack_signing_secret is not None

    # --- inbound -------------------------------------------------------------------------------

    def register(self, app: web.Application) -> None:
        if self._verifier is not None:
            app.router.add_post(EVENTS_PATH, self._events)
            # Interactivity's Request URL: signed like events, read by the same Bolt app.
            app.router.add_post(INTERACTIONS_PATH, self._events)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        limit = self._options.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            await self._log.awarning("slack_body_too_large", bytes=request.content_length)
            return web.json_response({"error": "body_too_large"}, status=413)
        raw: bytes | None
        try:
            raw = await request.read()  # bounded by the app's client_max_size; cached for Bolt's text()
        except web.HTTPRequestEntityTooLarge:
            raw = None
        if raw is None or len(raw) > limit:
            await self._log.awarning("slack_body_too_large", bytes=None if raw is None else len(raw))
            return web.json_response({"error": "body_too_large"}, status=413)
        assert self._verifier is not None
        if not signature_valid(
            self._verifier,
            raw,
            request.headers.get("X-Slack-Request-Timestamp"),
            request.headers.get("X-Slack-Signature"),
        ):
            await self._log.awarning("slack_bad_signature", remote=request.remote)
            return web.json_response({"error": "invalid_signature"}, status=401)
        try:
            # The body as Bolt will read it (JSON, a form, or a form's JSON `payload`), checked first.
            content_type = request.headers.get("Content-Type", "").split(";")[0] or None
            check_request_body(parse_body(raw.decode("utf-8"), content_type))
        except ValueError as exc:
            await self._log.awarning("slack_malformed_body", error=str(exc))
            return web.json_response({"error": "malformed_body"}, status=400)
        bolt_response = await self._app.async_dispatch(await to_bolt_request(request))
        return await to_aiohttp_response(bolt_response)

    async def _on_message(self, ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext) -> None:
        event = body.get("event") or {}
        event_id = body.get("event_id")
        bot_user_id = context.bot_user_id
        found = parse(
            event,
            bot_user_id=bot_user_id,
            bot_id=context.bot_id,
            ignore_bots=self._options.ignore_bots,
            dm_threads=self._options.dm_threads,
        )
        if isinstance(found, Ignored):
            await self._log.adebug("slack_event_ignored", event_id=event_id, reason=found.reason)
            await ack()
            return
        bot = self._bot
        if found.kind == "thread" and not await self._in_thread(bot, found):
            await self._log.adebug("slack_event_ignored", event_id=event_id, reason="a thread the bot is not in")
            await ack()
            return
        envelope = Envelope.create(
            bot=bot,
            channel="slack",
            channel_message_id=found.ts,
            conversation_id=found.conversation_id,
            user_id=f"slack:{found.user}",
            user_name=await self._users.get(found.user),
            text=found.text,
            attachments=found.attachments,
        )
        try:
            accepted = await self._ctx.bus.publish(envelope)
        except StoreError as exc:
            # Not acked: Bolt answers 500, and Slack's retry brings the message back (nothing was claimed).
            await self._log.aerror("slack_publish_failed", event_id=event_id, error=str(exc))
            raise
        await self._log.ainfo(
            "slack_message" if accepted else "slack_duplicate",
            event_id=event_id,
            kind=found.kind,
            session_id=envelope.session_id,
            user_id=envelope.user_id,
        )
        await ack()

    async def _in_thread(self, bot: str, found: Inbound) -> bool:
        """Whether the thread is the bot's: it started it, or it answers there already (a history).

        A reply sent while the bot's first answer in the thread is still being written finds no
        history yet and is not answered; mentioning the bot always is.
        """
        if not self._options.thread_replies:
            return False
        if found.in_bot_thread:
            return True
        return bool(await self._ctx.history.recent(session_id_for(bot, "slack", found.conversation_id), 1))

    async def _on_click(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        """A click on a relaybot button: published (before the ack, like a message) if it is one of the
        conversation's newest offer, then the clicked message shows the choice."""
        click = parse_click(body)
        if isinstance(click, Ignored):
            await self._log.ainfo("slack_click_ignored", reason=click.reason)
            await ack()
            return
        bot = self._bot
        try:
            offer = await last_offer(self._ctx.history, session_id_for(bot, "slack", click.conversation_id))
        except StoreError as exc:
            await self._log.aerror("slack_offer_lookup_failed", error=str(exc))
            raise  # Bolt answers 500: the user sees the click fail and can click again
        button = offer.buttons[click.index] if offer.seq == click.seq and click.index < len(offer.buttons) else None
        if button is None:
            await self._log.ainfo("slack_click_not_offered", seq=click.seq, offered_seq=offer.seq)
            await ack()
            return
        envelope = Envelope.create(
            bot=bot,
            channel="slack",
            channel_message_id=f"action:{click.action_ts}:{click.user}",
            conversation_id=click.conversation_id,
            user_id=f"slack:{click.user}",
            user_name=await self._users.get(click.user),
            text=button.label,
            action=offer.click(button),
        )
        try:
            accepted = await self._ctx.bus.publish(envelope)
        except StoreError as exc:
            await self._log.aerror("slack_publish_failed", error=str(exc))
            raise
        await self._log.ainfo("slack_click" if accepted else "slack_duplicate", action=button.id)
        await ack()
        if accepted:
            self._spawn(self._show_choice(click, button.label))

    async def _show_choice(self, click: SlackClick, label: str) -> None:
        try:
            blocks = chosen_blocks(click.blocks, label, click.user)
            await self._poster.update(click.channel, click.message_ts, f"You chose {label}", blocks=blocks)
        except DeliveryError as exc:  # cosmetic: the click was taken either way
            await self._log.ainfo("slack_choice_not_shown", error=str(exc))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work, name="slack-show-choice")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _on_other_event(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        # Acked, so Slack does not retry (or disable the subscription) over events we do not use.
        event = body.get("event") or {}
        await self._log.ainfo("slack_event_unhandled", event_id=body.get("event_id"), type=event.get("type"))
        await ack()

    async def start(self) -> None:
        """With --polling, receive through Socket Mode (an xapp- token; no public URL needed)."""
        if not self._ctx.settings.polling:
            return
        token = self._ctx.settings.slack_app_token
        if token is None:
            raise ConfigError("Slack Socket Mode (--polling) needs SLACK_APP_TOKEN (an xapp- app-level token)")
        # Imported here: the Socket Mode client is only needed in development.
        from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

        client = AsyncWebClient(base_url=_with_slash(self._ctx.settings.slack_api_url), retry_handlers=[])
        try:
            # Checked first: the SDK's connect() would retry a bad token forever, holding up the start.
            opened = await client.apps_connections_open(app_token=token.get_secret_value())
        except SlackApiError as exc:
            raise ConfigError(
                f"Slack Socket Mode could not connect ({exc.response.get('error')}): SLACK_APP_TOKEN must be an "
                "app-level xapp- token with the connections:write scope, for an app with Socket Mode enabled"
            ) from exc
        self._socket = AsyncSocketModeHandler(self._app, token.get_secret_value(), web_client=client)
        self._socket.client.wss_uri = opened["url"]
        await self._socket.connect_async()
        await self._log.ainfo("slack_socket_mode_connected")

    # --- outbound ------------------------------------------------------------------------------

    async def deliver(self, reply: Reply) -> DeliveryResult:
        if not reply.final:
            return await self._streamer.fragment(reply)
        buttons = offered(reply)
        text = reply.text if reply.card is None else f"{reply.text}\n\n{card_text(reply.card)}"
        # With buttons the last part is a section block, which holds 3,000 characters.
        parts = render_parts(text, "mrkdwn", MAX_SECTION_CHARS if buttons else MAX_MESSAGE_CHARS)
        blocks = await self._blocks(reply, buttons, parts[-1])

        pending = parts  # the parts left to post: all, or those after a streamed first one

        async def post(index: int, text: str) -> str:
            last = index == len(pending) - 1
            return await self._poster.post(reply, text, blocks=blocks if last else None)

        try:
            ref = await self._streamer.finish(reply, parts[0])
            if ref is None:
                ids = await send_parts(self._ctx.streams, reply.id, parts, post)
                return DeliveryResult(delivered=True, channel_message_ids=ids)
            try:
                await self._poster.edit(reply, ref, parts[0], blocks=blocks if len(parts) == 1 else None)
            except DeliveryError as exc:
                if exc.retryable:
                    raise
                # The streamed message is gone (deleted, too old to edit): post the reply instead.
                await self._log.ainfo("slack_stream_edit_failed", reply_id=reply.id, error=str(exc))
                ids = await send_parts(self._ctx.streams, reply.id, parts, post)
                return DeliveryResult(delivered=True, channel_message_ids=ids)
            pending = parts[1:]
            rest = await send_parts(self._ctx.streams, reply.id, pending, post)
            return DeliveryResult(delivered=True, channel_message_ids=(ref, *rest))
        except StoreError as exc:
            raise DeliveryError(f"cannot record the reply's progress: {exc}", retryable=True) from exc
        except DeliveryError as exc:
            if not exc.retryable:
                await self._log.aerror("slack_delivery_dropped", reply_id=reply.id, error=str(exc))
            raise

    async def _blocks(self, reply: Reply, buttons: tuple[Button, ...], text: str) -> list[dict[str, Any]] | None:
        if not buttons or reply.seq is None:
            return None
        blocks, cut = blocks_for(text, buttons, reply.seq)
        if cut:
            await self._log.awarning("slack_button_labels_truncated", buttons=cut, limit=75, reply_id=reply.id)
        return blocks

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._socket is not None:
            await self._socket.close_async()
            self._socket = None
        await self._streamer.close()
        await self._users.close()
        await self._http.close()


def signature_valid(verifier: SignatureVerifier, raw: bytes, timestamp: str | None, signature: str | None) -> bool:
    """slack_sdk's check of the signature, given what it can read: it raises (a 500) on a timestamp
    that is not a number, a signature that is not ASCII or a body that is not UTF-8, none of which
    Slack sends."""
    if timestamp is None or signature is None or not signature.isascii():
        return False
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        return False
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return verifier.is_valid(raw, timestamp, signature)


def _with_slash(url: str) -> str:
    return url if url.endswith("/") else url + "/"


class _SameTokenWarning(logging.Filter):
    """Drops Bolt's "As you gave `client` as well, `token` will be unused." at start-up.

    AsyncApp reads SLACK_BOT_TOKEN from the environment whenever it is given no `token`, then warns that
    the `client` we pass wins over it. That client carries the very same token (the settings read that
    variable), so the warning only alarms a new user. Bolt has no argument to skip the environment read.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != warning_client_prioritized_and_token_skipped()


_SAME_TOKEN_WARNING = _SameTokenWarning()


def _bolt_logger() -> logging.Logger:
    logger = logging.getLogger("relaybot.slack.bolt")
    logger.addFilter(_SAME_TOKEN_WARNING)  # once: addFilter skips a filter it already has
    return logger
