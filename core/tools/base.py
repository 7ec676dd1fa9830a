"""A tool's declaration, what it is called with, and what a call gave."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp

from core.errors import RelaybotError
from core.llm.base import ToolSpec

ToolOutcome = Literal["ok", "error", "timeout", "invalid_arguments", "unknown_tool"]


class ToolError(RelaybotError):
    """A tool's expected failure (no such order, the ticketing service said no).

    The message is shown to the model (and may reach the user through it), so it says what went
    wrong in plain words and carries no secrets. Any other exception is a bug or an outage: the
    model is told only that the tool failed.
    """


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolContext:
    """Who is asking and what a tool may use. `settings` is the bot's `[tools.settings]` table;
    `http` the process's shared client session (owned by the executor)."""

    bot: str
    session_id: str
    user_id: str
    channel: str
    #: the inbound message's id: the same on a redelivery, so a tool that acts can send it as an
    #: idempotency key and a retried turn does not act twice
    request_id: str
    bot_dir: Path | None
    data_dir: Path
    settings: Mapping[str, str]
    http: aiohttp.ClientSession
    #: `ask_for_person(reason)`: hand the conversation to a person when the turn ends (the user gets
    #: the bot's acknowledgement as the turn's reply); None where there is no conversation (a test)
    ask_for_person: Callable[[str], None] | None = None


#: `async def tool(ctx, **arguments) -> JSON-serializable result`
ToolFunction = Callable[..., Awaitable[Any]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Tool:
    name: str
    description: str
    #: JSON schema of the arguments object (type "object", properties, required)
    parameters: Mapping[str, Any]
    function: ToolFunction

    @property
    def spec(self) -> ToolSpec:
        return ToolSpec(name=self.name, description=self.description, parameters=self.parameters)


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolResult:
    name: str
    outcome: ToolOutcome
    output: Any = None
    error: str | None = None
    latency_ms: float = 0.0
    arguments: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    def for_model(self) -> str:
        """The text the model reads as the call's result."""
        if self.ok:
            return json.dumps(self.output, ensure_ascii=False, default=str)
        return json.dumps({"error": self.error or "the tool failed"}, ensure_ascii=False)

    def to_log(self) -> dict[str, object]:
        entry: dict[str, object] = {"tool": self.name, "outcome": self.outcome, "latency_ms": round(self.latency_ms, 2)}
        if self.error is not None:
            entry["error"] = self.error
        return entry
