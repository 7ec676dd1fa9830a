from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from core.frozen import fast_init
from core.knowledge.passage import Passage
from core.tokens import estimate_tokens


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolSpec:
    """A tool the model may call: its name, what it does, and its arguments as a JSON schema."""

    name: str
    description: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCall:
    """The model asking for one tool run; `id` pairs it with its result in the next request."""

    id: str
    name: str
    arguments: Mapping[str, Any]


@fast_init
@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of the context. Function calling adds two shapes: an assistant message that
    carries `tool_calls`, and a `tool` message with the result of one call (`tool_call_id`)."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    #: the content's token estimate when the caller has it already (a stored message's `tokens`),
    #: so that estimating the context's usage does not weigh the same texts again
    tokens: int | None = field(default=None, compare=False, repr=False)


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class LLMRequest:
    messages: tuple[ChatMessage, ...]
    model: str | None = None
    max_tokens: int = 1024
    temperature: float = 0.3
    #: tools the model may call; empty: a plain chat request
    tools: tuple[ToolSpec, ...] = ()
    #: "none": the tools stay declared (a context holding tool calls needs them) but the model must answer
    tool_choice: Literal["auto", "none"] = "auto"
    #: the knowledge passages in the context (numbered as there); None: no knowledge was searched
    passages: tuple[Passage, ...] | None = None
    #: structured output: a JSON Schema the answer must follow (OpenAI-style `response_format`); None: free text
    json_schema: Mapping[str, Any] | None = None


@fast_init
@dataclass(frozen=True, slots=True)
class Usage:
    tokens_in: int
    tokens_out: int
    estimated: bool = False


def context_tokens(messages: Iterable[ChatMessage]) -> int:
    """The offline token estimate of a context: each message's own `tokens` where it carries them."""
    return sum(estimate_tokens(m.content) if m.tokens is None else m.tokens for m in messages)


def estimated_usage(request: LLMRequest, text: str) -> Usage:
    """The offline estimate, for providers (and cut streams) that report no usage of their own."""
    return Usage(tokens_in=context_tokens(request.messages), tokens_out=estimate_tokens(text), estimated=True)


@fast_init
@dataclass(frozen=True, slots=True)
class StreamChunk:
    """A piece of a streamed answer: new text, and on the last chunk the usage if known."""

    text: str = ""
    usage: Usage | None = None
    #: on the last chunk, when the model stopped to call tools instead of (or after) answering
    tool_calls: tuple[ToolCall, ...] = ()


#: set to True on a provider whose stream never waits on I/O (it computes its answer in place, as the
#: offline one does). The chain arms no deadline for it, since a timeout cannot interrupt code that
#: does not await (arming and moving one cost more than the offline answer's own stream), and streams
#: none of its text to the channel: the answer exists whole at once, and the final reply carries it.
IN_PROCESS = "in_process"


class LLMProvider(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def model(self) -> str: ...

    def stream(self, request: LLMRequest) -> AsyncIterator[StreamChunk]:
        """Stream the answer; raises core.errors.ProviderError on failure."""
        ...
