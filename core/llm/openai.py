"""Chat completions on `AsyncOpenAI`: OpenAI itself, or any OpenAI-compatible server by base URL
(Ollama, vLLM, LM Studio, a proxy). Streams text and reads usage from the final chunk.

Function calling: the request's tools go out as `tools=[{"type": "function", ...}]`; streamed
`delta.tool_calls` fragments (keyed by index; the id and name come first, the JSON arguments in
pieces) are put together and yielded on the last chunk.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx2
import openai
from openai.types.chat import (
    ChatCompletionAssistantMessageParam,
    ChatCompletionMessageParam,
    ChatCompletionMessageToolCallParam,
    ChatCompletionSystemMessageParam,
    ChatCompletionToolMessageParam,
    ChatCompletionToolParam,
    ChatCompletionUserMessageParam,
)
from openai.types.shared_params import ResponseFormatJSONSchema
from openai.types.shared_params.response_format_json_schema import JSONSchema

from core.errors import (
    ProviderBadResponse,
    ProviderError,
)
from core.llm.base import ChatMessage, LLMRequest, StreamChunk, ToolCall, ToolSpec, Usage, estimated_usage
from core.llm.status import SdkErrors, convert_sdk_error

_ERRORS = SdkErrors(
    timeout=openai.APITimeoutError,
    connection=(openai.APIConnectionError, httpx2.TransportError),
    status=openai.APIStatusError,
    key_setting="OPENAI_API_KEY",
    in_stream=openai.APIError,
)

__all__ = ["OpenAIProvider", "TokenLimitParam"]

# OpenAI's newer models accept only `max_completion_tokens`; many compatible servers know only
# the older `max_tokens`. The factory picks per endpoint.
TokenLimitParam = Literal["max_completion_tokens", "max_tokens"]


class OpenAIProvider:
    """One model on one OpenAI-style endpoint. The client is shared and owned by the caller."""

    def __init__(
        self,
        client: openai.AsyncOpenAI,
        *,
        model: str,
        name: str = "openai",
        token_limit_param: TokenLimitParam = "max_completion_tokens",
    ) -> None:
        self._client = client
        self._model = model
        self._name = name
        self._token_limit_param = token_limit_param

    @property
    def name(self) -> str:
        return self._name

    @property
    def model(self) -> str:
        return self._model

    async def stream(self, request: LLMRequest) -> AsyncIterator[StreamChunk]:
        usage: Usage | None = None
        produced: list[str] = []
        calls: dict[int, _PartialCall] = {}
        new_style = self._token_limit_param == "max_completion_tokens"
        try:
            response = await self._client.chat.completions.create(
                model=self._model,
                messages=[_message(m) for m in request.messages],
                temperature=request.temperature,
                max_completion_tokens=request.max_tokens if new_style else openai.omit,
                max_tokens=openai.omit if new_style else request.max_tokens,
                tools=[_tool(t) for t in request.tools] if request.tools else openai.omit,
                tool_choice=request.tool_choice if request.tools else openai.omit,
                response_format=_json_schema_format(request) if request.json_schema is not None else openai.omit,
                stream=True,
                stream_options={"include_usage": True},
            )
            async with response:
                async for chunk in response:
                    if chunk.usage is not None:
                        usage = Usage(tokens_in=chunk.usage.prompt_tokens, tokens_out=chunk.usage.completion_tokens)
                    for choice in chunk.choices:
                        if choice.index != 0 or choice.delta is None:
                            continue
                        if choice.delta.content:
                            produced.append(choice.delta.content)
                            yield StreamChunk(text=choice.delta.content)
                        for fragment in choice.delta.tool_calls or ():
                            call = calls.setdefault(fragment.index, _PartialCall())
                            call.id = fragment.id or call.id
                            if fragment.function is not None:
                                call.name = fragment.function.name or call.name
                                call.arguments.append(fragment.function.arguments or "")
        except ProviderError:
            raise
        except Exception as exc:
            raise self._convert(exc) from exc
        tool_calls = tuple(self._finish_call(calls[i]) for i in sorted(calls))
        if not produced and not tool_calls:
            raise ProviderBadResponse(f"{self._name}:{self._model} finished without any text", provider=self._name)
        # Compatible servers often ignore include_usage: estimate rather than record zero.
        yield StreamChunk(usage=usage or estimated_usage(request, "".join(produced)), tool_calls=tool_calls)

    def _finish_call(self, call: _PartialCall) -> ToolCall:
        raw = "".join(call.arguments) or "{}"
        try:
            arguments = json.loads(raw)
        except ValueError as exc:
            raise ProviderBadResponse(
                f"{self._name}:{self._model} called {call.name!r} with arguments that are not JSON: {raw[:200]!r}",
                provider=self._name,
            ) from exc
        if not call.id or not call.name or not isinstance(arguments, dict):
            raise ProviderBadResponse(
                f"{self._name}:{self._model} sent an incomplete tool call (id={call.id!r}, name={call.name!r})",
                provider=self._name,
            )
        return ToolCall(id=call.id, name=call.name, arguments=arguments)

    def _convert(self, exc: Exception) -> ProviderError:
        where = f"{self._name}:{self._model} at {self._client.base_url}"
        return convert_sdk_error(exc, _ERRORS, where=where, provider=self._name)


@dataclass(slots=True)
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


def _tool(spec: ToolSpec) -> ChatCompletionToolParam:
    return {
        "type": "function",
        "function": {"name": spec.name, "description": spec.description, "parameters": dict(spec.parameters)},
    }


def _json_schema_format(request: LLMRequest) -> ResponseFormatJSONSchema:
    # Strict: the server constrains the answer to the schema (OpenAI; vLLM, Ollama and LM Studio
    # accept the same shape). The caller validates anyway: not every compatible server enforces it.
    schema = dict(request.json_schema or {})
    return ResponseFormatJSONSchema(
        type="json_schema", json_schema=JSONSchema(name="answer", schema=schema, strict=True)
    )


def _message(message: ChatMessage) -> ChatCompletionMessageParam:
    if message.role == "system":
        return ChatCompletionSystemMessageParam(role="system", content=message.content)
    if message.role == "tool":
        return ChatCompletionToolMessageParam(
            role="tool", tool_call_id=message.tool_call_id or "", content=message.content
        )
    if message.role == "assistant":
        if message.tool_calls:
            calls: list[ChatCompletionMessageToolCallParam] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": json.dumps(dict(c.arguments), ensure_ascii=False)},
                }
                for c in message.tool_calls
            ]
            content: Any = message.content or None
            return ChatCompletionAssistantMessageParam(role="assistant", content=content, tool_calls=calls)
        return ChatCompletionAssistantMessageParam(role="assistant", content=message.content)
    return ChatCompletionUserMessageParam(role="user", content=message.content)
