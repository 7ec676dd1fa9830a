"""A tool's declaration, what it is called with, and what a call gave."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import aiohttp

from core.actions import Button, Card, check_offer
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
    #: when the user sent the message (UTC): the turn's time, which a conversation test sets; a tool
    #: stamps what it records with this rather than the system clock
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))


#: `async def tool(ctx, **arguments) -> JSON-serializable result` (or `WithButtons(result, buttons=...)`)
ToolFunction = Callable[..., Awaitable[Any]]


@dataclass(frozen=True, slots=True, init=False)
class WithButtons:
    """A tool's result with buttons (and a card) for the user: `return WithButtons(order, buttons=[...])`.

    The model reads `output` (and the labels, so its answer can point at them); when the model calls the
    tool, the buttons go with the turn's answer, after any a handler offered. A handler calling the tool
    gets them on the result (`result.buttons`) to offer or not. Checked here, like a reply's buttons: a
    bad one is an InvalidAction in the tool that made it.
    """

    output: Any
    buttons: tuple[Button, ...]
    card: Card | None

    def __init__(
        self,
        output: Any,
        *,
        buttons: Sequence[Button | Mapping[str, Any]] = (),
        card: Card | Mapping[str, Any] | None = None,
    ) -> None:
        offered = tuple(Button.of(b) for b in buttons)
        shown = card if card is None or isinstance(card, Card) else Card.from_dict(card)
        check_offer(offered, shown)
        object.__setattr__(self, "output", output)
        object.__setattr__(self, "buttons", offered)
        object.__setattr__(self, "card", shown)


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
    #: what the tool offered the user (WithButtons)
    buttons: tuple[Button, ...] = ()
    card: Card | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    def for_model(self) -> str:
        """The text the model reads as the call's result."""
        if self.ok and (self.buttons or self.card is not None):
            shown = [b.label for b in (*self.buttons, *(self.card.actions if self.card else ()))]
            offered = {"result": self.output, "buttons_shown_to_user": shown}
            return json.dumps(offered, ensure_ascii=False, default=str)
        if self.ok:
            return json.dumps(self.output, ensure_ascii=False, default=str)
        return json.dumps({"error": self.error or "the tool failed"}, ensure_ascii=False)

    def to_log(self) -> dict[str, object]:
        entry: dict[str, object] = {"tool": self.name, "outcome": self.outcome, "latency_ms": round(self.latency_ms, 2)}
        if self.error is not None:
            entry["error"] = self.error
        if self.buttons:
            entry["buttons"] = [b.id for b in self.buttons]
        return entry
