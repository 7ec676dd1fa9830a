"""SMS and WhatsApp through Twilio.

    POST /twilio/sms, POST /twilio/whatsapp    inbound messages (form-encoded, X-Twilio-Signature)
    POST /twilio/status?reply=ID               delivery status callbacks for the messages we sent

Every webhook is checked against the public URL Twilio called and answered at once with an empty
`<Response/>`: the message goes to the bus and the reply is sent later through the REST API, so a
slow model never runs into Twilio's 15-second webhook timeout. Duplicates (same MessageSid) are
dropped by the bus's atomic claim. SMS STOP/START/HELP are recorded and never reach the bot;
Twilio's own opt-out handling answers them. The channel ("sms" or "whatsapp") is the sender
address's prefix, not part of the user id: one phone number is one user (`tel:+1555...`).

Buttons: with RELAYBOT_TWILIO__WHATSAPP_BUTTONS, WhatsApp shows a reply's buttons as quick replies
(up to 3) or a list (up to 10) made through Twilio's Content API (channels.twilio.content), and the
tap comes back with the button's id in `ButtonPayload` (or `ListId`). SMS, and WhatsApp without the
setting (or when the Content API refuses), number them under the text ("Reply 1 for Billing, 2 for
A problem, 3 for Cancel."). Either way an answer that is one of those numbers or a label is the click
on that button of the conversation's newest offer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ClassVar
from urllib.parse import urlencode

from aiohttp import web
from multidict import MultiDict
from twilio.request_validator import RequestValidator

from channels.choices import card_text, choice_for, offered, with_choices
from channels.parts import send_parts
from channels.twilio.content import MAX_BODY_CHARS as CONTENT_BODY_CHARS
from channels.twilio.content import ContentCreator, InteractiveContent, interactive_content
from channels.twilio.inbound import (
    SIGNATURE_HEADER,
    WHATSAPP_PREFIX,
    BadRequest,
    Inbound,
    parse,
    parse_form,
    parse_status,
    public_url,
    signature_valid,
)
from channels.twilio.outbound import (
    OUTSIDE_WINDOW,
    UNKNOWN_CONTENT,
    UNSUBSCRIBED,
    TwilioSender,
    TwilioSendError,
    segments,
    sms_parts,
    whatsapp_parts,
)
from channels.twilio.state import TwilioState
from channels.twilio.state.memory import MemoryTwilioState
from channels.twilio.state.redis import RedisTwilioState
from core.actions import MAX_LABEL_CHARS, Action
from core.channel import Capabilities, ChannelContext, DeliveryResult, ReplyWindow
from core.envelope import Envelope, Reply, session_id_for
from core.errors import ConfigError, DeliveryError, StoreError
from core.offers import last_offer
from core.redisio import client_from_url
from core.settings import Settings

#: posts one part of a reply (its index, its text) and returns the MessageSid
PartPoster = Callable[[int, str], Awaitable[str]]

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
WHATSAPP_WINDOW_SECONDS = 24 * 3600
FAILED_STATUSES = frozenset({"failed", "undelivered"})


def reply_address(to: str, from_: str) -> str:
    """The envelope's reply_to: the user's address and the number they wrote to (we answer from it)."""
    return f"{to}|{from_}"


def parse_reply_address(value: str) -> tuple[str, str]:
    to, sep, from_ = value.partition("|")
    if not sep or not to or not from_:
        raise DeliveryError(f"reply_to {value!r} is not a Twilio reply address ('to|from')", retryable=False)
    return to, from_


def _twiml() -> web.Response:
    return web.Response(text=EMPTY_TWIML, content_type="text/xml")


def _refuse(status: int, message: str) -> web.Response:
    # Plain text: Twilio's debugger shows it; never a 429 (Twilio would not retry it anyway).
    return web.Response(status=status, text=message + "\n")


class TwilioChannel:
    channel_names: tuple[str, ...] = ("sms", "whatsapp")
    # One adapter for both channels; deliver() formats by reply.channel (plain for SMS, WhatsApp's own).
    capabilities = Capabilities(max_message_length=1600, markdown="plain")
    #: proactive WhatsApp messages past 24 hours: the bot's approved template, or refused (core.outbound)
    reply_windows: ClassVar[dict[str, ReplyWindow]] = {
        "whatsapp": ReplyWindow(
            seconds=WHATSAPP_WINDOW_SECONDS,
            template=lambda settings, bot: settings.twilio.whatsapp_templates.get(bot),
            setting="RELAYBOT_TWILIO__WHATSAPP_TEMPLATES",
        )
    }

    def __init__(self, ctx: ChannelContext, *, state: TwilioState | None = None) -> None:
        settings = ctx.settings
        if not settings.twilio_account_sid or settings.twilio_auth_token is None:
            raise ConfigError("the Twilio channel needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN")
        self._ctx = ctx
        self._settings = settings.twilio
        self._check_options(ctx)
        token = settings.twilio_auth_token.get_secret_value()
        self._validator = RequestValidator(token)
        self._sender = TwilioSender(
            account_sid=settings.twilio_account_sid,
            auth_token=token,
            api_url=settings.twilio_api_url,
            timeout=self._settings.send_timeout_seconds,
        )
        self._contents = ContentCreator(
            account_sid=settings.twilio_account_sid,
            auth_token=token,
            api_url=settings.twilio_api_url,
            timeout=self._settings.send_timeout_seconds,
        )
        self._state = state if state is not None else self._state_from(settings)
        self._log = ctx.logger.bind(channel="twilio")
        self._tasks: set[asyncio.Task[None]] = set()
        self._bot_for = {n.removeprefix(WHATSAPP_PREFIX): bot for n, bot in self._settings.numbers.items()}

    def _check_options(self, ctx: ChannelContext) -> None:
        bots = {b.name for b in ctx.bots}
        for option, named in (
            ("NUMBERS", self._settings.numbers.values()),
            ("WHATSAPP_TEMPLATES", self._settings.whatsapp_templates),
        ):
            unknown = sorted(set(named) - bots)
            if unknown:
                raise ConfigError(f"RELAYBOT_TWILIO__{option} names bots that do not exist: {', '.join(unknown)}")
        for bot, sid in self._settings.whatsapp_templates.items():
            if not sid.startswith("HX"):
                raise ConfigError(
                    f"RELAYBOT_TWILIO__WHATSAPP_TEMPLATES: {bot}'s template {sid!r} is not a Content SID (HX...)"
                )

    @staticmethod
    def _state_from(settings: Settings) -> TwilioState:
        # Opt-outs must hold across every process that receives or sends: the shared Redis when there is one.
        if settings.redis_url:
            return RedisTwilioState(client_from_url(settings.redis_url, max_connections=20), owns_client=True)
        return MemoryTwilioState()

    @staticmethod
    def is_configured(settings: Settings) -> bool:
        return bool(settings.twilio_account_sid and settings.twilio_auth_token)

    def register(self, app: web.Application) -> None:
        app.router.add_post("/twilio/sms", self._receive)
        app.router.add_post("/twilio/whatsapp", self._receive)
        app.router.add_post("/twilio/status", self._status)

    async def start(self) -> None:
        """Nothing to start: messages arrive through routes."""

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._sender.close()
        await self._state.close()

    # --- inbound -----------------------------------------------------------------------------

    async def _verified_form(self, request: web.Request) -> MultiDict[str] | web.Response:
        """The signed form, or the response refusing the request (403 unsigned/forged, 400 malformed)."""
        signature = request.headers.get(SIGNATURE_HEADER, "")
        if not signature:
            return _refuse(403, f"missing {SIGNATURE_HEADER}")
        raw = await request.read()  # aiohttp answers 413 past max_body_bytes, before we read a byte
        try:
            form = parse_form(raw)
        except BadRequest as exc:
            return _refuse(400, str(exc))
        if not signature_valid(self._validator, public_url(request, self._settings), form, signature):
            await self._log.awarning("twilio_bad_signature", path=request.path)
            return _refuse(403, f"{SIGNATURE_HEADER} does not match (is RELAYBOT_TWILIO__PUBLIC_BASE_URL right?)")
        return form

    async def _receive(self, request: web.Request) -> web.Response:
        form = await self._verified_form(request)
        if isinstance(form, web.Response):
            return form
        try:
            message = parse(form, max_text_chars=self._settings.max_text_chars)
        except BadRequest as exc:
            return _refuse(400, str(exc))
        try:
            return await self._accept(message)
        except StoreError as exc:
            # Not accepted: Twilio shows the error in its debugger and calls the fallback URL if set.
            await self._log.aerror("twilio_publish_failed", error=str(exc))
            return _refuse(503, "relaybot cannot take messages right now")

    async def _accept(self, message: Inbound) -> web.Response:
        log = self._log.bind(message_sid=message.message_sid, twilio_channel=message.channel)
        if message.channel == "whatsapp":
            await self._state.wrote_at(message.from_address, time.time())
        if message.keyword == "STOP":
            await self._state.opt_out(message.number)
            await log.ainfo("sms_opt_out")
            return _twiml()
        if message.keyword == "START":
            await self._state.opt_in(message.number)
            await log.ainfo("sms_opt_in")
            return _twiml()
        if message.keyword == "HELP":
            return _twiml()  # Twilio's opt-out management answers HELP with the sender's help text
        if message.channel == "sms" and await self._state.is_opted_out(message.number):
            await log.ainfo("sms_from_opted_out_number_ignored")
            return _twiml()
        attached = " ".join(f"[attachment: {a.mime_type or 'file'}]" for a in message.attachments)
        text = message.body.strip() or (message.button_text or "").strip() or attached
        if not text:
            return _twiml()  # nothing to answer (e.g. an empty SMS)
        to_number = message.to_address.removeprefix(WHATSAPP_PREFIX)
        bot = self._bot_for.get(to_number, self._ctx.bots.default)
        text, action = await self._choice(bot, message, text)
        envelope = Envelope.create(
            bot=bot,
            channel=message.channel,
            channel_message_id=message.message_sid,
            conversation_id=message.number,
            user_id=f"tel:{message.number}",
            user_name=message.profile_name,
            text=text,
            attachments=message.attachments,
            reply_to=reply_address(message.from_address, message.to_address),
            action=action,
        )
        accepted = await self._ctx.bus.publish(envelope)
        await log.ainfo("twilio_message" if accepted else "twilio_duplicate", envelope_id=envelope.id)
        return _twiml()

    async def _choice(self, bot: str, message: Inbound, text: str) -> tuple[str, Action | None]:
        """A tap on a WhatsApp button of the newest reply, or an answer naming one of its numbered choices
        ("2", or its label), is that click."""
        if message.attachments or len(text) > MAX_LABEL_CHARS + 5:
            return text, None  # not a choice: no history read for an ordinary message
        offer = await last_offer(self._ctx.history, session_id_for(bot, message.channel, message.number))
        if message.button_payload is not None:
            tapped = offer.find(message.button_payload)
            if tapped is not None:
                return tapped.label, offer.click(tapped)
            # A button of an older reply: WhatsApp already shows the tap as the user's message, so it is
            # read as that text (which may still name a choice of the newest reply).
            await self._log.ainfo("whatsapp_stale_button", button_id=message.button_payload[:64], offered=offer.ids)
            text = message.button_text or text
        button = choice_for(text, offer.buttons)
        if button is None:
            return text, None
        return button.label, offer.click(button)

    async def _status(self, request: web.Request) -> web.Response:
        form = await self._verified_form(request)
        if isinstance(form, web.Response):
            return form
        reply_id = request.query.get("reply", "")
        try:
            callback = parse_status(form)
        except BadRequest as exc:
            return _refuse(400, str(exc))
        if not reply_id:
            return _refuse(400, "the status callback URL has no reply id")
        status = callback.status + (f" ({callback.error_code})" if callback.error_code else "")
        try:
            await self._state.set_status(reply_id, callback.message_sid, status)
            if callback.status in FAILED_STATUSES:
                await self._record_failure(reply_id, callback.message_sid, status)
            if callback.error_code == str(UNSUBSCRIBED):
                await self._state.opt_out(form.get("To", "").removeprefix(WHATSAPP_PREFIX))
            if callback.error_code == str(OUTSIDE_WINDOW):
                # WhatsApp usually refuses a late free-form message after accepting it: send the template now.
                self._later(self._template_after_refusal(reply_id, request.query.get("bot", ""), form))
        except StoreError as exc:
            await self._log.aerror("twilio_status_not_recorded", error=str(exc))
            return _refuse(503, "relaybot cannot record the status right now")
        return web.Response(status=204)

    async def drain(self) -> None:
        """Wait for the work started by callbacks (a template sent after a refusal) to finish."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _later(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _template_after_refusal(self, reply_id: str, bot: str, form: MultiDict[str]) -> None:
        to, from_ = form.get("To", ""), form.get("From", "")
        if not to.startswith(WHATSAPP_PREFIX) or not from_ or bot not in self._ctx.bots:
            return
        reply = Reply(envelope_id="", session_id="", bot=bot, channel="whatsapp", reply_to="", text="", id=reply_id)
        try:
            result = await self._send_template(reply, to, from_, None)
            record = await self._ctx.records.get(reply_id)
            if record is not None:
                record.status = "sent"
                record.error = result.detail
                record.channel_message_ids += result.channel_message_ids
                await self._ctx.records.put(record)
        except (DeliveryError, StoreError) as exc:
            await self._log.awarning("twilio_template_not_sent", reply_id=reply_id, error=str(exc))

    async def _record_failure(self, reply_id: str, message_sid: str, status: str) -> None:
        record = await self._ctx.records.get(reply_id)
        if record is None:
            return
        record.status = "failed"
        record.error = f"Twilio reported message {message_sid} {status}"
        await self._ctx.records.put(record)
        await self._log.awarning("twilio_delivery_failed", reply_id=reply_id, message_sid=message_sid, status=status)

    async def delivery_statuses(self, reply_id: str) -> dict[str, str]:
        """What Twilio reported for each message sent for a reply (MessageSid -> status)."""
        return await self._state.statuses(reply_id)

    # --- outbound ----------------------------------------------------------------------------

    def _status_callback(self, reply: Reply) -> str | None:
        base = self._settings.public_base_url
        if not base or not self._settings.status_callbacks:
            return None
        # The reply id and bot ride in the (signed) URL, so a callback needs no lookup by MessageSid.
        return f"{base.rstrip('/')}/twilio/status?{urlencode({'reply': reply.id, 'bot': reply.bot})}"

    async def deliver(self, reply: Reply) -> DeliveryResult:
        if not reply.final:
            return DeliveryResult(delivered=False, detail="SMS and WhatsApp do not stream")
        to, from_ = parse_reply_address(reply.reply_to)
        number = to.removeprefix(WHATSAPP_PREFIX)
        if reply.channel == "sms" and await self._state.is_opted_out(number):
            raise DeliveryError(f"{number} texted STOP: not sent (they must text START first)", retryable=False)
        callback = self._status_callback(reply)

        async def post_text(_: int, body: str) -> str:
            return await self._sender.create(to=to, from_=from_, body=body, status_callback=callback)

        post: PartPoster = post_text
        content: InteractiveContent | None = None
        if reply.channel == "whatsapp":
            wrote = await self._state.last_wrote(to)
            if wrote is not None and time.time() - wrote > WHATSAPP_WINDOW_SECONDS:
                return await self._send_template(reply, to, from_, callback)
            content, content_sid = await self._button_content(reply)
            if content is not None and content_sid is not None:
                parts = whatsapp_parts(_body(reply), CONTENT_BODY_CHARS)
                post = self._with_buttons(post, content_sid, len(parts) - 1, to, from_, callback)
            else:
                parts = whatsapp_parts(with_choices(reply))
        else:
            parts = sms_parts(with_choices(reply))

        try:
            sids = await send_parts(self._ctx.streams, reply.id, parts, post)
        except TwilioSendError as exc:
            if exc.code == UNSUBSCRIBED:
                await self._state.opt_out(number)
            if exc.code == OUTSIDE_WINDOW and reply.channel == "whatsapp":
                return await self._send_template(reply, to, from_, callback)
            if exc.code == UNKNOWN_CONTENT and content is not None:
                # The resource was deleted in Twilio: made again on the outbox's next try.
                await self._state.forget_content(content.key)
                raise DeliveryError(f"{exc} (it will be created again)", retryable=True) from exc
            raise
        await self._log.ainfo(
            "twilio_sent", reply_id=reply.id, messages=len(sids), segments=sum(segments(p) for p in parts)
        )
        # A failure callback can beat our own record of the send (which would then overwrite it): look once.
        failed = {
            sid: s for sid, s in (await self._state.statuses(reply.id)).items() if s.split()[0] in FAILED_STATUSES
        }
        if failed:
            raise DeliveryError(f"sent, then Twilio reported {failed}", retryable=False)
        return DeliveryResult(delivered=True, channel_message_ids=sids)

    async def _button_content(self, reply: Reply) -> tuple[InteractiveContent | None, str | None]:
        """The reply's buttons as WhatsApp content and its Content SID, created on first use; (None, None)
        when the setting is off or the reply offers nothing, and (content, None) when the Content API
        failed: the buttons are then numbered in the text, which always works."""
        buttons = offered(reply)
        if not self._settings.whatsapp_buttons or not buttons:
            return None, None
        content = interactive_content(buttons)
        for cut in content.cuts:
            await self._log.awarning(
                "whatsapp_button_label_cut",
                reply_id=reply.id,
                button_id=cut.button_id,
                label_chars=len(cut.label),
                limit=cut.limit,
                shown=cut.shown,
            )
        sid = await self._state.content_sid(content.key)
        if sid is None:
            try:
                sid = await self._contents.create(content)
            except TwilioSendError as exc:
                await self._log.awarning("whatsapp_buttons_numbered", reply_id=reply.id, error=str(exc))
                return content, None
            await self._state.remember_content(content.key, sid)
            await self._log.ainfo("whatsapp_content_created", content_sid=sid, kind=content.kind, key=content.key)
        return content, sid

    def _with_buttons(
        self, post: PartPoster, content_sid: str, last: int, to: str, from_: str, callback: str | None
    ) -> PartPoster:
        """Parts before the last go as text; the last carries the buttons, its text as the content's body."""

        async def post_part(index: int, body: str) -> str:
            if index != last:
                return await post(index, body)
            return await self._sender.create(
                to=to,
                from_=from_,
                content_sid=content_sid,
                content_variables=json.dumps({"1": body}, ensure_ascii=False),
                status_callback=callback,
            )

        return post_part

    async def _send_template(self, reply: Reply, to: str, from_: str, callback: str | None) -> DeliveryResult:
        content_sid = self._settings.whatsapp_templates.get(reply.bot)
        if not content_sid:
            raise DeliveryError(
                f"not sent: {to} last wrote more than 24 hours ago, so WhatsApp accepts only an approved template, "
                f"and bot {reply.bot!r} has none (set RELAYBOT_TWILIO__WHATSAPP_TEMPLATES)",
                retryable=False,
            )

        async def post(_: int, __: str) -> str:
            return await self._sender.create(to=to, from_=from_, content_sid=content_sid, status_callback=callback)

        sids = await send_parts(self._ctx.streams, f"{reply.id}:template", [content_sid], post)
        return DeliveryResult(
            delivered=True,
            channel_message_ids=sids,
            detail=f"outside WhatsApp's 24-hour window: sent template {content_sid} instead of the reply",
        )


def _body(reply: Reply) -> str:
    """The reply's Markdown with its card as text: what goes above WhatsApp's buttons (never empty)."""
    pieces = [reply.text, card_text(reply.card) if reply.card is not None else ""]
    return "\n\n".join(p for p in pieces if p.strip()) or "Please choose:"
