"""What the fake LLM servers can be told to do, per request, and what they record.

A test queues behaviours for a model (`server.queue("gpt-4o", Fail(500), Answer("Hi"))`, one per
request in order) or sets a lasting one (`server.always("gpt-4o", Fail(503))`); a request with
nothing scripted gets the default `Answer()`. Every request is recorded (time, path, headers,
JSON body) so tests can count what reached the "provider". The wire formats live in the
subclasses (`openai_server.py`, `anthropic_server.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes.local_server import LocalServer


@dataclass(frozen=True)
class Answer:
    """200: the text, streamed as one event per word when the request asks for a stream."""

    text: str = "Hello from the fake provider."
    usage: bool = True  # False: no usage in the stream (as many OpenAI-compatible servers do)
    input_tokens: int = 21
    output_tokens: int | None = None  # default: one per streamed piece
    first_token_delay: float = 0.0
    token_delay: float = 0.0
    #: answer with the request's last user message instead of `text` (benchmarks check each reply
    #: answers its own message)
    echo: bool = False


@dataclass(frozen=True)
class Fail:
    """An HTTP error with the provider's error body; `retry_after` sets Retry-After (seconds)."""

    status: int
    retry_after: float | None = None
    retry_after_ms: int | None = None
    message: str = "scripted failure"
    error_type: str | None = None  # default: the provider's type for the status


@dataclass(frozen=True)
class Hang:
    """Accept the request, then send nothing (not even headers) for `seconds`."""

    seconds: float = 30.0


@dataclass(frozen=True)
class Reset:
    """Drop the connection without any response."""


@dataclass(frozen=True)
class Cut:
    """Stream the first `after` pieces of `text`, then drop the connection mid-body."""

    text: str = "This answer will be cut off before it ends properly."
    after: int = 3


@dataclass(frozen=True)
class Malformed:
    """A 200 stream whose event data stops being JSON after `after` good pieces."""

    text: str = "Some text and then garbage."
    after: int = 0


@dataclass(frozen=True)
class StreamError:
    """A 200 stream that sends `after` pieces, then an `error` event of `error_type`."""

    error_type: str
    text: str = "Partial answer then an error event."
    after: int = 0


@dataclass(frozen=True)
class ToolUse:
    """200: the model calls tools (`calls`: (name, arguments) pairs), after optional `text`.

    OpenAI: `finish_reason: "tool_calls"` with `tool_calls` (arguments streamed in pieces);
    Anthropic: `tool_use` content blocks (input streamed as `input_json_delta`), `stop_reason: "tool_use"`.
    """

    calls: tuple[tuple[str, dict[str, Any]], ...]
    text: str = ""
    input_tokens: int = 30

    def call_id(self, index: int, prefix: str) -> str:
        return f"{prefix}_{index}_{self.calls[index][0]}"


def json_pieces(arguments: dict[str, Any], size: int = 7) -> list[str]:
    """JSON arguments cut into small pieces, as the APIs stream them."""
    raw = json.dumps(arguments)
    return [raw[i : i + size] for i in range(0, len(raw), size)] or [""]


Behaviour = Answer | Fail | Hang | Reset | Cut | Malformed | StreamError | ToolUse


@dataclass(frozen=True)
class Recorded:
    at: float  # time.monotonic() when the request arrived
    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def model(self) -> str:
        return str(self.body.get("model", ""))


def pieces(text: str) -> list[str]:
    """Roughly what a tokenizer streams: one word with its trailing space per event."""
    return re.findall(r"\S+\s*", text) or [text]


class ScriptedServer(LocalServer):
    """The scripting, recording and lifecycle; subclasses speak a wire format."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.port = 0
        self._queues: dict[str | None, deque[Behaviour]] = {}
        self._always: dict[str | None, Behaviour] = {}
        self._closing = asyncio.Event()

    # --- scripting ----------------------------------------------------------------------------

    def queue(self, model: str | None, *behaviours: Behaviour) -> None:
        """One behaviour per coming request for `model` (None: any model), in order."""
        self._queues.setdefault(model, deque()).extend(behaviours)

    def always(self, model: str | None, behaviour: Behaviour | None) -> None:
        """A lasting behaviour for `model` once its queue is empty; None removes it."""
        if behaviour is None:
            self._always.pop(model, None)
        else:
            self._always[model] = behaviour

    def count(self, model: str | None = None) -> int:
        return sum(1 for r in self.requests if model is None or r.model == model)

    def _next(self, model: str) -> Behaviour:
        for key in (model, None):
            queued = self._queues.get(key)
            if queued:
                return queued.popleft()
        return self._always.get(model) or self._always.get(None) or Answer()

    # --- lifecycle ----------------------------------------------------------------------------

    async def stopping(self) -> None:
        self._closing.set()  # hanging handlers return

    # --- shared behaviours --------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            body = {}
        if not isinstance(body, dict):
            body = {}
        self.requests.append(Recorded(at=time.monotonic(), path=request.path, headers=dict(request.headers), body=body))
        denied = self.check_auth(request)
        if denied is not None:
            return denied
        behaviour = self._next(str(body.get("model", "")))
        if isinstance(behaviour, Answer) and behaviour.echo:
            behaviour = dataclasses.replace(behaviour, text=_last_user_text(body) or behaviour.text)
        if isinstance(behaviour, Fail):
            headers: dict[str, str] = {}
            if behaviour.retry_after is not None:
                headers["retry-after"] = f"{behaviour.retry_after:g}"
            if behaviour.retry_after_ms is not None:
                headers["retry-after-ms"] = str(behaviour.retry_after_ms)
            body = self.error_body(behaviour.status, behaviour.message, behaviour.error_type)
            return web.json_response(body, status=behaviour.status, headers=headers)
        if isinstance(behaviour, Hang):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), behaviour.seconds)
            return web.json_response(self.error_body(504, "hung"), status=504)
        if isinstance(behaviour, Reset):
            self._drop(request)
            return web.Response(status=500)
        if not body.get("stream"):
            if isinstance(behaviour, ToolUse):
                return web.json_response(self.tool_body(body, behaviour))
            assert isinstance(behaviour, Answer), "only Answer and ToolUse make sense without streaming"
            return web.json_response(self.complete_body(body, behaviour))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        # A client that gave up (a timeout on its side) needs nothing more.
        with contextlib.suppress(ConnectionError):
            await self.stream(request, response, body, behaviour)
        return response

    @staticmethod
    def _drop(request: web.Request) -> None:
        transport = request.transport
        if transport is not None:
            transport.abort()

    async def write_event(self, response: web.StreamResponse, data: dict[str, Any] | str, event: str | None) -> None:
        payload = data if isinstance(data, str) else json.dumps(data)
        prefix = f"event: {event}\n" if event else ""
        await response.write(f"{prefix}data: {payload}\n\n".encode())

    async def pause(self, seconds: float) -> None:
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), seconds)

    # --- the wire format (subclasses) ---------------------------------------------------------

    def check_auth(self, request: web.Request) -> web.Response | None:
        return None

    def error_body(self, status: int, message: str, error_type: str | None = None) -> dict[str, Any]:
        raise NotImplementedError

    def complete_body(self, body: dict[str, Any], answer: Answer) -> dict[str, Any]:
        raise NotImplementedError

    def tool_body(self, body: dict[str, Any], tool_use: ToolUse) -> dict[str, Any]:
        raise NotImplementedError

    async def stream(
        self, request: web.Request, response: web.StreamResponse, body: dict[str, Any], behaviour: Behaviour
    ) -> None:
        raise NotImplementedError


def _last_user_text(body: dict[str, Any]) -> str:
    """The text of the request's last user message (OpenAI and Anthropic shapes alike)."""
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""
