"""The terminal chat (`relaybot chat`): the same pipeline, in a terminal.

Modules: channel (the adapter).

The adapter class is re-exported here for the `relaybot.channels` entry point, on first use, so
that importing a light module of the package (say its CLI commands) does not import the platform's SDK.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from channels.cli.channel import TerminalChannel

__all__ = ["TerminalChannel"]


def __getattr__(name: str) -> object:
    if name == "TerminalChannel":
        from channels.cli.channel import TerminalChannel

        return TerminalChannel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
