"""Loads `bots/<name>/handlers.py` by path and checks it against the bot's `[intents]` and `[tools]`."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterable

from core.bots import BotConfig
from core.errors import ConfigError
from core.handlers.registry import BotHandlers, Handler

__all__ = ["HANDLERS_FILE", "HandlerCatalog", "load_handlers"]

HANDLERS_FILE = "handlers.py"
#: core.handlers.actions.ACTION_INTENT_PREFIX (that module imports this one)
_ACTION = "action:"


def load_handlers(bot: BotConfig) -> BotHandlers:
    """The bot's `bot = BotHandlers()` from its handlers.py (none: an empty one), checked.

    Runs the file's code: done once per bot at start-up. Errors name the file and what to fix.
    """
    path = bot.path / HANDLERS_FILE if bot.path is not None else None
    if path is None or not path.is_file():
        handlers = BotHandlers()
    else:
        # A name no package owns: core never imports `bots` as a package, and two bots'
        # handlers.py never collide in sys.modules.
        module_name = f"relaybot_bot_handlers_{bot.name.replace('-', '_')}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise ConfigError(f"{path}: cannot be loaded as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except ConfigError as exc:
            sys.modules.pop(module_name, None)
            raise ConfigError(f"{path}: {exc}") from exc
        except Exception as exc:
            sys.modules.pop(module_name, None)
            raise ConfigError(f"{path} failed to load: {type(exc).__name__}: {exc}") from exc
        found = getattr(module, "bot", None)
        if not isinstance(found, BotHandlers):
            raise ConfigError(f"{path} must define `bot = BotHandlers()` (from core.handlers) and register on it")
        handlers = found
    _check(bot, handlers, str(path or f"bot {bot.name!r}"))
    return handlers


def _check(bot: BotConfig, handlers: BotHandlers, where: str) -> None:
    intents = bot.intents.items
    named = {intent.handler for intent in intents.values() if intent.handler}
    for intent_name, intent in intents.items():
        if intent.handler and intent.handler not in handlers.handlers:
            raise ConfigError(
                f"[intents.{intent_name}] handler = {intent.handler!r}, but {where} registers no "
                f"@bot.intent({intent.handler!r})"
            )
    for registered in handlers.handlers:
        if registered not in intents and registered not in named:
            raise ConfigError(
                f"{where} registers @bot.intent({registered!r}), but bot.toml has no [intents.{registered}]"
            )
    handlers.tools.specs(bot.tools.llm)  # raises ConfigError for an undeclared tool


class HandlerCatalog:
    """Every bot's handlers, loaded once; bots built in code (no folder) get empty ones."""

    def __init__(self, bots: Iterable[BotConfig] = ()) -> None:
        self._loaded: dict[str, BotHandlers] = {}
        for bot in bots:
            self._loaded[bot.name] = load_handlers(bot)

    def for_bot(self, bot: BotConfig) -> BotHandlers:
        handlers = self._loaded.get(bot.name)
        if handlers is None:
            handlers = self._loaded[bot.name] = load_handlers(bot)
        return handlers

    def handler_for(self, bot: BotConfig, intent: str) -> tuple[str, Handler] | None:
        """The handler of `intent`: the one bot.toml names, else the one registered under the intent."""
        if intent.startswith(_ACTION):  # a click (ActionStage)
            handler = self.for_bot(bot).actions.get(intent.removeprefix(_ACTION))
            return (intent, handler) if handler is not None else None
        if intent.startswith("/"):  # a slash command (CommandStage)
            command = self.for_bot(bot).commands.get(intent[1:])
            return (intent, command) if command is not None else None
        handlers = self.for_bot(bot).handlers
        spec = bot.intents.items.get(intent)
        name = spec.handler if spec is not None and spec.handler else intent
        handler = handlers.get(name)
        return (name, handler) if handler is not None else None
