"""Requests as Slack sends them to `/slack/events`, and settings aimed at the fake Slack Web API.

Signed with slack_sdk's own SignatureVerifier; shared by the Slack channel tests and the route fuzzing.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from slack_sdk.signature import SignatureVerifier

from core.settings import Settings
from tests.fakes.slack_api import BOT_USER_ID, TOKEN, FakeSlack
from tests.support.harness import make_settings
from tests.support.llm import FAST

SECRET = "slack-signing-secret-for-tests"
EVENTS = "/slack/events"


def signed(body: bytes, *, secret: str = SECRET, timestamp: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    signature = SignatureVerifier(secret).generate_signature(timestamp=ts, body=body)
    assert signature is not None
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature, "Content-Type": "application/json"}


def callback(event: dict[str, Any], event_id: str = "Ev1") -> dict[str, Any]:
    return {
        "token": "legacy",
        "team_id": "T1",
        "api_app_id": "A1",
        "event": event,
        "type": "event_callback",
        "event_id": event_id,
        "event_time": int(time.time()),
        "authorizations": [{"team_id": "T1", "user_id": BOT_USER_ID, "is_bot": True}],
    }


def dm(text: str, ts: str = "1700000000.000100", **extra: Any) -> dict[str, Any]:
    return {"type": "message", "channel": "D1", "channel_type": "im", "user": "U1", "text": text, "ts": ts, **extra}


def mention(text: str, ts: str = "1700000000.000200", kind: str = "app_mention", **extra: Any) -> dict[str, Any]:
    event = {"type": kind, "channel": "C1", "user": "U1", "text": f"<@{BOT_USER_ID}> {text}", "ts": ts, **extra}
    if kind == "message":
        event["channel_type"] = "channel"
    return event


def plain_bot(bots_dir: Path, **models: Any) -> Path:
    """A bot with no intents or handlers, so every answer comes from the model step (offline: an echo)."""
    values = {**FAST, "chain": ["openai:gpt-4o"], **models}
    lines = [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    (bots_dir / "support").mkdir(parents=True, exist_ok=True)
    (bots_dir / "support" / "bot.toml").write_text(
        'name = "support"\ndisplay_name = "Slack test bot"\nsystem_prompt = "You are a helpful assistant."\n\n'
        "[models]\n" + "\n".join(lines) + "\n"
    )
    return bots_dir


def slack_settings(tmp_path: Path, fake: FakeSlack, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "slack_bot_token": TOKEN,
        "slack_signing_secret": SECRET,
        "slack_api_url": fake.api_url,
        # The first words go up at once, so these tests see the streamed message (the default waits 0.5 s).
        "slack": {"stream_interval_seconds": 0.2, "stream_open_after_seconds": 0.0},
        "bots_dir": plain_bot(tmp_path / "bots"),
    }
    return make_settings(tmp_path, **(values | overrides))


INTERACTIONS = "/slack/interactions"


def block_click(
    message: dict[str, Any], value: str, *, user: str = "U1", action_ts: str = "1800000001.000001"
) -> bytes:
    """A `block_actions` interaction as Slack posts it: form-encoded, the JSON in `payload`."""
    payload = {
        "type": "block_actions",
        "team": {"id": "T1", "domain": "t"},
        "user": {"id": user, "username": "ada", "team_id": "T1"},
        "api_app_id": "A1",
        "token": "legacy",
        "container": {"type": "message", "message_ts": message["ts"], "channel_id": message["channel"]},
        "trigger_id": "1.2.3",
        "channel": {"id": message["channel"], "name": "directmessage"},
        "message": {k: v for k, v in message.items() if k != "channel"},
        "actions": [
            {
                "type": "button",
                "action_id": "relaybot:0",
                "block_id": "relaybot-actions",
                "text": {"type": "plain_text", "text": "…"},
                "value": value,
                "action_ts": action_ts,
            }
        ],
    }
    return urlencode({"payload": json.dumps(payload)}).encode()
