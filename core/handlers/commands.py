"""Slash commands (`/start`, `/help`): routed to the bot's `@bot.command` handlers, not classified."""

from __future__ import annotations

import re

from core.handlers.loader import HandlerCatalog
from core.pipeline.turn import Turn

__all__ = ["CommandStage"]

# Telegram adds the bot's name in groups (/help@tasklane_bot); the adapter strips it, but not every
# channel has one, so it is accepted here too.
_COMMAND = re.compile(r"^/([A-Za-z0-9_]{1,32})(?:@\S+)?(?:\s|$)")


class CommandStage:
    """A message that is a slash command the bot registered goes to that handler (HandlerStage runs it);
    `/start` without a handler of its own gets the bot's welcome. Other text is left to the classifier."""

    def __init__(self, catalog: HandlerCatalog) -> None:
        self._catalog = catalog

    async def __call__(self, turn: Turn) -> None:
        match = _COMMAND.match(turn.envelope.text.strip())
        if match is None:
            return
        name = match.group(1).lower()
        if name in self._catalog.for_bot(turn.bot).commands:
            turn.intent, turn.intent_confidence, turn.intent_method = f"/{name}", 1.0, "command"
        elif name == "start" and turn.bot.welcome:
            turn.answer(turn.bot.welcome)
