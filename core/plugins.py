"""Channel adapters are found by name through entry points (group `relaybot.channels`)."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from core.errors import ConfigError

GROUP = "relaybot.channels"


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
