"""A fake Anthropic Messages API.

`POST /v1/messages`, JSON or SSE (`stream: true`): `message_start` (input tokens),
`content_block_start`, one `content_block_delta` (`text_delta`) per word, `content_block_stop`,
`message_delta` (output tokens, stop_reason), `message_stop`, with a `ping` after the start as the
real API sends. Errors use Anthropic's body (`{"type": "error", "error": {"type", "message"}}`);
529 is `overloaded_error`. The key may come as `x-api-key` or `Authorization: Bearer` (the 2.x SDK
sends either); with `api_key` set, any other key gets a 401.

    async with FakeAnthropic() as fake:
        client = AsyncAnthropic(api_key="k", base_url=fake.base_url)
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from tests.fakes.scripted import (
    Answer,
    Behaviour,
    Cut,
    Malformed,
    ScriptedServer,
    StreamError,
    ToolUse,
    json_pieces,
    pieces,
)

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


class FakeAnthropic(ScriptedServer):
    def __init__(self, *, api_key: str | None = None) -> None:
        super().__init__()
        self.api_key = api_key

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self.handle)

    def check_auth(self, request: web.Request) -> web.Response | None:
        key = request.headers.get("x-api-key", "")
        auth = request.headers.get("Authorization", "")
        if not key and auth.startswith("Bearer "):
            key = auth.removeprefix("Bearer ").strip()
        if not key or (self.api_key is not None and key != self.api_key):
            return web.json_response(self.error_body(401, "invalid x-api-key"), status=401)
        return None

    def error_body(self, status: int, message: str, error_type: str | None = None) -> dict[str, Any]:
        kind = error_type or _ERROR_TYPES.get(status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": message}}

    def complete_body(self, body: dict[str, Any], answer: Answer) -> dict[str, Any]:
        out = answer.output_tokens if answer.output_tokens is not None else len(pieces(answer.text))
        return {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "m"),
            "content": [{"type": "text", "text": answer.text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": answer.input_tokens, "output_tokens": out},
        }

    def tool_body(self, body: dict[str, Any], tool_use: ToolUse) -> dict[str, Any]:
        content: list[dict[str, Any]] = [{"type": "text", "text": tool_use.text}] if tool_use.text else []
        content += [
            {"type": "tool_use", "id": tool_use.call_id(i, "toolu"), "name": name, "input": arguments}
            for i, (name, arguments) in enumerate(tool_use.calls)
        ]
        return {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "m"),
            "content": content,
            "stop_reason": "tool_use",
            "stop_sequence": None,
            "usage": {"input_tokens": tool_use.input_tokens, "output_tokens": 9},
        }

    async def _stream_tool_use(self, response: web.StreamResponse, body: dict[str, Any], behaviour: ToolUse) -> None:
        start = {
            "type": "message_start",
            "message": {
                "id": "msg_fake",
                "type": "message",
                "role": "assistant",
                "model": body.get("model", "m"),
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": behaviour.input_tokens, "output_tokens": 1},
            },
        }
        await self.write_event(response, start, "message_start")
        index = 0
        if behaviour.text:
            block = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
            await self.write_event(response, block, "content_block_start")
            for word in pieces(behaviour.text):
                delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": word}}
                await self.write_event(response, delta, "content_block_delta")
            await self.write_event(response, {"type": "content_block_stop", "index": 0}, "content_block_stop")
            index = 1
        for i, (name, arguments) in enumerate(behaviour.calls):
            tool = {"type": "tool_use", "id": behaviour.call_id(i, "toolu"), "name": name, "input": {}}
            block = {"type": "content_block_start", "index": index, "content_block": tool}
            await self.write_event(response, block, "content_block_start")
            for piece in json_pieces(arguments):
                delta = {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": piece},
                }
                await self.write_event(response, delta, "content_block_delta")
            await self.write_event(response, {"type": "content_block_stop", "index": index}, "content_block_stop")
            index += 1
        end = {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": 9},
        }
        await self.write_event(response, end, "message_delta")
        await self.write_event(response, {"type": "message_stop"}, "message_stop")
        await response.write_eof()

    async def stream(
        self, request: web.Request, response: web.StreamResponse, body: dict[str, Any], behaviour: Behaviour
    ) -> None:
        if isinstance(behaviour, ToolUse):
            await self._stream_tool_use(response, body, behaviour)
            return
        input_tokens = behaviour.input_tokens if isinstance(behaviour, Answer) else 17
        text = behaviour.text if isinstance(behaviour, Answer | Cut | Malformed | StreamError) else ""
        words = pieces(text)
        stop_after = behaviour.after if isinstance(behaviour, Cut | Malformed | StreamError) else len(words)
        if isinstance(behaviour, Answer):
            await self.pause(behaviour.first_token_delay)
        start = {
            "type": "message_start",
            "message": {
                "id": "msg_fake",
                "type": "message",
                "role": "assistant",
                "model": body.get("model", "m"),
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": input_tokens, "output_tokens": 1},
            },
        }
        await self.write_event(response, start, "message_start")
        block = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
        await self.write_event(response, block, "content_block_start")
        await self.write_event(response, {"type": "ping"}, "ping")
        for i, word in enumerate(words[:stop_after]):
            if i and isinstance(behaviour, Answer):
                await self.pause(behaviour.token_delay)
            delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": word}}
            await self.write_event(response, delta, "content_block_delta")
        if isinstance(behaviour, Cut):
            await asyncio.sleep(0.01)  # let the pieces leave before the connection drops
            self._drop(request)
            return
        if isinstance(behaviour, Malformed):
            await self.write_event(response, '{"type": "content_block_delta", "ind', "content_block_delta")
            await response.write_eof()
            return
        if isinstance(behaviour, StreamError):
            error = {"type": "error", "error": {"type": behaviour.error_type, "message": "scripted stream error"}}
            await self.write_event(response, error, "error")
            await response.write_eof()
            return
        assert isinstance(behaviour, Answer)
        await self.write_event(response, {"type": "content_block_stop", "index": 0}, "content_block_stop")
        out = behaviour.output_tokens if behaviour.output_tokens is not None else len(words)
        end = {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": out},
        }
        await self.write_event(response, end, "message_delta")
        await self.write_event(response, {"type": "message_stop"}, "message_stop")
        await response.write_eof()
