"""A provider that answers from a script: conversation tests run offline and give the same answers every time.

A script is a list of steps, each the model's answer to one request: a text, tool calls, the facts
of a fact extraction, an intent for the LLM intent classifier, or a failure. Requests are of four
kinds and each takes the next step of its own kind, so a script lists the steps in the order the
conversation needs them without counting the model calls memory makes on the side:

- an answer (the reply, and each round of function calling) takes `ScriptedAnswer`,
  `ScriptedToolCalls` or `ScriptedFailure`; with none left it fails, and `problems` says so;
- a fact extraction (structured output) takes `ScriptedFacts`; none left: no facts (the local
  extractor still reads the common ones, as it does beside any model);
- an intent classification takes `ScriptedIntent`; none left: an unusable answer, so the local
  classifier decides (as it does when a model answers off the list);
- a summary takes `ScriptedSummary`; none left: a failure, so the extractive summary is used.

`ScriptedProvider.fixed(text)` answers every answer request with `text`.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from core.errors import ProviderError
from core.llm.base import LLMRequest, StreamChunk, ToolCall, Usage, estimated_usage
from core.memory.llm import SUMMARY_PROMPT

__all__ = [
    "INTENT_PROMPT_OPENING",
    "RequestKind",
    "ScriptStep",
    "ScriptedAnswer",
    "ScriptedFacts",
    "ScriptedFailure",
    "ScriptedIntent",
    "ScriptedProvider",
    "ScriptedSummary",
    "ScriptedToolCall",
    "ScriptedToolCalls",
    "request_kind",
]

RequestKind = Literal["answer", "facts", "intent", "summary"]
_KINDS: tuple[RequestKind, ...] = ("answer", "facts", "intent", "summary")


@dataclass(frozen=True, slots=True)
class ScriptedAnswer:
    text: str
    #: the tokens the model reports for the call (in and out together); None: estimated from the texts
    tokens: int | None = None


@dataclass(frozen=True, slots=True)
class ScriptedToolCall:
    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ScriptedToolCalls:
    """The model calls these tools (the chain runs them and asks again: the next answer step)."""

    calls: tuple[ScriptedToolCall, ...]
    text: str = ""
    tokens: int | None = None


@dataclass(frozen=True, slots=True)
class ScriptedFailure:
    """The provider fails (not retried): the chain's static message answers."""

    message: str = "scripted failure"


@dataclass(frozen=True, slots=True)
class ScriptedFacts:
    facts: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class ScriptedIntent:
    intent: str


@dataclass(frozen=True, slots=True)
class ScriptedSummary:
    text: str


ScriptStep = ScriptedAnswer | ScriptedToolCalls | ScriptedFailure | ScriptedFacts | ScriptedIntent | ScriptedSummary

_KIND: dict[type, RequestKind] = {
    ScriptedAnswer: "answer",
    ScriptedToolCalls: "answer",
    ScriptedFailure: "answer",
    ScriptedFacts: "facts",
    ScriptedIntent: "intent",
    ScriptedSummary: "summary",
}
# How the summary and intent prompts begin (the summary's taken from its module; the intent prompt is
# built per bot, so `classification_prompt` is checked against this line by tests/test_scripted_provider.py).
_SUMMARY_OPENING = SUMMARY_PROMPT.split("\n", 1)[0]
INTENT_PROMPT_OPENING = "Classify the customer's message into exactly one of these intents."


def request_kind(request: LLMRequest) -> RequestKind:
    """What a request asks the model for, from its shape and its system prompt."""
    if request.json_schema is not None:
        return "facts"
    system = request.messages[0].content if request.messages and request.messages[0].role == "system" else ""
    if system.startswith(_SUMMARY_OPENING):
        return "summary"
    if system.startswith(INTENT_PROMPT_OPENING):
        return "intent"
    return "answer"


class ScriptedProvider:
    """An `LLMProvider` whose answers are written in advance (see the module's docstring)."""

    name = "scripted"
    model = "script"

    def __init__(self, steps: Iterable[ScriptStep] = (), *, fixed: str | None = None) -> None:
        self._queues: dict[RequestKind, deque[ScriptStep]] = {kind: deque() for kind in _KINDS}
        for step in steps:
            self._queues[_KIND[type(step)]].append(step)
        self._fixed = fixed
        self._answers = len(self._queues["answer"])
        self._calls = 0
        #: what went wrong with the script (asked for more answers than it has, tools it could not call)
        self.problems: list[str] = []
        #: how many requests of each kind were made
        self.requests: dict[RequestKind, int] = {kind: 0 for kind in self._queues}

    @classmethod
    def fixed(cls, text: str) -> ScriptedProvider:
        return cls(fixed=text)

    @property
    def unused(self) -> list[ScriptStep]:
        """Steps the conversation never asked for (a script longer than the conversation)."""
        return [step for queue in self._queues.values() for step in queue]

    async def stream(self, request: LLMRequest) -> AsyncIterator[StreamChunk]:
        kind = request_kind(request)
        self.requests[kind] += 1
        step = self._queues[kind].popleft() if self._queues[kind] else None
        text, calls = self._respond(kind, step, request)
        if text:
            yield StreamChunk(text=text)
        usage = estimated_usage(request, text)
        reported = step.tokens if isinstance(step, ScriptedAnswer | ScriptedToolCalls) else None
        if reported is not None:
            # As a provider reports it: what a test needs to fill a daily token budget in one turn.
            out = min(usage.tokens_out, reported)
            usage = Usage(tokens_in=reported - out, tokens_out=out)
        yield StreamChunk(usage=usage, tool_calls=calls)

    def _respond(
        self, kind: RequestKind, step: ScriptStep | None, request: LLMRequest
    ) -> tuple[str, tuple[ToolCall, ...]]:
        if kind == "facts":
            facts = step.facts if isinstance(step, ScriptedFacts) else {}
            return json.dumps({"facts": [{"key": k, "value": v} for k, v in facts.items()]}), ()
        if kind == "intent":
            return (step.intent if isinstance(step, ScriptedIntent) else ""), ()
        if kind == "summary":
            if isinstance(step, ScriptedSummary):
                return step.text, ()
            raise ProviderError("no summary in the script (the extractive summary is used)", provider=self.name)
        if step is None:
            if self._fixed is not None:
                return self._fixed, ()
            number = self.requests["answer"]
            self.problems.append(f"the model was asked for answer #{number}, but the script has {self._answers}")
            raise ProviderError(f"the script has no answer #{number}", provider=self.name)
        if isinstance(step, ScriptedFailure):
            raise ProviderError(step.message, provider=self.name)
        if isinstance(step, ScriptedToolCalls):
            offered = sorted(tool.name for tool in request.tools)
            missing = [c.name for c in step.calls if c.name not in offered]
            why = ""
            if request.tool_choice == "none":
                why = "this round may call no tools (the last of [tools] max_rounds)"
            elif missing:
                why = f"the request offers no tool {', '.join(missing)} (offered: {', '.join(offered) or 'none'})"
            if why:
                self.problems.append(f"the script calls {', '.join(c.name for c in step.calls)}, but {why}")
                raise ProviderError(f"scripted tool call not possible: {why}", provider=self.name)
            self._calls += len(step.calls)
            calls = tuple(
                ToolCall(id=f"call_{self._calls - len(step.calls) + n}", name=c.name, arguments=dict(c.arguments))
                for n, c in enumerate(step.calls, start=1)
            )
            return step.text, calls
        assert isinstance(step, ScriptedAnswer)
        return step.text, ()
