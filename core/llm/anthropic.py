"""Messages on `AsyncAnthropic`, streamed: text from `content_block_delta`, input tokens from
`message_start`, output tokens from `message_delta`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anthropic
import httpx2
from anthropic.types import MessageParam

from core.errors import ProviderBadResponse, ProviderError
from core.llm.base import ChatMessage, LLMRequest, StreamChunk, Usage, estimated_usage
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
        try:
            response = await self._client.messages.create(
                model=self._model,
                max_tokens=request.max_tokens,
                messages=messages,
                # No temperature: this API version of Messages takes none (the model's default applies).
                system=system if system else anthropic.omit,
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
                    elif event.type == "content_block_delta" and event.delta.type == "text_delta":
                        if event.delta.text:
                            produced.append(event.delta.text)
                            yield StreamChunk(text=event.delta.text)
                    elif event.type == "message_delta":
                        # Cumulative: the last one is the total.
                        tokens_out = event.usage.output_tokens
        except ProviderError:
            raise
        except Exception as exc:
            raise self._convert(exc) from exc
        if not produced:
            raise ProviderBadResponse(f"{self._name}:{self._model} finished without any text", provider=self._name)
        if tokens_in is not None and tokens_out is not None:
            yield StreamChunk(usage=Usage(tokens_in=tokens_in, tokens_out=tokens_out))
        else:
            yield StreamChunk(usage=estimated_usage(request, "".join(produced)))

    def _convert(self, exc: Exception) -> ProviderError:
        where = f"{self._name}:{self._model} at {self._client.base_url}"
        return convert_sdk_error(exc, _ERRORS, where=where, provider=self._name)


def split_system(messages: tuple[ChatMessage, ...]) -> tuple[str, list[MessageParam]]:
    """System text apart; the conversation as alternating turns starting with the user.

    The Messages API takes the system prompt as a parameter, and wants the first turn to be the
    user's. A history window can start on an assistant message, or hold two turns of one role in a
    row (a turn that failed): those are dropped or merged rather than sent and rejected with a 400.
    """
    system = "\n\n".join(m.content for m in messages if m.role == "system")
    turns: list[tuple[str, list[str]]] = []
    for m in messages:
        if m.role == "system" or (m.role == "assistant" and not turns):
            continue
        if turns and turns[-1][0] == m.role:
            turns[-1][1].append(m.content)
        else:
            turns.append((m.role, [m.content]))
    out: list[MessageParam] = []
    for role, parts in turns:
        text = "\n\n".join(parts)
        if role == "user":
            out.append({"role": "user", "content": text})
        else:
            out.append({"role": "assistant", "content": text})
    return system, out
