"""Twilio's inbound webhooks at the edge: the public URL, the signature, and the form as typed models.

Twilio signs `url + sorted(key + value)` with the account's auth token (HMAC-SHA1, base64) in
`X-Twilio-Signature`. The URL is the one Twilio called, so behind a proxy it is rebuilt from the
configured public base URL (or X-Forwarded-Proto/Host when the proxy is trusted).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl

from aiohttp import web
from multidict import MultiDict
from twilio.request_validator import RequestValidator

from core.envelope import Attachment
from core.settings import TwilioSettings

SIGNATURE_HEADER = "X-Twilio-Signature"
WHATSAPP_PREFIX = "whatsapp:"
MAX_MEDIA = 10  # Twilio sends at most 10 media items per message

# Twilio's default opt-out keywords (a message that is exactly one of these, any case).
STOP_WORDS = frozenset({"STOP", "STOPALL", "STOP ALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE"})
START_WORDS = frozenset({"START", "YES", "UNSTOP"})
HELP_WORDS = frozenset({"HELP", "INFO"})

Keyword = Literal["STOP", "START", "HELP"]


class BadRequest(ValueError):
    """The webhook's form is not something Twilio sends: answered 400, nothing processed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Inbound:
    """One SMS or WhatsApp message as Twilio posted it, validated."""

    message_sid: str
    channel: Literal["sms", "whatsapp"]
    #: the sender's phone number without the channel prefix ("+15551234567")
    number: str
    #: Twilio addresses as given, with any "whatsapp:" prefix: where replies go, and from which number
    from_address: str
    to_address: str
    body: str
    profile_name: str | None
    attachments: tuple[Attachment, ...]
    keyword: Keyword | None
    #: a tap on a WhatsApp quick reply (`ButtonPayload`) or list item (`ListId`): the button's id as we
    #: sent it (channels.twilio.content), and the text the user saw on it (`ButtonText` / `ListTitle`)
    button_payload: str | None = None
    button_text: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusCallback:
    message_sid: str
    status: str
    error_code: str | None


def public_url(request: web.Request, settings: TwilioSettings) -> str:
    """The URL Twilio called (what it signed): public base URL, or trusted X-Forwarded-*, + path + query."""
    # raw_path is the request target as sent (path and query, still percent-encoded), as Twilio signed it.
    if settings.public_base_url:
        return settings.public_base_url.rstrip("/") + request.raw_path
    if settings.trust_forwarded_headers:
        proto = request.headers.get("X-Forwarded-Proto", request.scheme).split(",")[0].strip()
        host = request.headers.get("X-Forwarded-Host", request.host).split(",")[0].strip()
        return f"{proto}://{host}{request.raw_path}"
    return f"{request.scheme}://{request.host}{request.raw_path}"


def parse_form(raw: bytes) -> MultiDict[str]:
    """The form-encoded body, strictly: bad UTF-8 or a malformed pair is a BadRequest."""
    try:
        decoded = raw.decode("utf-8")
        pairs = parse_qsl(decoded, keep_blank_values=True, strict_parsing=bool(decoded), errors="strict")
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(f"the body is not form-encoded UTF-8: {exc}") from exc
    return MultiDict(pairs)


def signature_valid(validator: RequestValidator, url: str, form: MultiDict[str], signature: str) -> bool:
    return bool(signature) and bool(validator.validate(url, form, signature))


def _one(form: MultiDict[str], name: str, *, required: bool = True) -> str | None:
    values = form.getall(name, [])
    if len(values) > 1:
        raise BadRequest(f"{name} is given more than once")
    if not values:
        if required:
            raise BadRequest(f"{name} is missing")
        return None
    return values[0]


def _keyword(body: str, opt_out_type: str | None) -> Keyword | None:
    # Twilio's Advanced Opt-Out says which keyword list matched; otherwise match its defaults.
    if opt_out_type in ("STOP", "START", "HELP"):
        return opt_out_type  # type: ignore[return-value]  # narrowed by the check
    word = " ".join(body.split()).upper()
    if word in STOP_WORDS:
        return "STOP"
    if word in START_WORDS:
        return "START"
    if word in HELP_WORDS:
        return "HELP"
    return None


def parse(form: MultiDict[str], *, max_text_chars: int) -> Inbound:
    """The message of a signed webhook (see `channels.inbound`); a form Twilio never sends is a BadRequest.

    Nothing is ignored here: opt-out keywords and opted-out numbers are the adapter's to act on.
    """
    sid = _one(form, "MessageSid") or ""
    from_address = (_one(form, "From") or "").strip()
    to_address = (_one(form, "To") or "").strip()
    body = _one(form, "Body")
    assert body is not None
    if not sid or not from_address or not to_address:
        raise BadRequest("MessageSid, From and To must not be empty")
    if len(body) > max_text_chars:
        raise BadRequest(f"Body is longer than {max_text_chars} characters")
    whatsapp = from_address.startswith(WHATSAPP_PREFIX)
    number = from_address.removeprefix(WHATSAPP_PREFIX)
    if not number:
        raise BadRequest("From has no number")
    try:
        num_media = int(_one(form, "NumMedia", required=False) or "0")
    except ValueError as exc:
        raise BadRequest("NumMedia is not a number") from exc
    if not 0 <= num_media <= MAX_MEDIA:
        raise BadRequest(f"NumMedia must be between 0 and {MAX_MEDIA}")
    attachments = []
    for index in range(num_media):
        url = _one(form, f"MediaUrl{index}")
        if not url or not url.startswith(("https://", "http://")):
            raise BadRequest(f"MediaUrl{index} is not an http(s) URL")
        attachments.append(Attachment(url=url, mime_type=_one(form, f"MediaContentType{index}", required=False)))
    profile = (_one(form, "ProfileName", required=False) or "").strip() or None
    payload = _one(form, "ButtonPayload", required=False) or _one(form, "ListId", required=False) or None
    shown = _one(form, "ButtonText", required=False) or _one(form, "ListTitle", required=False) or None
    return Inbound(
        message_sid=sid,
        channel="whatsapp" if whatsapp else "sms",
        number=number,
        from_address=from_address,
        to_address=to_address,
        body=body,
        profile_name=profile,
        attachments=tuple(attachments),
        # Carrier opt-out rules are an SMS matter; on WhatsApp "stop" is just a message.
        keyword=None if whatsapp else _keyword(body, _one(form, "OptOutType", required=False)),
        button_payload=payload if whatsapp else None,
        button_text=shown if whatsapp else None,
    )


def parse_status(form: MultiDict[str]) -> StatusCallback:
    sid = _one(form, "MessageSid") or ""
    status = _one(form, "MessageStatus") or ""
    if not sid or not status:
        raise BadRequest("MessageSid and MessageStatus must not be empty")
    return StatusCallback(message_sid=sid, status=status, error_code=_one(form, "ErrorCode", required=False) or None)
