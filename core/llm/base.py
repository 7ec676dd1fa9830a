from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol


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
