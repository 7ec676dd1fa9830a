"""Sending through Twilio's REST API: message bodies fitted to SMS segments, and errors in our terms.

The SDK's own retries stay off: its HTTP client retries POSTs on 5xx and on dropped connections,
and a repeated Messages POST is a second SMS. The outbox retries instead, and only where the
message cannot have been created (429, 5xx, a connection that was never made).
"""

from __future__ import annotations

import asyncio
import math

import aiohttp
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from channels.formatting import render_parts
from core.errors import DeliveryError

MAX_BODY_CHARS = 1600  # Twilio refuses longer bodies (error 21617)

# GSM 03.38: the 7-bit alphabet (160 per single SMS, 153 per part of a long one); anything else
# makes the whole message UCS-2 (70, or 67 per part). Extension characters take two septets.
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = frozenset("^{}\\[~]|€\f")
# Typographic punctuation that LLMs like and that alone would turn a reply into UCS-2 (half the
# characters per segment): replaced by the plain equivalents a phone shows just as well.
SMART_PUNCTUATION = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2013": "-",
        "\u2014": "-",
        "\u2026": "...",
        "\u00a0": " ",
        "\u2022": "-",
    }
)


def is_gsm7(text: str) -> bool:
    return all(c in GSM7_BASIC or c in GSM7_EXTENDED for c in text)


def segments(text: str) -> int:
    """How many SMS segments a message body takes (what the recipient's carrier bills)."""
    if is_gsm7(text):
        units = len(text) + sum(1 for c in text if c in GSM7_EXTENDED)
        single, multi = 160, 153
    else:
        units = len(text.encode("utf-16-le")) // 2
        single, multi = 70, 67
    return 1 if units <= single else math.ceil(units / multi)


def sms_part_limit(text: str) -> int:
    """Characters per message so that each message fills whole segments and stays within 1,600.

    A 1,600-character GSM-7 message is 11 segments, the last one nearly empty; 10 full segments
    (1,530) waste none. Characters that take two units are counted against the limit up front.
    """
    if is_gsm7(text):
        return max(765, 10 * 153 - sum(1 for c in text if c in GSM7_EXTENDED))
    return max(770, 23 * 67 - sum(1 for c in text if ord(c) > 0xFFFF))


def sms_parts(markdown: str) -> list[str]:
    """Markdown as plain text, split into SMS messages that fill their segments."""
    text = markdown.translate(SMART_PUNCTUATION)
    return render_parts(text, "plain", sms_part_limit(text))


def whatsapp_parts(markdown: str, limit: int = MAX_BODY_CHARS) -> list[str]:
    return render_parts(markdown, "whatsapp", limit)


class TwilioSendError(DeliveryError):
    """A send Twilio refused or that failed on the way; `code` is Twilio's error code when it gave one."""

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        retryable: bool,
        retry_after: float | None = None,
        outcome_unknown: bool = False,
    ) -> None:
        super().__init__(message, retryable=retryable, retry_after=retry_after, outcome_unknown=outcome_unknown)
        self.code = code


UNSUBSCRIBED = 21610
OUTSIDE_WINDOW = 63016
UNKNOWN_CONTENT = 21655

_EXPLAINED = {
    UNSUBSCRIBED: "the recipient texted STOP; they must text START to get messages again",
    OUTSIDE_WINDOW: "outside WhatsApp's 24-hour window: only an approved template may be sent "
    "(set RELAYBOT_TWILIO__WHATSAPP_TEMPLATES for the bot)",
    20003: "Twilio refused the credentials: check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN",
    21211: "the recipient's number is not valid",
    21606: "the sending number cannot send this kind of message (is it an SMS/WhatsApp-enabled Twilio number?)",
    21617: "the body is longer than 1,600 characters",
    UNKNOWN_CONTENT: "Twilio does not know this Content SID (deleted in the console?)",
}


def convert(exc: TwilioRestException) -> TwilioSendError:
    code = exc.code if isinstance(exc.code, int) else None
    if exc.status == 429 or exc.status >= 500:
        # Twilio created nothing when it answers 429, and its 5xx are retried by the outbox by design.
        return TwilioSendError(f"Twilio answered {exc.status} (code {code}): {exc.msg}", code=code, retryable=True)
    why = _EXPLAINED.get(code or 0, exc.msg)
    return TwilioSendError(
        f"Twilio refused the message ({exc.status}, error {code}): {why}; "
        f"see https://www.twilio.com/docs/api/errors/{code}",
        code=code,
        retryable=False,
    )


class TwilioSender:
    """Creates messages with the real SDK; one HTTP client per process, built inside the running loop."""

    def __init__(self, *, account_sid: str, auth_token: str, api_url: str | None, timeout: float) -> None:
        self._account_sid = account_sid
        self._auth_token = auth_token
        self._api_url = api_url
        self._timeout = timeout
        self._http: AsyncTwilioHttpClient | None = None
        self._client: Client | None = None

    def _sdk(self) -> Client:
        if self._client is None:
            # max_retries=None: no RetryClient at all (its retries repeat POSTs, i.e. SMS).
            self._http = AsyncTwilioHttpClient(max_retries=None)
            self._client = Client(self._account_sid, self._auth_token, http_client=self._http)
            if self._api_url:
                self._client.api.base_url = self._api_url.rstrip("/")
        return self._client

    async def create(
        self,
        *,
        to: str,
        from_: str,
        body: str | None = None,
        content_sid: str | None = None,
        content_variables: str | None = None,
        status_callback: str | None = None,
    ) -> str:
        """Create one message; returns its MessageSid. Raises TwilioSendError."""
        fields: dict[str, str] = {"to": to, "from_": from_}
        if body is not None:
            fields["body"] = body
        if content_sid is not None:
            fields["content_sid"] = content_sid
        if content_variables is not None:
            fields["content_variables"] = content_variables
        if status_callback is not None:
            fields["status_callback"] = status_callback
        client = self._sdk()
        try:
            # The SDK's async client ignores its own timeout setting, so the wait is bounded here.
            message = await asyncio.wait_for(client.messages.create_async(**fields), self._timeout)
        except TwilioRestException as exc:
            raise convert(exc) from exc
        except TimeoutError as exc:
            raise TwilioSendError(
                f"Twilio did not answer within {self._timeout:g} s; the message may have been sent",
                retryable=True,
                outcome_unknown=True,
            ) from exc
        except aiohttp.ClientConnectorError as exc:
            # The connection was never made, so nothing was sent: safe to retry.
            raise TwilioSendError(f"cannot reach Twilio: {exc}", retryable=True) from exc
        except aiohttp.ClientError as exc:
            raise TwilioSendError(
                f"the connection to Twilio failed mid-request ({exc}); the message may have been sent",
                retryable=True,
                outcome_unknown=True,
            ) from exc
        if not message.sid:
            raise TwilioSendError("Twilio answered without a message sid", retryable=False, outcome_unknown=True)
        return str(message.sid)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None
            self._client = None
