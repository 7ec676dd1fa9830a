"""`relaybot telegram set-webhook URL`: point Telegram at this deployment's webhook.

The secret token registered with the webhook is `channels.telegram.webhook.webhook_secret`: the
TELEGRAM_WEBHOOK_SECRET you set, or one derived from the bot token, which every webhook process
derives the same way. Nothing new needs to be stored or distributed.
"""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import urlsplit

from telegram.error import TelegramError

from channels.telegram.application import build_application
from channels.telegram.inbound import ALLOWED_UPDATES
from channels.telegram.webhook import WEBHOOK_PATH, webhook_secret
from core.errors import ConfigError
from core.settings import Settings


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    telegram = commands.add_parser("telegram", help="Telegram set-up: register the webhook")
    actions = telegram.add_subparsers(dest="telegram_action", required=True, metavar="ACTION")
    hook = actions.add_parser(
        "set-webhook",
        help=f"register https://YOUR.HOST{WEBHOOK_PATH} with Telegram, with the secret token the webhook checks",
    )
    hook.add_argument("url", metavar="URL", help=f"the public https URL (a bare origin gets {WEBHOOK_PATH} appended)")
    hook.add_argument(
        "--drop-pending", action="store_true", help="discard updates Telegram queued while no webhook was set"
    )
    hook.set_defaults(handler=set_webhook)


def webhook_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ConfigError(f"the webhook URL must be an absolute https:// URL (Telegram requires TLS), not {url!r}")
    return url if parts.path not in ("", "/") else url.rstrip("/") + WEBHOOK_PATH


async def set_webhook(settings: Settings, args: Any) -> int:
    try:
        url = webhook_url(args.url)
        application = build_application(settings)
    except ConfigError as exc:
        print(f"error: {exc}")
        return 2
    secret = webhook_secret(settings)
    assert secret is not None  # a token is configured, so a secret can be derived
    try:
        await application.initialize()
        try:
            await application.bot.set_webhook(
                url,
                secret_token=secret,
                allowed_updates=list(ALLOWED_UPDATES),
                drop_pending_updates=bool(args.drop_pending),
            )
            username = application.bot.username
        finally:
            await application.shutdown()
    except TelegramError as exc:
        print(f"error: could not set the webhook: {exc}")
        return 1
    source = "TELEGRAM_WEBHOOK_SECRET" if settings.telegram_webhook_secret else "derived from TELEGRAM_BOT_TOKEN"
    print(f"webhook set for @{username}: {url}")
    print(f"secret token: {source}; every `relaybot serve telegram` process with the same settings checks it")
    return 0
