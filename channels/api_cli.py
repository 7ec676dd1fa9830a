"""`relaybot api signing-key`: the key the API channel signs callbacks with, for your receivers.

Unless RELAYBOT_API__SIGNING_SECRET is set, callbacks are signed with a key derived from the server
secret for this one use (`core.secrets.derive_key`): receivers can verify callbacks with it, and it
signs nothing else (widget session tokens have a key of their own).
"""

from __future__ import annotations

import argparse
from typing import Any

from channels.api import callback_signing_key
from core.secrets import server_secret
from core.settings import Settings


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    api = commands.add_parser("api", help="HTTP API channel set-up: the callback signing key")
    actions = api.add_subparsers(dest="api_action", required=True, metavar="ACTION")
    key = actions.add_parser("signing-key", help="print the key callbacks are signed with (give it to your receivers)")
    key.set_defaults(handler=print_signing_key)


async def print_signing_key(settings: Settings, args: Any) -> int:
    if settings.api.signing_secret is not None:
        print("callbacks are signed with RELAYBOT_API__SIGNING_SECRET (the value you set)")
        return 0
    configured = settings.secret_key.get_secret_value().encode() if settings.secret_key else None
    print(callback_signing_key(settings, await server_secret(configured, settings.data_dir)).decode())
    return 0
