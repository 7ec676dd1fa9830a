"""Requests to the HTTP API channel, shared by its tests and the route fuzzing."""

from __future__ import annotations

from typing import Any

KEY = "api-test-key"


def message(hook: str, **overrides: Any) -> dict[str, Any]:
    body = {
        "conversation_id": "c1",
        "user_id": "u1",
        "text": "Can I pay yearly?",
        "message_id": "m1",
        "callback_url": hook,
    }
    body.update(overrides)
    return body
