"""Updates as Telegram posts them to the webhook, and settings aimed at the fake Bot API.

Shared by the Telegram channel tests and the route fuzzing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.settings import Settings
from tests.fakes.telegram_api import FakeTelegram
from tests.support.harness import make_settings

SECRET = "test-webhook-secret_1"
CHAT = 4242
GROUP = -100777


def telegram_settings(tmp_path: Path, fake: FakeTelegram, **overrides: Any) -> Settings:
    # edit_open_after_seconds 0: the first words go up at once, so streaming tests see the edits.
    options = {
        "edit_interval_seconds": 0.05,
        "edit_open_after_seconds": 0.0,
        "request_timeout_seconds": 5.0,
        "poll_timeout_seconds": 1,
    }
    options.update(overrides.pop("telegram", {}))
    values: dict[str, Any] = {
        "telegram_bot_token": fake.token,
        "telegram_webhook_secret": SECRET,
        "telegram_api_url": fake.base_url,
        "telegram": options,
        "max_body_bytes": 64 * 1024,
    }
    values.update(overrides)
    return make_settings(tmp_path, **values)


_update_ids = iter(range(500_000, 10**9))


def message_update(
    text: str | None,
    *,
    message_id: int,
    chat_id: int = CHAT,
    update_id: int | None = None,
    **message: Any,
) -> dict[str, Any]:
    chat = {"id": chat_id, "type": "private", "first_name": "Ada"} if chat_id > 0 else {
        "id": chat_id, "type": "supergroup", "title": "Team"}  # fmt: skip
    body: dict[str, Any] = {
        "message_id": message_id,
        "date": 1_700_000_000,
        "chat": chat,
        "from": {"id": 99 if chat_id > 0 else 555, "is_bot": False, "first_name": "Ada", "username": "ada"},
    }
    if text is not None:
        body["text"] = text
    body.update(message)
    return {"update_id": update_id if update_id is not None else next(_update_ids), "message": body}


def click_update(data: str, *, message_id: int, chat_id: int = CHAT, query_id: str = "q1") -> dict[str, Any]:
    """A press on an inline keyboard button of the bot's message `message_id` (a callback query)."""
    chat = {"id": chat_id, "type": "private", "first_name": "Ada"}
    return {
        "update_id": next(_update_ids),
        "callback_query": {
            "id": query_id,
            "chat_instance": "ci-1",
            "from": {"id": 99, "is_bot": False, "first_name": "Ada", "username": "ada"},
            "data": data,
            "message": {
                "message_id": message_id,
                "date": 1_700_000_000,
                "chat": chat,
                "from": {"id": 1, "is_bot": True, "first_name": "Relay", "username": "relay_bot"},
                "text": "…",
            },
        },
    }
