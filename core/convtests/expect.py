"""What one message did (`TurnOutcome`), and its check against the turn's expectations (`check_turn`).

Text expectations are case-insensitive substrings (`reply_contains`, `reply_not_contains`,
`sources_include`); `reply_matches` is a regular expression searched as written; tool arguments and
facts compare values exactly. Every turn must get a reply unless it expects `no_reply`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.actions import Button
from core.convtests.spec import ToolExpectation, TurnSpec
from core.envelope import Envelope, Reply
from core.pipeline.turn import Turn
from core.stores.base import UserFact

__all__ = ["Mismatch", "ToolCallSeen", "TurnOutcome", "check_turn"]


@dataclass(frozen=True, slots=True)
class ToolCallSeen:
    name: str
    arguments: Mapping[str, Any]
    outcome: str

    def describe(self) -> str:
        args = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in self.arguments.items())
        return f"{self.name}({args}) -> {self.outcome}"


@dataclass(frozen=True, slots=True)
class TurnOutcome:
    """What the bot did with one message, read from the turn, the delivered replies and the store."""

    say: str
    #: the replies delivered for the message (none: it was not answered, e.g. a redelivery)
    replies: tuple[str, ...]
    intent: str | None = None
    handler: str | None = None
    tools: tuple[ToolCallSeen, ...] = ()
    sources: tuple[str, ...] = ()
    facts: Mapping[str, str] = field(default_factory=dict)
    notice: str | None = None
    error: str | None = None
    #: the buttons the reply offered (its card's included), and the reply's seq (a click names it)
    offered: tuple[Button, ...] = ()
    offered_in: str | None = None
    #: the conversation's handoff state after the turn (bot, pending_human, human)
    handoff: str | None = None
    #: the system prompt the answer was asked with (None: no model answered the turn)
    prompt: str | None = None

    def describe(self) -> str:
        """One line of what the turn did, shown above a failure's diff for context."""
        parts = [f"intent={self.intent}", f"handler={self.handler}"]
        parts.append("tools=" + ("; ".join(t.describe() for t in self.tools) or "none"))
        if self.notice:
            parts.append(f"notice={self.notice}")
        if self.error:
            parts.append(f"error={self.error}")
        if self.handoff and self.handoff != "bot":
            parts.append(f"handoff={self.handoff}")
        return ", ".join(parts)

    @property
    def reply(self) -> str | None:
        return "\n\n".join(self.replies) if self.replies else None

    @classmethod
    def of(
        cls, envelope: Envelope, turn: Turn | None, replies: Sequence[Reply], facts: Sequence[UserFact]
    ) -> TurnOutcome:
        final = [r for r in replies if r.final]
        sources = tuple(_plain_source(s) for r in final for s in r.sources)
        known = {f.key: f.value for f in facts}
        if turn is None:  # not run at all (a redelivered message): nothing but the facts to report
            return cls(say=envelope.text, replies=tuple(r.text for r in final), facts=known)
        return cls(
            say=envelope.text,
            replies=tuple(r.text for r in final),
            intent=turn.intent,
            handler=turn.handler,
            tools=tuple(ToolCallSeen(t.name, dict(t.arguments), t.outcome) for t in turn.tool_results),
            sources=sources,
            facts=known,
            notice=turn.notice,
            error=turn.error,
            offered=tuple(b for r in final for b in (*r.actions, *(r.card.actions if r.card else ()))),
            offered_in=str(final[-1].seq) if final and final[-1].seq is not None else None,
            prompt=_system_prompt(turn),
        )


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One expectation a turn did not meet."""

    turn: int
    line: int
    say: str
    expectation: str
    expected: str
    actual: str
    reply: str | None


def check_turn(spec: TurnSpec, outcome: TurnOutcome, *, number: int, line: int) -> list[Mismatch]:
    found: list[tuple[str, str, str]] = []
    reply = outcome.reply
    if spec.no_reply:
        if reply is not None:
            found.append(("no_reply", "no reply", "a reply"))
    elif reply is None:
        found.append(("reply", "a reply", "no reply was delivered"))
    if spec.intent is not None and outcome.intent != spec.intent:
        found.append(("intent", repr(spec.intent), repr(outcome.intent)))
    if spec.handler is not None and outcome.handler != spec.handler:
        found.append(("handler", repr(spec.handler), repr(outcome.handler)))
    for tool in spec.tool_called:
        if not any(_called(tool, seen) for seen in outcome.tools):
            calls = "; ".join(seen.describe() for seen in outcome.tools) or "no tool was called"
            found.append(("tool_called", _describe_expected_tool(tool), calls))
    text = (reply or "").casefold()
    for expected in spec.reply_contains:
        if expected.casefold() not in text:
            found.append(("reply_contains", repr(expected), "not in the reply"))
    for pattern in spec.reply_matches:
        if re.search(pattern, reply or "") is None:
            found.append(("reply_matches", f"/{pattern}/", "no match in the reply"))
    for unwanted in spec.reply_not_contains:
        if unwanted.casefold() in text:
            found.append(("reply_not_contains", f"no {unwanted!r}", "it is in the reply"))
    offered = [b.id for b in outcome.offered]
    for button in spec.buttons:
        if button not in offered:
            found.append(("buttons", repr(button), ", ".join(offered) or "no buttons were offered"))
    for source in spec.sources_include:
        if not any(s.casefold().startswith(source.casefold()) for s in outcome.sources):
            found.append(("sources_include", repr(source), ", ".join(outcome.sources) or "no sources"))
    for expected in spec.prompt_contains:
        if outcome.prompt is None:
            found.append(("prompt_contains", repr(expected), "no prompt: a handler, a command or a notice answered"))
        elif expected.casefold() not in outcome.prompt.casefold():
            shown = f"not in the system prompt: {_prompt_lines(outcome.prompt)}"
            found.append(("prompt_contains", repr(expected), shown))
    if spec.facts is not None:
        for key, value in spec.facts.items():
            actual = outcome.facts.get(key)
            if actual != value:
                want = "not stored" if value is None else repr(value)
                found.append((f"facts.{key}", want, "not stored" if actual is None else repr(actual)))
    if spec.handoff is not None and outcome.handoff != spec.handoff:
        found.append(("handoff", spec.handoff, str(outcome.handoff)))
    if spec.no_facts and outcome.facts:
        found.append(("no_facts", "no facts", ", ".join(f"{k}={v!r}" for k, v in outcome.facts.items())))
    return [Mismatch(number, line, outcome.say, what, expected, actual, reply) for what, expected, actual in found]


def _system_prompt(turn: Turn) -> str | None:
    if not turn.context or turn.context[0].role != "system":
        return None
    return turn.context[0].content


def _prompt_lines(prompt: str, *, limit: int = 300) -> str:
    """The prompt's block about the user (name, channel, date), where a test usually looks; the
    prompt's opening when it has none."""
    about = prompt.find("About the user")
    text = prompt[about:].split("\n\n", 1)[0] if about >= 0 else prompt
    text = " / ".join(line.strip() for line in text.splitlines() if line.strip())
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def _called(expected: ToolExpectation, seen: ToolCallSeen) -> bool:
    return expected.name == seen.name and _subset(expected.arguments, seen.arguments)


def _subset(expected: Any, actual: Any) -> bool:
    """Every key of `expected` in `actual` with the same value, recursively; other values equal."""
    if isinstance(expected, Mapping):
        return isinstance(actual, Mapping) and all(k in actual and _subset(v, actual[k]) for k, v in expected.items())
    return bool(expected == actual)


def _describe_expected_tool(tool: ToolExpectation) -> str:
    if not tool.arguments:
        return f"{tool.name}(...)"
    args = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in tool.arguments.items())
    return f"{tool.name}({args}, ...)"


def _plain_source(source: str) -> str:
    """ "[2] [Plans and pricing](https://...) (Team)" as a test names it: "Plans and pricing (Team)"."""
    source = re.sub(r"^\[\d+\]\s*", "", source)
    source = re.sub(r"\[((?:[^\]\\]|\\.)*)\]\([^)\s]*\)", r"\1", source)
    return re.sub(r"\\([\[\]])", r"\1", source)
