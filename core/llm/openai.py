"""Chat completions on `AsyncOpenAI`: OpenAI itself, or any OpenAI-compatible server by base URL
(Ollama, vLLM, LM Studio, a proxy). Streams text and reads usage from the final chunk.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal

import httpx2
import openai
from openai.types.chat import (
    ChatCompletionAssistantMessageParam,
    ChatCompletionMessageParam,
    ChatCompletionSystemMessageParam,
    ChatCompletionUserMessageParam,
)

from core.errors import (
    ProviderBadResponse,
    ProviderError,
)
from core.llm.base import ChatMessage, LLMRequest, StreamChunk, Usage, estimated_usage
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
        new_style = self._token_limit_param == "max_completion_tokens"
        try:
            response = await self._client.chat.completions.create(
                model=self._model,
                messages=[_message(m) for m in request.messages],
                temperature=request.temperature,
                max_completion_tokens=request.max_tokens if new_style else openai.omit,
                max_tokens=openai.omit if new_style else request.max_tokens,
                stream=True,
                stream_options={"include_usage": True},
            )
            async with response:
                async for chunk in response:
                    if chunk.usage is not None:
                        usage = Usage(tokens_in=chunk.usage.prompt_tokens, tokens_out=chunk.usage.completion_tokens)
                    for choice in chunk.choices:
                        if choice.index == 0 and choice.delta is not None and choice.delta.content:
                            produced.append(choice.delta.content)
                            yield StreamChunk(text=choice.delta.content)
        except ProviderError:
            raise
        except Exception as exc:
            raise self._convert(exc) from exc
        if not produced:
            raise ProviderBadResponse(f"{self._name}:{self._model} finished without any text", provider=self._name)
        # Compatible servers often ignore include_usage: estimate rather than record zero.
        yield StreamChunk(usage=usage or estimated_usage(request, "".join(produced)))

    def _convert(self, exc: Exception) -> ProviderError:
        where = f"{self._name}:{self._model} at {self._client.base_url}"
        return convert_sdk_error(exc, _ERRORS, where=where, provider=self._name)


def _message(message: ChatMessage) -> ChatCompletionMessageParam:
    if message.role == "system":
        return ChatCompletionSystemMessageParam(role="system", content=message.content)
    if message.role == "assistant":
        return ChatCompletionAssistantMessageParam(role="assistant", content=message.content)
    return ChatCompletionUserMessageParam(role="user", content=message.content)
