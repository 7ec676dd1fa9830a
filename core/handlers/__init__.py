"""Intent handlers: a bot's own Python code (`bots/<name>/handlers.py`) that answers an intent itself,
runs a multi-step flow with its state in the session, or hands the turn on to the LLM.

    # bots/support/handlers.py
    from core.handlers import BotHandlers, HandlerTurn

    bot = BotHandlers()

    @bot.intent("cancellation")
    async def cancellation(turn: HandlerTurn) -> None:
        ...

core loads that file by path (`load_handlers`); it never imports `bots` as a package.
"""

from core.actions import Button, Card, CardField
from core.handlers.actions import ActionStage
from core.handlers.context import HandlerTurn
from core.handlers.loader import HandlerCatalog, load_handlers
from core.handlers.registry import BotHandlers, Handler
from core.handlers.stage import HandlerStage

__all__ = [
    "ActionStage",
    "BotHandlers",
    "Button",
    "Card",
    "CardField",
    "Handler",
    "HandlerCatalog",
    "HandlerStage",
    "HandlerTurn",
    "load_handlers",
]
