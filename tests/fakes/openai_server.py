"""A fake OpenAI Chat Completions API (also what OpenAI-compatible servers speak).

`POST /v1/chat/completions`, JSON or SSE (`stream: true`: one chunk per word, a finish chunk, a
usage chunk with `choices: []` when `stream_options.include_usage` is set, then `data: [DONE]`).
Errors use OpenAI's body (`{"error": {"message", "type", "code"}}`). With `api_key` set, any other
bearer token gets a 401, as a revoked key would.

    async with FakeOpenAI() as fake:
        client = AsyncOpenAI(api_key="k", base_url=fake.base_url)

Run alone (the benchmark does): `python -m tests.fakes.openai_server --port 8001`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
    401: "invalid_request_error",
    404: "invalid_request_error",
    429: "rate_limit_error",
}


class FakeOpenAI(ScriptedServer):
    def __init__(self, *, api_key: str | None = None) -> None:
        super().__init__()
        self.api_key = api_key

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self.handle)

    def check_auth(self, request: web.Request) -> web.Response | None:
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else ""
        if not token or (self.api_key is not None and token != self.api_key):
            body = self.error_body(401, "Incorrect API key provided.")
            body["error"]["code"] = "invalid_api_key"
            return web.json_response(body, status=401)
        return None

    def error_body(self, status: int, message: str, error_type: str | None = None) -> dict[str, Any]:
        kind = error_type or _ERROR_TYPES.get(status, "server_error")
        return {"error": {"message": message, "type": kind, "param": None, "code": None}}

    def complete_body(self, body: dict[str, Any], answer: Answer) -> dict[str, Any]:
        out = answer.output_tokens if answer.output_tokens is not None else len(pieces(answer.text))
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model", "m"),
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": answer.text}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": answer.input_tokens, "completion_tokens": out, "total_tokens": 0},
        }

    def tool_body(self, body: dict[str, Any], tool_use: ToolUse) -> dict[str, Any]:
        calls = [
            {
                "id": tool_use.call_id(i, "call"),
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(arguments)},
            }
            for i, (name, arguments) in enumerate(tool_use.calls)
        ]
        message = {"role": "assistant", "content": tool_use.text or None, "tool_calls": calls}
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model", "m"),
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": tool_use.input_tokens, "completion_tokens": 9, "total_tokens": 0},
        }

    async def stream(
        self, request: web.Request, response: web.StreamResponse, body: dict[str, Any], behaviour: Behaviour
    ) -> None:
        model = str(body.get("model", "m"))

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        if isinstance(behaviour, ToolUse):
            await self._stream_tool_use(response, body, behaviour, chunk)
            return
        text = behaviour.text if isinstance(behaviour, Answer | Cut | Malformed | StreamError) else ""
        words = pieces(text)
        stop_after = behaviour.after if isinstance(behaviour, Cut | Malformed | StreamError) else len(words)
        if isinstance(behaviour, Answer):
            await self.pause(behaviour.first_token_delay)
        await self.write_event(response, chunk({"role": "assistant", "content": ""}), None)
        for i, word in enumerate(words[:stop_after]):
            if i and isinstance(behaviour, Answer):
                await self.pause(behaviour.token_delay)
            await self.write_event(response, chunk({"content": word}), None)
        if isinstance(behaviour, Cut):
            await asyncio.sleep(0.01)  # let the pieces leave before the connection drops
            self._drop(request)
            return
        if isinstance(behaviour, Malformed):
            await self.write_event(response, '{"id": "chatcmpl-fake", "choices": [{"index": 0, "del', None)
            await self.write_event(response, "[DONE]", None)
            await response.write_eof()
            return
        if isinstance(behaviour, StreamError):
            error = {"error": {"message": "scripted stream error", "type": behaviour.error_type, "code": None}}
            await self.write_event(response, error, None)
            await response.write_eof()
            return
        assert isinstance(behaviour, Answer)
        await self.write_event(response, chunk({}, "stop"), None)
        options = body.get("stream_options") or {}
        if behaviour.usage and options.get("include_usage"):
            out = behaviour.output_tokens if behaviour.output_tokens is not None else len(words)
            usage = {
                "prompt_tokens": behaviour.input_tokens,
                "completion_tokens": out,
                "total_tokens": behaviour.input_tokens + out,
            }
            await self.write_event(
                response,
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": model,
                    "choices": [],
                    "usage": usage,
                },
                None,
            )
        await self.write_event(response, "[DONE]", None)
        await response.write_eof()

    async def _stream_tool_use(
        self,
        response: web.StreamResponse,
        body: dict[str, Any],
        behaviour: ToolUse,
        chunk: Any,
    ) -> None:
        await self.write_event(response, chunk({"role": "assistant", "content": None}), None)
        for word in pieces(behaviour.text) if behaviour.text else []:
            await self.write_event(response, chunk({"content": word}), None)
        for i, (name, arguments) in enumerate(behaviour.calls):
            head = {"index": i, "id": behaviour.call_id(i, "call"), "type": "function"}
            await self.write_event(
                response, chunk({"tool_calls": [head | {"function": {"name": name, "arguments": ""}}]}), None
            )
            for piece in json_pieces(arguments):
                await self.write_event(
                    response, chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}), None
                )
        await self.write_event(response, chunk({}, "tool_calls"), None)
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": behaviour.input_tokens, "completion_tokens": 9, "total_tokens": 0}
            await self.write_event(
                response,
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": body.get("model", "m"),
                    "choices": [],
                    "usage": usage,
                },
                None,
            )
        await self.write_event(response, "[DONE]", None)
        await response.write_eof()


async def _serve(port: int, first_token_delay: float, token_delay: float, echo: bool) -> None:
    server = FakeOpenAI()
    server.always(None, Answer(first_token_delay=first_token_delay, token_delay=token_delay, echo=echo))
    await server.start(port)
    print(f"fake OpenAI on {server.base_url}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="A fake OpenAI Chat Completions server on 127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--first-token-delay", type=float, default=0.0, help="seconds before the first word")
    parser.add_argument("--token-delay", type=float, default=0.0, help="seconds between words")
    parser.add_argument("--echo", action="store_true", help="answer with the request's last user message")
    args = parser.parse_args()
    asyncio.run(_serve(args.port, args.first_token_delay, args.token_delay, args.echo))


if __name__ == "__main__":
    main()
