"""A fake Twilio REST API (Messages, Content) on 127.0.0.1, for the real `twilio` SDK, plus Twilio's side of webhooks.

    POST /2010-04-01/Accounts/{AccountSid}/Messages.json   form-encoded, HTTP Basic (sid:token)
    → 201 {"sid": "SM...", "status": "queued", "to", "from", "body", "num_segments", ...}
    POST /v1/Content                                       JSON, HTTP Basic
    → 201 {"sid": "HX...", "friendly_name", "language", "variables", "types", ...}

Content is checked as WhatsApp takes it in a session: `twilio/quick-reply` with 1-3 actions (title
≤ 20, id ≤ 200), `twilio/list-picker` with 1-10 items (item ≤ 24, description ≤ 72, id ≤ 200) and a
button ≤ 20, a body ≤ 1,024; anything else is a 400, as is a body that is not JSON. A message sent
with a created ContentSid must give every `{{n}}` its body uses in ContentVariables (JSON), and a
deleted one (`delete_content`) is refused with 21655. `fake.contents` holds what was created.

A test aims the SDK here with TWILIO_API_URL (Messages and Content alike), queues failures for the next sends
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
import json
import re
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
    content_variables: str | None = None

    @property
    def variables(self) -> dict[str, str]:
        return dict(json.loads(self.content_variables)) if self.content_variables else {}


@dataclass
class FakeTwilio(LocalServer):
    account_sid: str = ACCOUNT_SID
    auth_token: str = AUTH_TOKEN
    sent: list[Sent] = field(default_factory=list)
    requests: int = 0
    refused_auth: int = 0
    #: created content by Content SID: the request's JSON as Twilio keeps it
    contents: dict[str, dict[str, Any]] = field(default_factory=dict)
    content_requests: int = 0
    _deleted: set[str] = field(default_factory=set)
    _content_script: deque[Fail] = field(default_factory=deque)
    _script: deque[Behaviour] = field(default_factory=deque)
    _counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _closing: asyncio.Event = field(default_factory=asyncio.Event)

    def queue(self, *behaviours: Behaviour) -> None:
        """One behaviour per coming Messages POST, in order; then 201s again."""
        self._script.extend(behaviours)

    def queue_content(self, *failures: Fail) -> None:
        """One failure per coming Content POST, in order; then 201s again."""
        self._content_script.extend(failures)

    def delete_content(self, sid: str) -> None:
        """As if someone deleted the resource in the console: sends naming it fail with 21655."""
        self.contents.pop(sid)
        self._deleted.add(sid)

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", self._create)
        app.router.add_post("/v1/Content", self._create_content)

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
        variables = str(form["ContentVariables"]) if "ContentVariables" in form else None
        if content_sid is not None and (refused := self._check_variables(content_sid, variables)) is not None:
            return refused
        async with self._changed:
            self.sent.append(Sent(sid, to, from_, body, content_sid, callback, variables))
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

    def _check_variables(self, content_sid: str, variables: str | None) -> web.Response | None:
        if content_sid in self._deleted:
            return self._error(404, 21655, "The ContentSid is Invalid")
        content = self.contents.get(content_sid)
        if content is None:
            return None  # an approved template made outside the fake (the tests' TEMPLATE)
        needed = set(re.findall(r"\{\{(\w+)\}\}", json.dumps(content["types"])))
        try:
            given = json.loads(variables) if variables else {}
        except ValueError:
            return self._error(400, 21656, "The ContentVariables Parameter is invalid")
        if not isinstance(given, dict) or not needed <= set(given):
            return self._error(400, 21656, f"ContentVariables must give {sorted(needed)}")
        if any(not isinstance(given[n], str) or not given[n] or len(given[n]) > 1024 for n in needed):
            return self._error(400, 21656, "a content variable is empty, not a string, or over 1,024 characters")
        return None

    async def _create_content(self, request: web.Request) -> web.Response:
        self.content_requests += 1
        if not self._authorized(request, self.account_sid):
            self.refused_auth += 1
            return self._error(401, 20003, "Authenticate")
        try:
            data = json.loads(await request.read())
        except ValueError:
            return self._error(400, 20001, "the Content API takes a JSON body")
        if self._content_script:
            step = self._content_script.popleft()
            return self._error(step.status, step.code, step.message)
        if not isinstance(data, dict) or not data.get("friendly_name") or not isinstance(data.get("types"), dict):
            return self._error(400, 20001, "friendly_name and types are required")
        types = {k: v for k, v in data["types"].items() if v is not None}
        problem = _content_problem(types)
        if problem:
            return self._error(400, 20001, problem)
        sid = f"HX{next(self._counter):032x}"
        content = {
            "sid": sid,
            "account_sid": self.account_sid,
            "friendly_name": data["friendly_name"],
            "language": data.get("language") or "en",
            "variables": data.get("variables") or {},
            "types": types,
            "url": f"{self.url}/v1/Content/{sid}",
            "date_created": "2026-01-01T00:00:00Z",
            "date_updated": "2026-01-01T00:00:00Z",
            "links": {},
        }
        self.contents[sid] = content
        return web.json_response(content, status=201)

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


def _too_long(value: object, limit: int) -> bool:
    return not isinstance(value, str) or not value or len(value) > limit


def _content_problem(types: dict[str, Any]) -> str | None:
    """Why WhatsApp would refuse this content in a session (None: it would show it)."""
    if len(types) != 1:
        return f"give exactly one content type, not {sorted(types)}"
    ((kind, content),) = types.items()
    if _too_long(content.get("body"), 1024):
        return f"{kind}: body must be 1-1,024 characters"
    if kind == "twilio/quick-reply":
        actions = content.get("actions") or []
        if not 1 <= len(actions) <= 3:
            return f"twilio/quick-reply: WhatsApp shows 1-3 quick replies in a session, not {len(actions)}"
        for action in actions:
            if _too_long(action.get("title"), 20) or _too_long(action.get("id"), 200):
                return f"twilio/quick-reply: title must be 1-20 and id 1-200 characters: {action}"
        return None
    if kind == "twilio/list-picker":
        items = content.get("items") or []
        if not 1 <= len(items) <= 10 or _too_long(content.get("button"), 20):
            return "twilio/list-picker: 1-10 items and a button of 1-20 characters"
        for item in items:
            if _too_long(item.get("item"), 24) or _too_long(item.get("id"), 200):
                return f"twilio/list-picker: item must be 1-24 and id 1-200 characters: {item}"
            if "description" in item and _too_long(item["description"], 72):
                return f"twilio/list-picker: description must be 1-72 characters: {item}"
        return None
    return f"the fake knows twilio/quick-reply and twilio/list-picker, not {kind}"
