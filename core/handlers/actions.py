"""Clicks (`Envelope.action`): routed to the bot's `@bot.action(id)` handler, before classification.

A click no handler claims goes on like a typed message whose text is the button's label: a flow
that is waiting (IntentStage keeps the conversation with it) reads it as the answer it asked for,
and otherwise the label is classified like anything the user could have typed.
"""

from __future__ import annotations

from core.handlers.loader import HandlerCatalog
from core.pipeline.turn import Turn

__all__ = ["ACTION_INTENT_PREFIX", "ActionStage"]

#: the turn's intent while an action handler runs ("action:cancel.yes"): intent names cannot contain ':'
ACTION_INTENT_PREFIX = "action:"


class ActionStage:
    def __init__(self, catalog: HandlerCatalog) -> None:
        self._catalog = catalog

    async def __call__(self, turn: Turn) -> None:
        action = turn.envelope.action
        if action is None or turn.intent is not None:
            return
        if action.id in self._catalog.for_bot(turn.bot).actions:
            turn.intent, turn.intent_confidence, turn.intent_method = ACTION_INTENT_PREFIX + action.id, 1.0, "action"
