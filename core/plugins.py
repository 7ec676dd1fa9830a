"""Channel adapters are found by name through entry points (group `relaybot.channels`)."""

from __future__ import annotations

import argparse
from importlib.metadata import entry_points
from typing import Any

from core.channel import Capabilities
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
    return matches[0].load()


def installed_capabilities() -> dict[str, Capabilities]:
    """What every installed adapter can do, by envelope channel name (e.g. "sms" and "whatsapp").

    A worker process hosts no adapters but must know, say, which channels stream.
    """
    capabilities: dict[str, Capabilities] = {}
    for ep in entry_points(group=GROUP):
        try:
            adapter = ep.load()
        except ImportError:
            continue  # an adapter whose optional dependency is missing is simply not available
        for name in getattr(adapter, "channel_names", ()):
            capabilities[name] = adapter.capabilities
    return capabilities


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
