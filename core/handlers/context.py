"""What a handler is given: the message, who sent it, what is known, and what it may do."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from core.actions import Action, Button, Card, check_offer
from core.handlers.registry import BotHandlers
from core.intents.base import ACTIVE_FLOW_FIELD
from core.knowledge.passage import Passage
from core.pipeline.turn import Turn
from core.stores.base import Session, SessionStore
from core.tools.base import ToolContext, ToolResult
from core.tools.executor import ToolExecutor

__all__ = ["HandlerTurn"]

_STATE_PREFIX = "flow."


class HandlerTurn:
    """One message, as a handler sees it.

    - `message`, `intent`, `confidence`, `user_id`, `user_name`, `channel`, `session`
    - `facts`: what the user told the bot about themselves (key → value)
    - `passages`: the knowledge retrieved for the message (best first; empty if none)
    - `action`: the click this message is (None when typed); its text is the button's label
    - `reply(text, buttons=[...], card=None)`: answer the turn, optionally offering buttons
      (`Button("id", "Label")` or `{"id": ..., "label": ...}`); the LLM is not called. A handler that
      returns without replying falls through to the LLM, which sees anything passed to `note(text)`.
    - `offer(buttons, card=None)`: buttons to go with the LLM's answer when the handler falls through.
    - `state`, `save_state(**values)`, `end_flow()`, `start_flow(intent, **values)`: a multi-step
      flow. While state is saved, the conversation's next message comes back to this handler without classification.
    - `call_tool(name, **arguments)`: run one of the bot's tools; never raises (see ToolResult).
    - `handoff(reason)`: hand the conversation to a person (core/handoff); the turn ends with the
      bot's acknowledgement.
    """

    def __init__(
        self,
        turn: Turn,
        *,
        intent: str,
        handlers: BotHandlers,
        sessions: SessionStore,
        tools: ToolExecutor,
        tool_context: ToolContext,
    ) -> None:
        self._turn = turn
        self._handlers = handlers
        self._sessions = sessions
        self._tools = tools
        self._tool_context = tool_context
        self.intent = intent
        self.confidence = turn.intent_confidence

    @property
    def message(self) -> str:
        return self._turn.envelope.text

    @property
    def user_id(self) -> str:
        return self._turn.envelope.user_id

    @property
    def user_name(self) -> str | None:
        return self._turn.envelope.user_name

    @property
    def channel(self) -> str:
        return self._turn.envelope.channel

    @property
    def session(self) -> Session:
        assert self._turn.session is not None, "the handler stage runs after the session is loaded"
        return self._turn.session

    @property
    def facts(self) -> Mapping[str, str]:
        return {fact.key: fact.value for fact in self._turn.facts}

    @property
    def passages(self) -> list[Passage]:
        return list(self._turn.passages or [])

    @property
    def answered(self) -> bool:
        return self._turn.done

    @property
    def welcome(self) -> str:
        """The bot's `welcome` from bot.toml (what /start answers without a handler of its own)."""
        return self._turn.bot.welcome

    @property
    def action(self) -> Action | None:
        return self._turn.envelope.action

    def reply(
        self,
        text: str,
        *,
        buttons: Sequence[Button | Mapping[str, Any]] = (),
        card: Card | Mapping[str, Any] | None = None,
    ) -> None:
        """Answer; raises core.errors.InvalidAction for a bad button or card (the message says which)."""
        offered = tuple(Button.of(b) for b in buttons)
        shown = card if card is None or isinstance(card, Card) else Card.from_dict(card)
        self._turn.answer(text, actions=offered, card=shown)

    def offer(
        self, buttons: Sequence[Button | Mapping[str, Any]] = (), *, card: Card | Mapping[str, Any] | None = None
    ) -> None:
        """Buttons (and a card) to go with the model's answer, when this handler falls through to it;
        not shown if every model fails and the bot's static message answers instead."""
        offered = tuple(Button.of(b) for b in buttons)
        shown = card if card is None or isinstance(card, Card) else Card.from_dict(card)
        check_offer(offered, shown)
        self._turn.offer_actions, self._turn.offer_card = offered, shown

    def handoff(self, reason: str = "") -> None:
        """Hand the conversation to a person: the turn ends with the bot's acknowledgement ("A person
        will reply here shortly"), and the bot stays silent until a person hands it back (or nobody
        takes it within the bot's `[handoff] timeout_seconds`)."""
        self._turn.ask_for_person("handler", reason or self.message[:500])
        self._turn.answer(self._turn.bot.handoff.acknowledgement)

    def note(self, text: str) -> None:
        """Context for the model when this handler falls through (e.g. the order it looked up)."""
        self._turn.handler_notes.append(text)

    # --- flows ----------------------------------------------------------------------------------

    @property
    def in_flow(self) -> bool:
        return self.session.fields.get(ACTIVE_FLOW_FIELD) == self.intent

    @property
    def state(self) -> Mapping[str, str]:
        """This flow's saved values (empty outside a flow)."""
        if not self.in_flow:
            return {}
        fields = self.session.fields
        return {k.removeprefix(_STATE_PREFIX): v for k, v in fields.items() if k.startswith(_STATE_PREFIX) and v}

    async def save_state(self, **values: str) -> None:
        """Start or continue this intent's flow, merging `values` into its state."""
        fields = {ACTIVE_FLOW_FIELD: self.intent, **{_STATE_PREFIX + k: str(v) for k, v in values.items()}}
        await self._set_fields(fields)

    async def start_flow(self, intent: str, **values: str) -> None:
        """Start `intent`'s flow from another handler (a button's, a command's): the conversation's next
        message goes to that intent's handler, which finds `values` in its `state`."""
        if intent not in self._turn.bot.intents.items:
            raise ValueError(f"start_flow({intent!r}): bot.toml has no [intents.{intent}]")
        self.intent = intent
        await self.save_state(**values)

    async def end_flow(self) -> None:
        """Leave the flow: its state is cleared, the next message is classified again."""
        cleared = {k: "" for k in self.session.fields if k.startswith(_STATE_PREFIX)}
        await self._set_fields({ACTIVE_FLOW_FIELD: "", **cleared})

    async def _set_fields(self, fields: dict[str, str]) -> None:
        # Session fields only merge (the store has no delete): an empty value means "unset".
        await self._sessions.set_fields(self.session.session_id, fields)
        self.session.fields.update(fields)

    # --- tools ----------------------------------------------------------------------------------

    async def call_tool(self, name: str, **arguments: Any) -> ToolResult:
        result = await self._tools.call(
            self._handlers.tools,
            name,
            arguments,
            context=self._tool_context,
            timeout_seconds=self._turn.bot.tools.timeout_seconds,
            caller=f"handler:{self.intent}",
        )
        self._turn.tool_calls.append(result.to_log())
        self._turn.tool_results.append(result)
        return result
