"""The HTTP API: `POST /api/messages` in, signed callbacks out.

Modules: channel (the adapter), targets (which callback addresses are refused), cli (`relaybot api ...`).

The adapter class is re-exported here for the `relaybot.channels` entry point, on first use, so
that importing a light module of the package (say its CLI commands) does not import the platform's SDK.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from channels.api.channel import ApiChannel

__all__ = ["ApiChannel"]


def __getattr__(name: str) -> object:
    if name == "ApiChannel":
        from channels.api.channel import ApiChannel

        return ApiChannel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
