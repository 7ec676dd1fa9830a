"""The conversation test file format (`bots/<name>/tests/*.yaml`), validated with pydantic.

A file holds `tests:`, a list of conversations; each is a list of `turns`, a message the user sends
and what must be true after the bot has answered it. docs/testing-conversations.md is the reference.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from core.envelope import known_channel_names
from core.llm.scripted import (
    ScriptedAnswer,
    ScriptedFacts,
    ScriptedFailure,
    ScriptedIntent,
    ScriptedSummary,
    ScriptedToolCall,
    ScriptedToolCalls,
    ScriptStep,
)

__all__ = ["DEFAULT_NOW", "ConversationSpec", "ScriptEntry", "TestFileSpec", "ToolExpectation", "TurnSpec"]

#: the clock of a test that sets no `now`: fixed, so dates in replies are the same on every run
DEFAULT_NOW = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)

#: keys the issue names for features relaybot does not have yet: refused, never silently ignored
NOT_YET: dict[str, str] = {}

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|seconds?|m|min|minutes?|h|hours?|d|days?)?\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str | dict) else value


def _duration(value: Any) -> Any:
    """ "90s", "2m", "1h", "1d" or a number of seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(f"{value!r} is not a duration; write seconds or e.g. '90s', '2m', '1h', '1d'")
        return float(match.group(1)) * _UNIT_SECONDS[(match.group(2) or "s")[0]]
    return value


def _as_utc(value: datetime) -> datetime:
    # YAML reads "2025-03-03T09:00:00" without a zone as a naive time: taken as UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _refuse_not_yet(data: Any) -> Any:
    if isinstance(data, dict):
        for key, why in NOT_YET.items():
            if key in data:
                raise ValueError(f"'{key}' is not supported yet: {why}; remove it from the test")
    return data


StrList = Annotated[list[str], BeforeValidator(_as_list)]
Seconds = Annotated[float, BeforeValidator(_duration), Field(ge=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ToolExpectation(_Strict):
    """A tool the turn called: its name, and arguments it was called with (a subset: other arguments may differ)."""

    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _name_alone(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data


class TurnSpec(_Strict):
    """One message and what must hold once the bot has answered it (every expectation is optional)."""

    #: what the user types; or `click`: the id of a button the previous reply offered (the message is
    #: then that button's label, with the click attached, as a channel would send it)
    say: str | None = None
    click: str | None = None
    #: advance the test's clock by this much before the message (rate limit windows, dates)
    wait: Seconds = 0.0
    #: or set it to this time (never earlier than the previous message's)
    at: datetime | None = None
    #: send the message this many times (expectations apply to the last): filling a rate limit
    repeat: int = Field(1, ge=1, le=1000)
    #: the platform's id of the message; repeating an earlier one is a redelivery
    message_id: str | None = None

    intent: str | None = None
    handler: str | None = None
    tool_called: Annotated[list[ToolExpectation], BeforeValidator(_as_list)] = Field(default_factory=list)
    reply_contains: StrList = Field(default_factory=list)
    reply_matches: StrList = Field(default_factory=list)
    reply_not_contains: StrList = Field(default_factory=list)
    #: the reply offers buttons with these ids (others may be offered too)
    buttons: StrList = Field(default_factory=list)
    sources_include: StrList = Field(default_factory=list)
    #: the system prompt the model was given for the answer contains the text (case-insensitive)
    prompt_contains: StrList = Field(default_factory=list)
    #: the user's stored facts after the turn: each key with its value, or null for "not stored"
    facts: dict[str, str | None] | None = None
    #: no fact at all is stored after the turn
    no_facts: bool = False
    no_reply: bool = False
    #: who holds the conversation after the turn: the bot, or a person asked for (pending_human) or holding it (human)
    handoff: Literal["bot", "pending_human", "human"] | None = None

    @model_validator(mode="before")
    @classmethod
    def _not_yet(cls, data: Any) -> Any:
        return _refuse_not_yet(data)

    @field_validator("at")
    @classmethod
    def _at_utc(cls, at: datetime | None) -> datetime | None:
        return None if at is None else _as_utc(at)

    @field_validator("reply_matches")
    @classmethod
    def _compiles(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from exc
        return patterns

    @model_validator(mode="after")
    def _consistent(self) -> TurnSpec:
        if (self.say is None) == (self.click is None):
            raise ValueError("a turn either says something (say: TEXT) or clicks a button (click: ACTION_ID)")
        if self.no_reply and self.buttons:
            raise ValueError("no_reply contradicts buttons")
        if self.no_reply and (self.reply_contains or self.reply_matches or self.sources_include):
            raise ValueError("no_reply contradicts reply_contains / reply_matches / sources_include")
        if self.no_facts and self.facts:
            raise ValueError("no_facts contradicts facts")
        if self.no_reply and self.prompt_contains:
            raise ValueError("no_reply contradicts prompt_contains")
        if self.at is not None and self.wait:
            raise ValueError("a turn sets the clock (at: TIME) or moves it (wait: DURATION), not both")
        return self


class ScriptEntry(_Strict):
    """One step of the model script: exactly one of the keys below (a bare string is an answer)."""

    answer: str | None = None
    tool: str | None = None
    arguments: dict[str, Any] | None = None
    tool_calls: list[ToolExpectation] | None = None
    text: str | None = None
    facts: dict[str, str] | None = None
    intent: str | None = None
    summary: str | None = None
    fail: str | None = None
    #: with an answer or a tool call: the tokens the model reports for it (fills a daily budget)
    tokens: int | None = Field(None, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _bare_answer(cls, data: Any) -> Any:
        return {"answer": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _one_kind(self) -> ScriptEntry:
        kinds = [
            k
            for k in ("answer", "tool", "tool_calls", "facts", "intent", "summary", "fail")
            if getattr(self, k) is not None
        ]
        if len(kinds) != 1:
            raise ValueError(
                "a model step is one of: a text, {answer}, {tool, arguments}, {tool_calls: [...]}, "
                f"{{facts}}, {{intent}}, {{summary}}, {{fail}}; this one has {', '.join(kinds) or 'none of them'}"
            )
        if self.arguments is not None and self.tool is None:
            raise ValueError("'arguments' goes with 'tool'")
        if self.text is not None and self.tool is None and self.tool_calls is None:
            raise ValueError("'text' goes with 'tool' or 'tool_calls' (what the model says while calling)")
        if self.tokens is not None and self.answer is None and self.tool is None and self.tool_calls is None:
            raise ValueError("'tokens' goes with 'answer', 'tool' or 'tool_calls' (the usage the model reports)")
        return self

    def to_step(self) -> ScriptStep:
        if self.answer is not None:
            return ScriptedAnswer(self.answer, tokens=self.tokens)
        if self.tool is not None:
            call = ScriptedToolCall(self.tool, self.arguments or {})
            return ScriptedToolCalls((call,), text=self.text or "", tokens=self.tokens)
        if self.tool_calls is not None:
            calls = tuple(ScriptedToolCall(c.name, c.arguments) for c in self.tool_calls)
            return ScriptedToolCalls(calls, text=self.text or "", tokens=self.tokens)
        if self.facts is not None:
            return ScriptedFacts(self.facts)
        if self.intent is not None:
            return ScriptedIntent(self.intent)
        if self.summary is not None:
            return ScriptedSummary(self.summary)
        return ScriptedFailure(self.fail or "scripted failure")


class ConversationSpec(_Strict):
    name: str = Field(min_length=1)
    channel: str = "web"
    #: who speaks (each conversation gets a user of its own, so tests never share facts or limits)
    user: str = Field("tester", min_length=1)
    user_name: str | None = None
    #: the clock at the first message
    now: datetime = DEFAULT_NOW
    #: the model: one text for every answer, or the steps in order; none: the offline provider
    model: str | list[ScriptEntry] | None = None
    turns: list[TurnSpec] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _not_yet(cls, data: Any) -> Any:
        return _refuse_not_yet(data)

    @field_validator("channel")
    @classmethod
    def _known_channel(cls, channel: str) -> str:
        known = known_channel_names()
        if channel not in known:
            raise ValueError(f"unknown channel {channel!r}; one of {', '.join(sorted(known))}")
        return channel

    @field_validator("now")
    @classmethod
    def _utc(cls, now: datetime) -> datetime:
        return _as_utc(now)

    @model_validator(mode="after")
    def _time_goes_forward(self) -> ConversationSpec:
        for number, at in enumerate(self.times(), start=1):
            turn = self.turns[number - 1]
            if turn.at is not None and turn.at != at:
                raise ValueError(
                    f"turn {number}: at: {turn.at.isoformat()} is before the previous message "
                    f"({at.isoformat()}); the clock only goes forward"
                )
        return self

    def times(self) -> list[datetime]:
        """When each turn's message is sent: `now`, moved by each `wait` and `at` in turn (an `at` in
        the past leaves the clock where it was; the validator refuses it)."""
        times: list[datetime] = []
        clock = self.now
        for turn in self.turns:
            if turn.at is not None:
                clock = max(clock, turn.at)
            clock += timedelta(seconds=turn.wait)
            times.append(clock)
        return times

    def script(self) -> list[ScriptStep] | str | None:
        if isinstance(self.model, list):
            return [entry.to_step() for entry in self.model]
        return self.model


class TestFileSpec(_Strict):
    tests: list[ConversationSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> TestFileSpec:
        seen: set[str] = set()
        for test in self.tests:
            if test.name in seen:
                raise ValueError(f"two tests are named {test.name!r}; names must be unique in a file")
            seen.add(test.name)
        return self
