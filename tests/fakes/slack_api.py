"""A fake Slack Web API: `POST`/`GET /api/{method}`, query, form or JSON bodies, `Authorization: Bearer`, JSON answers.

Speaks what `slack_sdk.AsyncWebClient(base_url=fake.api_url)` expects: 200 `{"ok": true, ...}`, 200
`{"ok": false, "error": "..."}` for API errors, 429 with `Retry-After` and `{"ok": false, "error":
"ratelimited"}`. It keeps the messages posted (with their edits) per channel, and records every call.

    async with FakeSlack() as slack:
        slack.fail("chat.postMessage", RateLimited(retry_after=1))   # next call of the method
        slack.fail("chat.postMessage", SlackError("channel_not_found"))
        ...
        await slack.wait_for(lambda s: len(s.posts) >= 1)

Run alone (the benchmark does not need to): `python -m tests.fakes.slack_api --port 8002`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.local_server import LocalServer

BOT_USER_ID = "UBOT"
BOT_ID = "B1"
TEAM_ID = "T1"
TOKEN = "xoxb-test-token"


@dataclass(frozen=True)
class RateLimited:
    retry_after: float = 1.0


@dataclass(frozen=True)
class SlackError:
    error: str
    status: int = 200


@dataclass(frozen=True)
class Slow:
    seconds: float


Failure = RateLimited | SlackError | Slow


@dataclass(frozen=True)
class Call:
    at: float
    method: str
    params: dict[str, Any]
    headers: dict[str, str]


@dataclass
class Message:
    channel: str
    ts: str
    text: str
    thread_ts: str | None
    edits: list[str] = field(default_factory=list)
    #: Block Kit blocks (None: a text message)
    blocks: list[dict[str, Any]] | None = None


class FakeSlack(LocalServer):
    def __init__(self, *, token: str = TOKEN, users: dict[str, dict[str, Any]] | None = None) -> None:
        self.token = token
        self.users = users if users is not None else {}
        self.calls: list[Call] = []
        self.messages: list[Message] = []
        self.port = 0
        self._failures: dict[str, deque[Failure]] = defaultdict(deque)
        self._nth: dict[tuple[str, int], Failure] = {}
        self._ts = 0
        self._changed = asyncio.Condition()
        # Socket Mode: the WebSockets connected to /socket, and the envelope ids the app acked
        self.sockets: set[web.WebSocketResponse] = set()
        self.socket_acks: list[str] = []
        self._envelopes = 0

    # --- scripting and inspection ----------------------------------------------------------------

    def fail(self, method: str, *failures: Failure) -> None:
        """One failure per coming call of `method`, in order; then it answers normally again."""
        self._failures[method].extend(failures)

    def fail_call(self, method: str, number: int, failure: Failure) -> None:
        """Fail the `number`th call (counting from 1, over the fake's life) of `method`."""
        self._nth[(method, number)] = failure

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    @property
    def posts(self) -> list[Message]:
        return list(self.messages)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    async def wait_for(self, predicate: Callable[[FakeSlack], bool], within: float = 15.0) -> None:
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: predicate(self))

    # --- the API ---------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await _params(request)
        self.calls.append(Call(time.monotonic(), method, params, dict(request.headers)))
        try:
            return await self._answer(request, method, params)
        finally:
            async with self._changed:
                self._changed.notify_all()

    async def _answer(self, request: web.Request, method: str, params: dict[str, Any]) -> web.Response:
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else params.get("token")
        valid = str(token or "").startswith("xapp-") if method == "apps.connections.open" else token == self.token
        if not valid:
            return web.json_response({"ok": False, "error": "invalid_auth"})
        queued = self._failures.get(method)
        failure = self._nth.pop((method, len(self.calls_to(method))), None)
        if failure is None and queued:
            failure = queued.popleft()
        if failure is not None:
            if isinstance(failure, RateLimited):
                return web.json_response(
                    {"ok": False, "error": "ratelimited"},
                    status=429,
                    headers={"Retry-After": f"{failure.retry_after:g}"},
                )
            if isinstance(failure, SlackError):
                return web.json_response({"ok": False, "error": failure.error}, status=failure.status)
            await asyncio.sleep(failure.seconds)
        handler = getattr(self, "_" + method.replace(".", "_"), None)
        if handler is None:
            return web.json_response({"ok": False, "error": "unknown_method"})
        return web.json_response(handler(params))

    def _auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://fake.slack.com/",
            "team": "Fake",
            "user": "relaybot",
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
        }

    def _chat_postMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = str(params.get("channel") or "")
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        text = str(params.get("text") or "")
        if not text:
            return {"ok": False, "error": "no_text"}
        blocks, problem = _blocks(params.get("blocks"))
        if problem:
            return {"ok": False, "error": "invalid_blocks", "errors": [problem]}
        self._ts += 1
        ts = f"1800000000.{self._ts:06d}"
        thread = params.get("thread_ts") or None
        self.messages.append(Message(channel=channel, ts=ts, text=text, thread_ts=thread, blocks=blocks))
        message = {"type": "message", "user": BOT_USER_ID, "bot_id": BOT_ID, "text": text, "ts": ts}
        return {"ok": True, "channel": channel, "ts": ts, "message": message}

    def _chat_update(self, params: dict[str, Any]) -> dict[str, Any]:
        for message in self.messages:
            if message.channel == params.get("channel") and message.ts == params.get("ts"):
                blocks, problem = _blocks(params.get("blocks"))
                if problem:
                    return {"ok": False, "error": "invalid_blocks", "errors": [problem]}
                message.blocks = blocks
                message.text = str(params.get("text") or "")
                message.edits.append(message.text)
                return {"ok": True, "channel": message.channel, "ts": message.ts, "text": message.text}
        return {"ok": False, "error": "message_not_found"}

    def _apps_connections_open(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "url": f"ws://127.0.0.1:{self.port}/socket"}

    def _users_info(self, params: dict[str, Any]) -> dict[str, Any]:
        user = self.users.get(str(params.get("user")))
        if user is None:
            return {"ok": False, "error": "user_not_found"}
        return {"ok": True, "user": user}

    # --- Socket Mode ---------------------------------------------------------------------------------

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.sockets.add(ws)
        await ws.send_json({"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A1"}})
        try:
            async for message in ws:
                if message.type == web.WSMsgType.TEXT:
                    envelope_id = json.loads(message.data).get("envelope_id")
                    if envelope_id:
                        self.socket_acks.append(str(envelope_id))
                        async with self._changed:
                            self._changed.notify_all()
        finally:
            self.sockets.discard(ws)
        return ws

    async def push_event(self, body: dict[str, Any], *, retry_attempt: int = 0) -> str:
        """Send an Events API payload to the connected app, as Slack does in Socket Mode; returns its envelope id."""
        self._envelopes += 1
        envelope_id = f"env-{self._envelopes}"
        frame = {
            "envelope_id": envelope_id,
            "payload": body,
            "type": "events_api",
            "accepts_response_payload": False,
            "retry_attempt": retry_attempt,
            "retry_reason": "timeout" if retry_attempt else "",
        }
        for ws in list(self.sockets):
            await ws.send_json(frame)
        return envelope_id

    # --- lifecycle -------------------------------------------------------------------------------

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/api/{method}", self._handle)
        app.router.add_get("/api/{method}", self._handle)  # the SDK reads (users.info) with GET
        app.router.add_get("/socket", self._socket)

    async def stopping(self) -> None:
        for ws in list(self.sockets):
            await ws.close()


def _blocks(raw: object) -> tuple[list[dict[str, Any]] | None, str | None]:
    """Block Kit as Slack checks it, for the blocks relaybot sends: section text ≤ 3,000; an actions
    block ≤ 25 buttons, each text ≤ 75, action_id ≤ 255, value ≤ 2,000."""
    if raw is None or raw == "":
        return None, None
    blocks = json.loads(raw) if isinstance(raw, str) else raw
    if not isinstance(blocks, list):
        return None, "blocks must be a list"
    for block in blocks:
        kind = block.get("type")
        if kind == "section" and len(block.get("text", {}).get("text", "")) > 3000:
            return None, "section text must be at most 3000 characters"
        if kind == "actions":
            elements = block.get("elements", [])
            if not 1 <= len(elements) <= 25:
                return None, "an actions block holds 1 to 25 elements"
            for element in elements:
                if len(element["text"]["text"]) > 75 or len(element.get("action_id", "")) > 255:
                    return None, "button text must be at most 75 characters, action_id 255"
                if len(element.get("value", "")) > 2000:
                    return None, "button value must be at most 2000 characters"
    return blocks, None


async def _params(request: web.Request) -> dict[str, Any]:
    """Slack takes form-encoded or JSON bodies (and query parameters); the SDK uses both."""
    params: dict[str, Any] = dict(request.query)
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            params.update(body)
    elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        params.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
    return params


def user(display_name: str, real_name: str = "") -> dict[str, Any]:
    """A `users.info` user object."""
    return {
        "id": "U",
        "name": display_name.lower(),
        "real_name": real_name or display_name,
        "profile": {"display_name": display_name, "real_name": real_name or display_name},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="a fake Slack Web API on 127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    port = parser.parse_args().port

    async def serve() -> None:
        fake = await FakeSlack().start(port)
        try:
            print(json.dumps({"api_url": fake.api_url}), flush=True)
            await asyncio.Event().wait()
        finally:
            await fake.close()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
