from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol

from core.tokens import estimate_tokens


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True, slots=True, kw_only=True)
class LLMRequest:
    messages: tuple[ChatMessage, ...]
    model: str | None = None
    max_tokens: int = 1024
    temperature: float = 0.3


@dataclass(frozen=True, slots=True)
class Usage:
    tokens_in: int
    tokens_out: int
    estimated: bool = False


def estimated_usage(request: LLMRequest, text: str) -> Usage:
    """The offline estimate, for providers (and cut streams) that report no usage of their own."""
    tokens_in = sum(estimate_tokens(m.content) for m in request.messages)
    return Usage(tokens_in=tokens_in, tokens_out=estimate_tokens(text), estimated=True)


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """A piece of a streamed answer: new text, and on the last chunk the usage if known."""

    text: str = ""
    usage: Usage | None = None


class LLMProvider(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def model(self) -> str: ...

    def stream(self, request: LLMRequest) -> AsyncIterator[StreamChunk]:
        """Stream the answer; raises core.errors.ProviderError on failure."""
        ...
