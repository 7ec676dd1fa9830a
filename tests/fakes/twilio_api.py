"""A fake Twilio REST API (Messages) on 127.0.0.1, for the real `twilio` SDK, plus Twilio's side of webhooks.

    POST /2010-04-01/Accounts/{AccountSid}/Messages.json   form-encoded, HTTP Basic (sid:token)
    → 201 {"sid": "SM...", "status": "queued", "to", "from", "body", "num_segments", ...}

A test aims the SDK here with TWILIO_API_URL, queues failures for the next sends
(`fake.queue(Fail(429, 20429), Fail(500))`, `Hang()`), and reads what was "sent" in order. Like
Twilio, it refuses bodies over 1,600 characters (21617) and bad credentials (20003). It also plays
Twilio calling us: `signed_post` signs a webhook with the real `RequestValidator`, and
`status_callback` reports a message's status to the StatusCallback URL it was created with.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from twilio.request_validator import RequestValidator

from tests.fakes.local_server import LocalServer

ACCOUNT_SID = "AC" + "0" * 31 + "1"
AUTH_TOKEN = "fake-twilio-auth-token-0123456789"


@dataclass(frozen=True)
class Fail:
    status: int
    code: int
    message: str = "scripted failure"


@dataclass(frozen=True)
class Created:
    """The normal 201 (to script a success before a failure)."""


@dataclass(frozen=True)
class Hang:
    """Accept the request and answer nothing for `seconds`."""

    seconds: float = 30.0


Behaviour = Created | Fail | Hang


@dataclass
class Sent:
    sid: str
    to: str
    from_: str
    body: str | None
    content_sid: str | None
    status_callback: str | None


@dataclass
class FakeTwilio(LocalServer):
    account_sid: str = ACCOUNT_SID
    auth_token: str = AUTH_TOKEN
    sent: list[Sent] = field(default_factory=list)
    requests: int = 0
    refused_auth: int = 0
    _script: deque[Behaviour] = field(default_factory=deque)
    _counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _closing: asyncio.Event = field(default_factory=asyncio.Event)

    def queue(self, *behaviours: Behaviour) -> None:
        """One behaviour per coming Messages POST, in order; then 201s again."""
        self._script.extend(behaviours)

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", self._create)

    async def stopping(self) -> None:
        self._closing.set()  # hanging sends return

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def wait_for(self, count: int, within: float = 20.0) -> list[Sent]:
        """The first `count` messages created; fails the test if they do not arrive `within` seconds."""
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: len(self.sent) >= count)
        return self.sent[:count]

    def _authorized(self, request: web.Request, sid: str) -> bool:
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        try:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
        except ValueError:
            return False
        return scheme == "Basic" and user == self.account_sid == sid and password == self.auth_token

    @staticmethod
    def _error(status: int, code: int, message: str) -> web.Response:
        body = {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}"}
        return web.json_response({**body, "status": status}, status=status)

    async def _create(self, request: web.Request) -> web.Response:
        self.requests += 1
        if not self._authorized(request, request.match_info["sid"]):
            self.refused_auth += 1
            return self._error(401, 20003, "Authenticate")
        if request.content_type != "application/x-www-form-urlencoded":
            return self._error(400, 20001, "expected a form-encoded body")
        form = await request.post()
        step = self._script.popleft() if self._script else Created()
        if not isinstance(step, Created):
            if isinstance(step, Hang):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), step.seconds)
                return self._error(504, 20500, "hung")
            return self._error(step.status, step.code, step.message)
        to, from_ = str(form.get("To", "")), str(form.get("From", ""))
        body = str(form["Body"]) if "Body" in form else None
        content_sid = str(form["ContentSid"]) if "ContentSid" in form else None
        if not to or not from_ or (body is None and content_sid is None):
            return self._error(400, 21602, "A 'To', 'From' and 'Body' or 'ContentSid' are required")
        if body is not None and len(body) > 1600:
            return self._error(400, 21617, "The concatenated message body exceeds the 1600 character limit")
        sid = f"SM{next(self._counter):032x}"
        callback = str(form["StatusCallback"]) if "StatusCallback" in form else None
        async with self._changed:
            self.sent.append(Sent(sid, to, from_, body, content_sid, callback))
            self._changed.notify_all()
        return web.json_response(
            {
                "sid": sid,
                "account_sid": self.account_sid,
                "status": "queued",
                "to": to,
                "from": from_,
                "body": body or "",
                "num_segments": "1",
                "direction": "outbound-api",
                "date_created": "Thu, 30 Jul 2015 20:12:31 +0000",
            },
            status=201,
        )

    # --- Twilio calling us --------------------------------------------------------------------

    def signature(self, public_url: str, params: Mapping[str, str], *, token: str | None = None) -> str:
        """`X-Twilio-Signature` as Twilio computes it for a form posted to `public_url`."""
        signature: str = RequestValidator(token or self.auth_token).compute_signature(public_url, params)
        return signature

    async def signed_post(
        self,
        public_url: str,
        params: dict[str, str],
        *,
        deliver_to: str | None = None,
        signature: str | None = None,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, str]:
        """POST a form as Twilio does, signed over `public_url`; `deliver_to` is where it really goes
        (the app's address behind a proxy). Returns (status, body)."""
        if signature is None:
            signature = self.signature(public_url, params, token=token)
        target = public_url
        if deliver_to is not None:
            parts = urlsplit(public_url)
            target = deliver_to.rstrip("/") + parts.path + (f"?{parts.query}" if parts.query else "")
        sent_headers = {**(headers or {}), **({"X-Twilio-Signature": signature} if signature else {})}
        async with aiohttp.ClientSession() as http, http.post(target, data=params, headers=sent_headers) as response:
            return response.status, await response.text()

    async def status_callback(self, sent: Sent, status: str, *, deliver_to: str, error_code: str | None = None) -> int:
        """Report `status` for a created message to its StatusCallback URL, as Twilio does."""
        assert sent.status_callback, "the message was created without a StatusCallback"
        params: dict[str, Any] = {
            "AccountSid": self.account_sid,
            "MessageSid": sent.sid,
            "SmsSid": sent.sid,
            "MessageStatus": status,
            "SmsStatus": status,
            "To": sent.to,
            "From": sent.from_,
            "ApiVersion": "2010-04-01",
        }
        if error_code:
            params["ErrorCode"] = error_code
        code, _ = await self.signed_post(sent.status_callback, params, deliver_to=deliver_to)
        return code
