"""Channel adapters are found by name through entry points (group `relaybot.channels`).

Loading an adapter registers its envelope channel names (`core.envelope.register_channel_names`):
nothing in core lists the channels, so an installed package adds one by declaring its entry point.
"""

from __future__ import annotations

import argparse
from importlib.metadata import entry_points
from typing import Any

from core.channel import Capabilities, ReplyWindow
from core.envelope import register_channel_names
from core.errors import ConfigError

GROUP = "relaybot.channels"
COMMANDS_GROUP = "relaybot.commands"


def channel_names() -> list[str]:
    return sorted(ep.name for ep in entry_points(group=GROUP))


def load_channel_factory(name: str) -> Any:
    """The adapter class registered under `name`; a third-party package can add its own."""
    matches = [ep for ep in entry_points(group=GROUP) if ep.name == name]
    if not matches:
        raise ConfigError(
            f"no channel adapter named {name!r} (known: {', '.join(channel_names()) or 'none'}); "
            "is relaybot installed (pip install -e .)?"
        )
    factory = matches[0].load()
    register_channel_names(getattr(factory, "channel_names", ()))
    return factory


def installed_capabilities() -> dict[str, Capabilities]:
    """What every installed adapter can do, by envelope channel name (e.g. "sms" and "whatsapp").

    A worker process hosts no adapters but must know, say, which channels stream.
    """
    return {
        name: adapter.capabilities
        for adapter in _installed_adapters()
        for name in getattr(adapter, "channel_names", ())
    }


def installed_reply_windows() -> dict[str, ReplyWindow]:
    """The reply windows installed adapters declare (`reply_windows`), by envelope channel name."""
    return {
        name: window
        for adapter in _installed_adapters()
        for name, window in getattr(adapter, "reply_windows", {}).items()
    }


def installed_channel_names() -> list[str]:
    """The envelope channel names of every installed adapter (registered as they load)."""
    return [name for adapter in _installed_adapters() for name in getattr(adapter, "channel_names", ())]


def _installed_adapters() -> list[Any]:
    adapters = []
    for ep in entry_points(group=GROUP):
        try:
            adapter = ep.load()
        except ImportError:
            continue  # an adapter whose optional dependency is missing is simply not available
        register_channel_names(getattr(adapter, "channel_names", ()))
        adapters.append(adapter)
    return adapters


def add_channel_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Let each installed channel add its own `relaybot` subcommand.

    An entry point in `relaybot.commands` names a function `(commands) -> None` that adds a
    subparser and sets `handler`: an async `(settings, args) -> int` run with the process settings.
    """
    for ep in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        try:
            add = ep.load()
        except ImportError:
            continue
        add(commands)
