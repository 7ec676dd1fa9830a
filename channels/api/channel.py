"""The generic HTTP API channel, for back ends and async channels of your own.

    POST /api/messages   Authorization: Bearer API_KEY
    {"conversation_id": "...", "user_id": "...", "text": "...", "message_id": "...",
     "callback_url": "https://you.example.com/relaybot", "bot": "support", "user_name": "...",
     "tenant": "acme"}   (optional: the customer organisation; sees documents ingested for tenant:acme)
    → 202 {"status": "accepted", "envelope_id": ..., "session_id": ...}
    → 200 {"status": "duplicate"} for a message_id already accepted (it is not answered twice)

Proactive messages, to a user who wrote to the bot before, on any channel (docs/handoff.md):
    POST /api/outbound   Authorization: Bearer API_KEY
    {"channel": "whatsapp", "conversation_id": "+15550001111", "text": "...", "bot": "support"}
    → 202 {"status": "queued", "reply_id", "session_id", "seq", "template"}  (template: sent instead of
      the text outside WhatsApp's 24-hour window); 404 unknown_conversation; 409 outside_window

Instead of "text", a click on a button of the conversation's newest reply:
    {..., "action": {"id": "cancel.yes", "message_id": "4"}}   (message_id, optional: that reply's seq)
    → 400 "unknown_action" for an id the newest reply did not offer (nothing is queued)
The message's text is then the button's label and its value the one the button was offered with.

The reply is POSTed to `callback_url` as JSON, signed: `X-Relaybot-Signature: sha256=HEX` where
HEX = HMAC-SHA256(signing secret, "{X-Relaybot-Timestamp}.{raw body}"); it carries the reply's
`actions` (buttons: id, label, value?, style?) and `card` (or null); with an `Idempotency-Key`
header that is the same on every retry. Callbacks answering 429 or 5xx are retried with backoff
(Retry-After honoured); other 4xx answers are recorded as failed. Callbacks never go to loopback,
private, link-local or multicast addresses unless allowed (see `channels.api.targets`), and
redirects are not followed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import TypeVar
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from channels.api.targets import CallbackTargetRefused, PublicAddressResolver, refusal
from core.actions import Action
from core.channel import Capabilities, ChannelContext, DeliveryResult
from core.envelope import Envelope, Reply, session_id_for
from core.errors import DeliveryError, StoreError
from core.offers import last_offer
from core.outbound import OutboundRefused
from core.secrets import API_CALLBACKS, derive_key
from core.settings import Settings

SIGNATURE_HEADER = "X-Relaybot-Signature"
TIMESTAMP_HEADER = "X-Relaybot-Timestamp"


class ApiAction(BaseModel):
    """A click: the button's id, and optionally the seq of the reply that offered it."""

    model_config = {"extra": "forbid"}

    id: str = Field(min_length=1, max_length=64)
    message_id: str | int | None = None


class OutboundMessage(BaseModel):
    """POST /api/outbound: text to a conversation relaybot has had, on its channel."""

    model_config = {"extra": "forbid"}

    channel: str = Field(min_length=1, max_length=32)
    conversation_id: str = Field(min_length=1, max_length=400)
    text: str = Field(min_length=1)
    bot: str | None = None

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("text must not be empty or only whitespace")
        return value


class ApiMessage(BaseModel):
    model_config = {"extra": "forbid", "str_strip_whitespace": False}

    conversation_id: str = Field(min_length=1, max_length=200)
    user_id: str = Field(min_length=1, max_length=200)
    text: str | None = Field(None, min_length=1)
    action: ApiAction | None = None
    message_id: str = Field(min_length=1, max_length=200)
    callback_url: str = Field(min_length=1, max_length=2000)
    bot: str | None = None
    user_name: str | None = Field(None, max_length=200)
    tenant: str | None = Field(None, min_length=1, max_length=200)

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("text must not be empty or only whitespace")
        return value

    @model_validator(mode="after")
    def _text_or_action(self) -> ApiMessage:
        if (self.text is None) == (self.action is None):
            raise ValueError("send either 'text' or 'action' ({\"id\": BUTTON_ID}), not both or neither")
        return self

    @field_validator("callback_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        try:
            parts = urlsplit(value)
            # Raises for a port that is no number from 0 to 65535: refused here, not accepted and
            # then failing every delivery.
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"callback_url is not a valid URL ({exc})") from None
        if parts.scheme not in ("http", "https") or not parts.hostname or port == 0:
            raise ValueError("callback_url must be an absolute http(s) URL")
        return value


def key_id(key: bytes) -> str:
    """A short, public id of an API key: it namespaces the key's conversations and user ids
    (`api:KEY_ID:USER`) and names the key in RELAYBOT_API__TENANTS."""
    return hashlib.sha256(key).hexdigest()[:12]


def callback_signing_key(settings: Settings, server_secret: bytes) -> bytes:
    """RELAYBOT_API__SIGNING_SECRET, or a key derived from the server secret for this use only
    (`relaybot api signing-key` prints it for your receivers)."""
    secret = settings.api.signing_secret
    return secret.get_secret_value().encode() if secret else derive_key(server_secret, API_CALLBACKS)


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The callback signature; receivers recompute it and compare with hmac.compare_digest."""
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class _Refused(Exception):
    """A request answered with an error response before anything is queued."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.text)
        self.response = response


def _unavailable() -> web.Response:
    return web.json_response(
        {"error": "unavailable", "message": "relaybot cannot take messages right now; retry shortly"},
        status=503,
        headers={"Retry-After": "5"},
    )


_Body = TypeVar("_Body", bound=BaseModel)


def _parsed(model: type[_Body], raw: bytes) -> _Body | web.Response:
    """The body as `model`, or a 400 that names every field that is wrong."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
        return _error(400, "invalid_request", problems)


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


class ApiChannel:
    channel_names = ("api",)
    capabilities = Capabilities(max_message_length=100_000, markdown="commonmark", idempotent_sends=True)

    def __init__(self, ctx: ChannelContext) -> None:
        self._ctx = ctx
        self._settings = ctx.settings.api
        self._keys = [k.get_secret_value().encode() for k in self._settings.keys]
        self._signing_secret = callback_signing_key(ctx.settings, ctx.secret)
        self._http: aiohttp.ClientSession | None = None
        self._log = ctx.logger.bind(channel="api")

    @staticmethod
    def is_configured(settings: Settings) -> bool:
        return bool(settings.api.keys)

    def register(self, app: web.Application) -> None:
        app.router.add_post("/api/messages", self._receive)
        app.router.add_post("/api/outbound", self._outbound)

    def _client_id(self, request: web.Request) -> str | None:
        """A short id of the API key used (namespaces conversations per client), or None if not valid."""
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        # The header's own bytes: aiohttp keeps bytes that are not UTF-8 as surrogates, which a plain
        # encode() refuses (a 500); such a header matches no key.
        given = token.strip().encode("utf-8", "surrogateescape")
        matched = None
        for key in self._keys:  # compare against every key, so timing says nothing about which matched
            if hmac.compare_digest(given, key):
                matched = key
        return key_id(matched) if matched is not None else None

    def _callback_allowed(self, url: str) -> bool:
        allowed = self._settings.allowed_callback_hosts
        return "*" in allowed or (urlsplit(url).hostname or "") in allowed

    def _refused_address(self, url: str) -> str | None:
        """Why the URL's host, if it is an IP address, may not be called back (names: at connect time)."""
        if self._settings.allow_private_callbacks:
            return None
        return refusal(urlsplit(url).hostname or "")

    async def _receive(self, request: web.Request) -> web.Response:
        client = self._client_id(request)
        if client is None:
            return _error(401, "unauthorized", "send a valid API key as 'Authorization: Bearer KEY'")
        raw = await request.read()
        message = _parsed(ApiMessage, raw)
        if isinstance(message, web.Response):
            return message
        bot = message.bot or self._ctx.bots.default
        if bot not in self._ctx.bots:
            return _error(404, "unknown_bot", f"no bot named {bot!r}")
        if message.text is not None and len(message.text) > self._settings.max_text_chars:
            return _error(400, "text_too_long", f"text is limited to {self._settings.max_text_chars} characters")
        if not self._callback_allowed(message.callback_url):
            return _error(
                400, "callback_not_allowed", "callback_url's host is not in RELAYBOT_API__ALLOWED_CALLBACK_HOSTS"
            )
        if (why := self._refused_address(message.callback_url)) is not None:
            return _error(
                400,
                "callback_not_allowed",
                f"callback_url's host is {why}; callbacks go to public addresses "
                f"(RELAYBOT_API__ALLOW_PRIVATE_CALLBACKS=true allows others, for local development)",
            )
        if message.tenant is not None and message.tenant not in self._settings.tenants.get(client, ()):
            # A key acts only for the tenants it was given: another tenant's documents stay theirs.
            return _error(
                403,
                "tenant_not_allowed",
                f"this API key (id {client}) may not act for tenant {message.tenant!r}; "
                f"list it under RELAYBOT_API__TENANTS for the key",
            )
        conversation_id = f"{client}:{message.conversation_id}"
        text, action = message.text or "", None
        if message.action is not None:
            try:
                text, action = await self._click(bot, conversation_id, message.action)
            except _Refused as refused:
                return refused.response
        envelope = Envelope.create(
            bot=bot,
            channel="api",
            channel_message_id=message.message_id,
            conversation_id=conversation_id,
            user_id=f"api:{client}:{message.user_id}",
            user_name=message.user_name,
            text=text,
            reply_to=message.callback_url,
            tenant=message.tenant,
            action=action,
        )
        try:
            accepted = await self._ctx.bus.publish(envelope)
        except StoreError as exc:
            # Not accepted (claim and publish are one atomic step): the caller keeps it and retries.
            await self._log.aerror("publish_failed", error=str(exc))
            return _unavailable()
        if not accepted:
            return web.json_response({"status": "duplicate", "message_id": message.message_id})
        return web.json_response(
            {"status": "accepted", "envelope_id": envelope.id, "session_id": envelope.session_id}, status=202
        )

    async def _outbound(self, request: web.Request) -> web.Response:
        """A proactive message to a known user (core.outbound): 202 once it is with the outbox."""
        client = self._client_id(request)
        if client is None:
            return _error(401, "unauthorized", "send a valid API key as 'Authorization: Bearer KEY'")
        outbound = self._ctx.outbound
        if outbound is None:
            return _error(503, "unavailable", "this process does not send proactive messages")
        message = _parsed(OutboundMessage, await request.read())
        if isinstance(message, web.Response):
            return message
        bot = message.bot or self._ctx.bots.default
        if bot not in self._ctx.bots:
            return _error(404, "unknown_bot", f"no bot named {bot!r}")
        if len(message.text) > self._settings.max_text_chars:
            return _error(400, "text_too_long", f"text is limited to {self._settings.max_text_chars} characters")
        conversation = message.conversation_id
        if message.channel == "api":
            conversation = f"{client}:{conversation}"  # a key reaches only its own API conversations
        try:
            sent = await outbound.send(session_id_for(bot, message.channel, conversation), message.text)
        except OutboundRefused as exc:
            return _error(exc.status, exc.code, str(exc))
        except StoreError as exc:
            await self._log.aerror("outbound_failed", error=str(exc))
            return _unavailable()
        await self._log.ainfo("outbound_queued", session_id=sent.session_id, reply_id=sent.reply_id, key=client)
        return web.json_response(
            {
                "status": "queued",
                "reply_id": sent.reply_id,
                "session_id": sent.session_id,
                "seq": sent.seq,
                "template": sent.template,
            },
            status=202,
        )

    async def _click(self, bot: str, conversation_id: str, clicked: ApiAction) -> tuple[str, Action]:
        """The click's text (the label) and action, if its button is one of the newest reply's."""
        try:
            offer = await last_offer(self._ctx.history, session_id_for(bot, "api", conversation_id))
        except StoreError as exc:
            await self._log.aerror("offer_lookup_failed", error=str(exc))
            raise _Refused(_unavailable()) from exc
        button = offer.find(clicked.id)
        if button is None:
            offered = ", ".join(offer.ids) or "none"
            raise _Refused(
                _error(
                    400,
                    "unknown_action",
                    f"action.id {clicked.id!r} is not a button of the newest reply (it offered: {offered})",
                )
            )
        if clicked.message_id is not None and str(clicked.message_id) != str(offer.seq):
            raise _Refused(
                _error(
                    400,
                    "stale_action",
                    f"action.message_id {clicked.message_id!r} is not the newest reply (seq {offer.seq}); "
                    "its buttons can no longer be used",
                )
            )
        return button.label, offer.click(button)

    async def deliver(self, reply: Reply) -> DeliveryResult:
        if not reply.final:
            return DeliveryResult(delivered=False, detail="the API channel does not stream")
        if (why := self._refused_address(reply.reply_to)) is not None:
            raise DeliveryError(f"callback host is {why}; not called", retryable=False)
        if self._http is None:
            timeout = aiohttp.ClientTimeout(total=self._settings.callback_timeout_seconds, connect=5)
            # Names are checked on the addresses they resolve to, when connecting.
            resolver = None if self._settings.allow_private_callbacks else PublicAddressResolver()
            self._http = aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(resolver=resolver))
        body = json.dumps(
            {
                "type": "reply",
                "reply_id": reply.id,
                "in_reply_to": reply.in_reply_to,
                "session_id": reply.session_id,
                "bot": reply.bot,
                "seq": reply.seq,
                "text": reply.text,
                "actions": [b.to_dict() for b in reply.actions],
                "card": reply.card.to_dict() if reply.card is not None else None,
            }
        ).encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self._signing_secret, timestamp, body),
            "Idempotency-Key": reply.dedupe_key or reply.id,
        }
        try:
            # No redirects: a redirect could point the signed reply anywhere, the checks above included.
            async with self._http.post(reply.reply_to, data=body, headers=headers, allow_redirects=False) as response:
                status = response.status
                retry_after = _retry_after(response.headers.get("Retry-After"))
        except TimeoutError as exc:
            raise DeliveryError(
                f"callback {_redacted(reply.reply_to)} timed out", retryable=True, outcome_unknown=True
            ) from exc
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, CallbackTargetRefused):
                raise DeliveryError(str(exc.os_error), retryable=False) from exc
            raise DeliveryError(f"callback {_redacted(reply.reply_to)} unreachable: {exc}", retryable=True) from exc
        except aiohttp.ClientError as exc:
            # Not the exception's text: some of aiohttp's carry the whole URL, query and all.
            raise DeliveryError(
                f"callback {_redacted(reply.reply_to)} unreachable: {type(exc).__name__}", retryable=True
            ) from exc
        if 200 <= status < 300:
            return DeliveryResult(delivered=True, channel_message_ids=(reply.id,))
        if status == 429 or status >= 500:
            raise DeliveryError(f"callback answered {status}", retryable=True, retry_after=retry_after)
        raise DeliveryError(f"callback answered {status}; not retried", retryable=False)

    async def start(self) -> None:
        """Nothing to start: messages arrive through routes."""

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _redacted(url: str) -> str:
    """The URL without its query, fragment and credentials, for logs: receivers put tokens there."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    hidden = "?…" if parts.query else ""
    return f"{parts.scheme}://{host}{port}{parts.path}{hidden}"
