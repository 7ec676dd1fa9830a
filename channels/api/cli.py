"""`relaybot api signing-key` (the key callbacks are signed with) and `relaybot api key-ids`.

Unless RELAYBOT_API__SIGNING_SECRET is set, callbacks are signed with a key derived from the server
secret for this one use (`core.secrets.derive_key`): receivers can verify callbacks with it, and it
signs nothing else (widget session tokens have a key of their own).
"""

from __future__ import annotations

import argparse
from typing import Any

from channels.api.channel import callback_signing_key, key_id
from core.secrets import server_secret
from core.settings import Settings


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    api = commands.add_parser("api", help="HTTP API channel set-up: the callback signing key")
    actions = api.add_subparsers(dest="api_action", required=True, metavar="ACTION")
    key = actions.add_parser("signing-key", help="print the key callbacks are signed with (give it to your receivers)")
    key.set_defaults(handler=print_signing_key)
    ids = actions.add_parser(
        "key-ids", help="print the id of each configured API key (user ids are api:KEY_ID:USER; tenants are by id)"
    )
    ids.set_defaults(handler=print_key_ids)


async def print_key_ids(settings: Settings, args: Any) -> int:
    if not settings.api.keys:
        print("no API keys are configured (RELAYBOT_API__KEYS)")
        return 1
    for n, key in enumerate(settings.api.keys, start=1):
        tenants = settings.api.tenants.get(key_id(key.get_secret_value().encode()), [])
        print(f"key {n}: id {key_id(key.get_secret_value().encode())}, tenants: {', '.join(tenants) or 'none'}")
    return 0


async def print_signing_key(settings: Settings, args: Any) -> int:
    if settings.api.signing_secret is not None:
        print("callbacks are signed with RELAYBOT_API__SIGNING_SECRET (the value you set)")
        return 0
    print(callback_signing_key(settings, await server_secret(settings)).decode())
    return 0
