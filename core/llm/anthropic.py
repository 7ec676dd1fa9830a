"""Messages on `AsyncAnthropic`, streamed: text from `content_block_delta`, input tokens from
`message_start`, output tokens from `message_delta`.

Function calling: the request's tools go out as `tools=[{name, description, input_schema}]`; a
`tool_use` content block (its JSON input streamed as `input_json_delta` pieces) becomes a
ToolCall on the last chunk. Our `tool` messages go back as `tool_result` blocks in a user turn.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx2
from anthropic.types import MessageParam, ToolChoiceParam, ToolParam

from core.errors import ProviderBadResponse, ProviderError
from core.llm.base import ChatMessage, LLMRequest, StreamChunk, ToolCall, Usage, estimated_usage
from core.llm.status import SdkErrors, convert_sdk_error

# Unlike the OpenAI SDK, this one lets a connection dropped mid-stream through as httpx2's.
_ERRORS = SdkErrors(
    timeout=anthropic.APITimeoutError,
    connection=(anthropic.APIConnectionError, httpx2.TransportError),
    status=anthropic.APIStatusError,
    key_setting="ANTHROPIC_API_KEY",
)

__all__ = ["AnthropicProvider", "split_system"]


class AnthropicProvider:
    """One Claude model. The client is shared and owned by the caller."""

    def __init__(self, client: anthropic.AsyncAnthropic, *, model: str, name: str = "anthropic") -> None:
        self._client = client
        self._model = model
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    @property
    def model(self) -> str:
        return self._model

    async def stream(self, request: LLMRequest) -> AsyncIterator[StreamChunk]:
        system, messages = split_system(request.messages)
        tokens_in: int | None = None
        tokens_out: int | None = None
        produced: list[str] = []
        # tool_use blocks by content index: (id, name, pieces of the JSON input)
        blocks: dict[int, tuple[str, str, list[str]]] = {}
        tools: list[ToolParam] = [
            {"name": t.name, "description": t.description, "input_schema": dict(t.parameters)} for t in request.tools
        ]
        choice: ToolChoiceParam = {"type": "none"} if request.tool_choice == "none" else {"type": "auto"}
        try:
            response = await self._client.messages.create(
                model=self._model,
                max_tokens=request.max_tokens,
                messages=messages,
                # No temperature: this API version of Messages takes none (the model's default applies).
                system=system if system else anthropic.omit,
                tools=tools if tools else anthropic.omit,
                tool_choice=choice if tools else anthropic.omit,
                stream=True,
            )
            async with response:
                async for event in response:
                    if event.type == "message_start":
                        u = event.message.usage
                        # Cached prompt tokens are reported apart from input_tokens; all of them count.
                        tokens_in = (
                            u.input_tokens + (u.cache_creation_input_tokens or 0) + (u.cache_read_input_tokens or 0)
                        )
                    elif event.type == "content_block_start" and event.content_block.type == "tool_use":
                        block = event.content_block
                        blocks[event.index] = (block.id, block.name, [])
                    elif event.type == "content_block_delta" and event.delta.type == "text_delta":
                        if event.delta.text:
                            produced.append(event.delta.text)
                            yield StreamChunk(text=event.delta.text)
                    elif event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                        if event.index in blocks:
                            blocks[event.index][2].append(event.delta.partial_json)
                    elif event.type == "message_delta":
                        # Cumulative: the last one is the total.
                        tokens_out = event.usage.output_tokens
        except ProviderError:
            raise
        except Exception as exc:
            raise self._convert(exc) from exc
        tool_calls = tuple(self._tool_call(*blocks[i]) for i in sorted(blocks))
        if not produced and not tool_calls:
            raise ProviderBadResponse(f"{self._name}:{self._model} finished without any text", provider=self._name)
        if tokens_in is not None and tokens_out is not None:
            yield StreamChunk(usage=Usage(tokens_in=tokens_in, tokens_out=tokens_out), tool_calls=tool_calls)
        else:
            yield StreamChunk(usage=estimated_usage(request, "".join(produced)), tool_calls=tool_calls)

    def _tool_call(self, call_id: str, name: str, pieces: list[str]) -> ToolCall:
        raw = "".join(pieces) or "{}"
        try:
            arguments = json.loads(raw)
        except ValueError as exc:
            raise ProviderBadResponse(
                f"{self._name}:{self._model} called {name!r} with input that is not JSON: {raw[:200]!r}",
                provider=self._name,
            ) from exc
        if not isinstance(arguments, dict):
            raise ProviderBadResponse(
                f"{self._name}:{self._model} gave {name!r} a non-object input", provider=self._name
            )
        return ToolCall(id=call_id, name=name, arguments=arguments)

    def _convert(self, exc: Exception) -> ProviderError:
        where = f"{self._name}:{self._model} at {self._client.base_url}"
        return convert_sdk_error(exc, _ERRORS, where=where, provider=self._name)


def split_system(messages: tuple[ChatMessage, ...]) -> tuple[str, list[MessageParam]]:
    """System text apart; the conversation as alternating turns starting with the user.

    The Messages API takes the system prompt as a parameter, and wants the first turn to be the
    user's. A history window can start on an assistant message, or hold two turns of one role in a
    row (a turn that failed): those are dropped or merged rather than sent and rejected with a 400.
    Tool calls become `tool_use` blocks of the assistant's turn and tool results `tool_result`
    blocks of the next user turn; a turn without either stays plain text.
    """
    system = "\n\n".join(m.content for m in messages if m.role == "system")
    turns: list[tuple[str, list[str | dict[str, Any]]]] = []
    for m in messages:
        if m.role == "system" or (m.role == "assistant" and not turns):
            continue
        role = "assistant" if m.role == "assistant" else "user"
        parts: list[str | dict[str, Any]] = []
        if m.role == "tool":
            parts.append({"type": "tool_result", "tool_use_id": m.tool_call_id or "", "content": m.content})
        else:
            if m.content:
                parts.append(m.content)
            parts.extend(
                {"type": "tool_use", "id": c.id, "name": c.name, "input": dict(c.arguments)} for c in m.tool_calls
            )
        if turns and turns[-1][0] == role:
            turns[-1][1].extend(parts)
        else:
            turns.append((role, parts))
    out: list[MessageParam] = []
    for role, parts in turns:
        content: Any
        if all(isinstance(p, str) for p in parts):
            content = "\n\n".join(p for p in parts if isinstance(p, str))
        else:
            # Results first: the API wants a user turn's tool_result blocks before any text.
            blocks = [{"type": "text", "text": p} if isinstance(p, str) else p for p in parts]
            content = sorted(blocks, key=lambda b: b["type"] != "tool_result")
        if role == "user":
            out.append({"role": "user", "content": content})
        else:
            out.append({"role": "assistant", "content": content})
    return system, out
