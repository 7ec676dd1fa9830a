"""Slack: the Events API over HTTP (or Socket Mode) in, `chat.postMessage` out.

Modules: channel (the adapter), inbound (which events are answered), delivery (posting and editing),
users (display names), cli (`relaybot slack manifest`).

The adapter class is re-exported here for the `relaybot.channels` entry point, on first use, so
that importing a light module of the package (say its CLI commands) does not import the platform's SDK.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from channels.slack.channel import SlackChannel

__all__ = ["SlackChannel"]


def __getattr__(name: str) -> object:
    if name == "SlackChannel":
        from channels.slack.channel import SlackChannel

        return SlackChannel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
