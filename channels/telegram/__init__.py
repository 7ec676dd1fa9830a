"""Telegram: the Bot API by webhook (or long polling) in, `sendMessage` out.

Modules: channel (the adapter), inbound (which updates are answered), outbound (sending), files
(attachments by file id), drafts (streaming by draft), blocks (users who blocked the bot), polling
(getUpdates), cli (`relaybot telegram set-webhook`).

The adapter class is re-exported here for the `relaybot.channels` entry point, on first use, so
that importing a light module of the package (say its CLI commands) does not import the platform's SDK.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from channels.telegram.channel import TelegramChannel

__all__ = ["TelegramChannel"]


def __getattr__(name: str) -> object:
    if name == "TelegramChannel":
        from channels.telegram.channel import TelegramChannel

        return TelegramChannel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
