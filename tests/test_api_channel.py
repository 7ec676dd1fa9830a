"""The HTTP API channel in one process: authentication, bad input, duplicates, signed callbacks."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from core.runtime import Runtime
from tests.fakes.callback_server import CallbackServer, Scripted
from tests.support.harness import make_settings, running_app

KEY = "api-test-key"
SECRET = "api-callback-secret"


@pytest.fixture
async def callbacks() -> AsyncIterator[CallbackServer]:
    server = CallbackServer(secret=SECRET.encode())
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[tuple[Runtime, str]]:
    settings = make_settings(
        tmp_path,
        api={"keys": [KEY], "signing_secret": SECRET, "max_text_chars": 100},
        max_body_bytes=4096,
    )
    async with running_app(settings) as started:
        yield started


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


async def post(base: str, body: Any, *, key: str | None = KEY, raw: bytes | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{base}/api/messages",
            data=raw if raw is not None else json.dumps(body),
            headers={**headers, "Content-Type": "application/json"},
        ) as response,
    ):
        return response.status, (await response.json() if response.content_type == "application/json" else None)


async def test_a_message_is_accepted_and_answered_by_a_signed_callback(
    app: tuple[Runtime, str], callbacks: CallbackServer
) -> None:
    runtime, base = app
    status, body = await post(base, message(callbacks.url))
    assert status == 202 and body["status"] == "accepted"
    (reply,) = await callbacks.wait_for(1)
    assert reply["in_reply_to"] == "m1" and "Can I pay yearly?" in reply["text"] and reply["seq"] == 2
    assert callbacks.bad_signatures == 0
    assert body["session_id"] == reply["session_id"]
    record = await runtime.records.get(reply["reply_id"])
    assert record is not None and record.status == "sent"


async def test_a_repeated_message_id_is_not_answered_twice(app: tuple[Runtime, str], callbacks: CallbackServer) -> None:
    _, base = app
    assert (await post(base, message(callbacks.url)))[0] == 202
    status, body = await post(base, message(callbacks.url))
    assert (status, body["status"]) == (200, "duplicate")
    await callbacks.wait_for(1)
    assert (await post(base, message(callbacks.url, message_id="m2")))[0] == 202
    replies = await callbacks.wait_for(2)
    assert [r["in_reply_to"] for r in replies] == ["m1", "m2"]


@pytest.mark.parametrize(("key", "status"), [(None, 401), ("wrong-key", 401)])
async def test_requests_without_a_valid_key_are_refused(
    app: tuple[Runtime, str], callbacks: CallbackServer, key: str | None, status: int
) -> None:
    _, base = app
    got, body = await post(base, message(callbacks.url), key=key)
    assert got == status and body["error"] == "unauthorized"
    assert await app[0].bus.pending() == 0


@pytest.mark.parametrize(
    ("overrides", "raw", "status", "code", "mentions"),
    [
        ({}, b"{not json", 400, "invalid_request", "body"),
        ({"text": "   "}, None, 400, "invalid_request", "text"),
        ({"callback_url": "ftp://x/y"}, None, 400, "invalid_request", "callback_url"),
        ({"message_id": ""}, None, 400, "invalid_request", "message_id"),
        ({"surprise": 1}, None, 400, "invalid_request", "surprise"),
        ({"tenant": ""}, None, 400, "invalid_request", "tenant"),
        ({"text": "x" * 101}, None, 400, "text_too_long", "100 characters"),
        ({"bot": "nope"}, None, 404, "unknown_bot", "nope"),
    ],
)
async def test_bad_input_gets_a_clear_error_and_nothing_is_queued(
    app: tuple[Runtime, str],
    callbacks: CallbackServer,
    overrides: dict[str, Any],
    raw: bytes | None,
    status: int,
    code: str,
    mentions: str,
) -> None:
    runtime, base = app
    got, body = await post(base, message(callbacks.url, **overrides), raw=raw)
    assert (got, body["error"]) == (status, code)
    assert mentions in body["message"]
    assert await runtime.bus.pending() == 0


async def test_an_oversized_body_is_refused_before_parsing(app: tuple[Runtime, str], callbacks: CallbackServer) -> None:
    runtime, base = app
    status, _ = await post(base, None, raw=b'{"text": "' + b"x" * 8000 + b'"}')
    assert status == 413
    assert await runtime.bus.pending() == 0


async def test_a_callback_answering_400_is_recorded_failed_and_not_retried(
    app: tuple[Runtime, str], callbacks: CallbackServer
) -> None:
    _, base = app
    callbacks.script = [Scripted(400)]
    await post(base, message(callbacks.url))
    assert (await post(base, message(callbacks.url, message_id="m2")))[0] == 202
    (reply,) = await callbacks.wait_for(1)
    assert reply["in_reply_to"] == "m2"
    assert callbacks.requests == 2
