"""The web widget: a demo page, the widget script (static/) and its WebSocket.

Modules: channel (the adapter and its protocol), tokens (session tokens), limits (limits at the edge).

The adapter class is re-exported here for the `relaybot.channels` entry point, on first use, so
that importing a light module of the package (say its CLI commands) does not import the platform's SDK.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from channels.web.channel import WebChannel

__all__ = ["WebChannel"]


def __getattr__(name: str) -> object:
    if name == "WebChannel":
        from channels.web.channel import WebChannel

        return WebChannel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
