"""`relaybot slack manifest`: print a Slack app manifest to paste at https://api.slack.com/apps ("From a manifest")."""

from __future__ import annotations

import argparse
import json
from typing import Any

from core.settings import Settings

BOT_SCOPES = (
    "app_mentions:read",  # mentions in channels
    "chat:write",  # replies (chat.postMessage, chat.update)
    "im:history",  # direct messages
    "im:read",
    "channels:history",  # thread replies in public channels
    "groups:history",  # and in private channels the app is invited to
    "users:read",  # display names (users.info)
    "files:read",  # files users send, as attachments
)
BOT_EVENTS = ("app_mention", "message.im", "message.channels", "message.groups")


def manifest(*, name: str, request_url: str | None, socket_mode: bool) -> dict[str, Any]:
    """The manifest of a Slack app that relaybot serves (Events API over HTTP, or Socket Mode)."""
    events: dict[str, Any] = {"bot_events": list(BOT_EVENTS)}
    # Buttons: clicks come to /slack/interactions (over the socket in Socket Mode).
    interactivity: dict[str, Any] = {"is_enabled": True}
    if not socket_mode:
        events["request_url"] = request_url
        if request_url is not None:
            interactivity["request_url"] = request_url.removesuffix("/slack/events") + "/slack/interactions"
    return {
        "display_information": {"name": name, "description": "An assistant served by relaybot"},
        "features": {
            "app_home": {"messages_tab_enabled": True, "messages_tab_read_only_enabled": False},
            "bot_user": {"display_name": name, "always_online": True},
        },
        "oauth_config": {"scopes": {"bot": list(BOT_SCOPES)}},
        "settings": {
            "event_subscriptions": events,
            "interactivity": interactivity,
            "org_deploy_enabled": False,
            "socket_mode_enabled": socket_mode,
            "token_rotation_enabled": False,
        },
    }


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    slack = commands.add_parser("slack", help="Slack helpers (print the app manifest)")
    actions = slack.add_subparsers(dest="slack_action", required=True, metavar="ACTION")
    show = actions.add_parser("manifest", help="print a Slack app manifest (JSON) to paste when creating the app")
    show.add_argument(
        "--url", help="public base URL of `relaybot serve slack`, e.g. https://bot.example.com (adds /slack/events)"
    )
    show.add_argument("--name", help="the app's name in Slack (default: RELAYBOT_SLACK__APP_NAME)")
    show.add_argument("--socket-mode", action="store_true", help="an app for Socket Mode (--polling): no URL")
    show.set_defaults(handler=_manifest)


async def _manifest(settings: Settings, args: argparse.Namespace) -> int:
    socket_mode = bool(args.socket_mode or settings.polling)
    url = None
    if not socket_mode:
        base = (args.url or "https://YOUR-PUBLIC-HOST").rstrip("/")
        url = base if base.endswith("/slack/events") else base + "/slack/events"
    print(
        json.dumps(
            manifest(name=args.name or settings.slack.app_name, request_url=url, socket_mode=socket_mode), indent=2
        )
    )
    return 0
