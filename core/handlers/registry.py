"""`BotHandlers`: what a bot's handlers.py builds (as `bot = BotHandlers()`) and core reads."""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from core.actions import Action
from core.errors import ConfigError, InvalidAction
from core.tools.base import Tool, ToolFunction
from core.tools.registry import ToolRegistry

if TYPE_CHECKING:
    from core.handlers.context import HandlerTurn

__all__ = ["BotHandlers", "Handler"]

Handler = Callable[["HandlerTurn"], Awaitable[None]]
COMMAND_NAME = re.compile(r"[a-z0-9_]{1,32}")


class BotHandlers:
    """Intent handlers and tools of one bot, registered with decorators.

    `@bot.intent("cancellation")` registers an async handler for that intent (bot.toml's
    `[intents.cancellation] handler` may name another registration). `@bot.tool(description=...,
    parameters={...})` declares a tool; `@bot.action("cancel.yes")` handles a click on the button
    with that id, whatever the conversation was doing: `async def name(ctx: ToolContext, **arguments)`.
    """

    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}
        #: slash commands by name without the slash ("start" for /start)
        self.commands: dict[str, Handler] = {}
        #: clicks by button id (core.actions.Button.id)
        self.actions: dict[str, Handler] = {}
        self.tools = ToolRegistry()

    def command(self, name: str) -> Callable[[Handler], Handler]:
        """Register an async handler for the slash command `/name` (Telegram's /start, /help...)."""
        if not COMMAND_NAME.fullmatch(name):
            raise ConfigError(f"command name {name!r}: use 1-32 lowercase letters, digits or _ without the slash")

        def register(handler: Handler) -> Handler:
            if not inspect.iscoroutinefunction(handler):
                raise ConfigError(f"handler for command /{name} must be an async function (async def)")
            if name in self.commands:
                raise ConfigError(f"two handlers registered for command /{name}")
            self.commands[name] = handler
            return handler

        return register

    def action(self, id: str) -> Callable[[Handler], Handler]:
        """Register an async handler for a click on the button `id` (it runs before any waiting flow)."""
        try:
            Action(id=id)
        except InvalidAction as exc:
            raise ConfigError(f"@bot.action({id!r}): {exc}") from exc

        def register(handler: Handler) -> Handler:
            if not inspect.iscoroutinefunction(handler):
                raise ConfigError(f"handler for action {id!r} must be an async function (async def)")
            if id in self.actions:
                raise ConfigError(f"two handlers registered for action {id!r}")
            self.actions[id] = handler
            return handler

        return register

    def intent(self, name: str) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            if not inspect.iscoroutinefunction(handler):
                raise ConfigError(f"handler for intent {name!r} must be an async function (async def)")
            if name in self.handlers:
                raise ConfigError(f"two handlers registered for intent {name!r}")
            self.handlers[name] = handler
            return handler

        return register

    def tool(
        self, name: str | None = None, *, description: str, parameters: Mapping[str, Any] | None = None
    ) -> Callable[[ToolFunction], ToolFunction]:
        def register(function: ToolFunction) -> ToolFunction:
            if not inspect.iscoroutinefunction(function):
                raise ConfigError(f"tool {name or function.__name__!r} must be an async function (async def)")
            schema = parameters if parameters is not None else {"type": "object", "properties": {}}
            self.tools.add(
                Tool(name=name or function.__name__, description=description, parameters=schema, function=function)
            )
            return function

        return register
