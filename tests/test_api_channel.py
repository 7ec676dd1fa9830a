"""The HTTP API channel in one process: authentication, bad input, duplicates, signed callbacks."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from channels.api.channel import callback_signing_key
from channels.api.cli import print_signing_key
from core.runtime import Runtime
from core.secrets import WEB_SESSION_TOKENS, derive_key
from core.settings import Settings
from tests.fakes.callback_server import CallbackServer, Scripted
from tests.support.api_requests import KEY, message
from tests.support.harness import REPO, make_settings, running_app
from tests.support.raw_http import raw_post

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
        # The callback server of these tests is on 127.0.0.1, which callbacks refuse by default.
        api={"keys": [KEY], "signing_secret": SECRET, "max_text_chars": 100, "allow_private_callbacks": True},
        max_body_bytes=4096,
    )
    async with running_app(settings) as started:
        yield started


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


async def test_a_key_that_is_not_utf8_is_refused_not_a_crash(app: tuple[Runtime, str]) -> None:
    runtime, base = app
    body = json.dumps(message("http://127.0.0.1:9/hook")).encode()
    # Bytes no HTTP client library sends, but anyone on the network can (it was a 500).
    assert await raw_post(base, "/api/messages", [(b"Authorization", b"Bearer \xff\xfe" + KEY.encode())], body) == 401
    assert await runtime.bus.pending() == 0


@pytest.mark.parametrize(
    ("overrides", "raw", "status", "code", "mentions"),
    [
        ({}, b"{not json", 400, "invalid_request", "body"),
        ({"text": "   "}, None, 400, "invalid_request", "text"),
        ({"callback_url": "ftp://x/y"}, None, 400, "invalid_request", "callback_url"),
        ({"callback_url": "http://127.0.0.1:notaport/hook"}, None, 400, "invalid_request", "callback_url"),
        ({"callback_url": "http://127.0.0.1:99999/hook"}, None, 400, "invalid_request", "callback_url"),
        ({"callback_url": "http://[::1/hook"}, None, 400, "invalid_request", "callback_url"),
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


# --- where callbacks may go (server-side request forgery) ---------------------------------------------------


@pytest.fixture
async def strict_app(tmp_path: Path) -> AsyncIterator[tuple[Runtime, str]]:
    """The default: callbacks only to public addresses."""
    settings = make_settings(tmp_path, api={"keys": [KEY], "signing_secret": SECRET})
    async with running_app(settings) as started:
        yield started


@pytest.mark.parametrize(
    ("hook", "why"),
    [
        ("http://127.0.0.1:9/hook", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://10.1.2.3/hook", "private"),
        ("http://[::1]:9/hook", "loopback"),
        ("http://[::ffff:192.168.0.10]/hook", "private"),
        ("http://224.0.0.1/hook", "multicast"),
    ],
)
async def test_a_callback_to_a_non_public_address_is_refused_up_front(
    strict_app: tuple[Runtime, str], hook: str, why: str
) -> None:
    runtime, base = strict_app
    status, body = await post(base, message(hook))
    assert (status, body["error"]) == (400, "callback_not_allowed")
    assert why in body["message"] and "ALLOW_PRIVATE_CALLBACKS" in body["message"]
    assert await runtime.bus.pending() == 0


async def test_a_callback_name_that_resolves_to_loopback_is_refused_when_connecting(
    strict_app: tuple[Runtime, str], callbacks: CallbackServer
) -> None:
    _, base = strict_app
    hook = callbacks.url.replace("127.0.0.1", "localhost")  # a name: checked on what it resolves to
    with capture_logs() as logs:
        assert (await post(base, message(hook)))[0] == 202
        for _ in range(100):
            if any(e["event"] == "delivery_failed" for e in logs):
                break
            await asyncio.sleep(0.05)
    assert callbacks.requests == 0  # nothing reached the loopback server
    (failed,) = [e for e in logs if e["event"] == "delivery_failed"]
    assert "resolves only to a loopback address" in failed["error"] and failed["status"] == "failed"


async def test_a_callback_that_redirects_is_not_followed(app: tuple[Runtime, str], callbacks: CallbackServer) -> None:
    _, base = app
    # Followed, the redirect would deliver the signed reply a second time, to wherever it points.
    callbacks.script = [Scripted(302, location=callbacks.url)]
    with capture_logs() as logs:
        assert (await post(base, message(callbacks.url)))[0] == 202
        for _ in range(100):
            if any(e["event"] == "delivery_failed" for e in logs):
                break
            await asyncio.sleep(0.05)
    assert callbacks.requests == 1 and callbacks.replies == []
    (failed,) = [e for e in logs if e["event"] == "delivery_failed"]
    assert "302" in failed["error"]


def test_production_config_names_callback_hosts_instead_of_allowing_any(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAYBOT_CONFIG_DIR", str(REPO / "config"))
    monkeypatch.setenv("RELAYBOT_ENV", "production")
    settings = Settings()
    assert settings.api.allowed_callback_hosts and "*" not in settings.api.allowed_callback_hosts
    assert settings.api.allow_private_callbacks is False


async def test_a_token_in_the_callback_url_stays_out_of_the_logs(app: tuple[Runtime, str]) -> None:
    _, base = app
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    hook = f"http://127.0.0.1:{port}/hook?token=very-secret-token"
    with capture_logs() as logs:
        assert (await post(base, message(hook)))[0] == 202
        for _ in range(100):
            if any(e["event"] == "delivery_retry" for e in logs):
                break
            await asyncio.sleep(0.05)
    retry = next(e for e in logs if e["event"] == "delivery_retry")
    assert f"127.0.0.1:{port}/hook?…" in retry["error"]
    assert "very-secret-token" not in json.dumps(logs, default=str)


async def test_without_a_signing_secret_callbacks_are_signed_with_the_derived_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(tmp_path, api={"keys": [KEY], "allow_private_callbacks": True})
    # What `relaybot api signing-key` prints for the receivers: neither the server secret nor the widget's key.
    assert await print_signing_key(settings, None) == 0
    printed = capsys.readouterr().out.strip()
    runtime = await Runtime.from_settings(settings)
    assert printed.encode() == callback_signing_key(settings, runtime.secret)
    assert printed.encode() not in (runtime.secret, derive_key(runtime.secret, WEB_SESSION_TOKENS))
    receiver = CallbackServer(secret=printed.encode())
    hook = await receiver.start()
    try:
        async with running_app(settings, runtime) as (_, base):
            assert (await post(base, message(hook)))[0] == 202
            (reply,) = await receiver.wait_for(1)
        assert reply["in_reply_to"] == "m1" and receiver.bad_signatures == 0
    finally:
        await receiver.stop()


# --- buttons ---------------------------------------------------------------------------------------


async def test_buttons_arrive_in_the_callback_and_a_click_is_answered(
    app: tuple[Runtime, str], callbacks: CallbackServer
) -> None:
    runtime, base = app
    assert (await post(base, message(callbacks.url, text="/start")))[0] == 202
    (greeting,) = await callbacks.wait_for(1)
    assert greeting["actions"] == [
        {"id": "topic.billing", "label": "Billing"},
        {"id": "topic.problem", "label": "A problem"},
        {"id": "topic.cancel", "label": "Cancel"},
    ]
    assert greeting["card"] is None
    click = message(callbacks.url, message_id="m2", action={"id": "topic.cancel", "message_id": greeting["seq"]})
    del click["text"]
    status, body = await post(base, click)
    assert status == 202, body
    confirm = (await callbacks.wait_for(2))[-1]
    assert confirm["in_reply_to"] == "m2" and "do you want to cancel it?" in confirm["text"]
    assert [a["id"] for a in confirm["actions"]] == ["cancel.yes", "cancel.no"]
    history = await runtime.history.after(body["session_id"], 0, role="user")
    assert (history[-1].content, history[-1].meta.get("action")) == ("Cancel", "topic.cancel")


@pytest.mark.parametrize(
    ("action", "code", "mentions"),
    [
        ({"id": "cancel.yes"}, "unknown_action", "it offered: topic.billing, topic.problem, topic.cancel"),
        ({"id": "topic.billing", "message_id": 1}, "stale_action", "not the newest reply (seq 2)"),
        ({"id": ""}, "invalid_request", "action.id"),
        ({"id": "topic.billing", "colour": "red"}, "invalid_request", "action.colour"),
    ],
)
async def test_a_click_on_a_button_not_offered_is_refused_and_nothing_is_queued(
    app: tuple[Runtime, str], callbacks: CallbackServer, action: dict[str, Any], code: str, mentions: str
) -> None:
    runtime, base = app
    status, accepted = await post(base, message(callbacks.url, text="/start"))
    assert status == 202
    await callbacks.wait_for(1)
    click = message(callbacks.url, message_id="m2", action=action)
    del click["text"]
    status, body = await post(base, click)
    assert (status, body["error"]) == (400, code) and mentions in body["message"]
    both = message(callbacks.url, message_id="m3", action={"id": "topic.billing"})
    status, body = await post(base, both)  # text and action together
    assert (status, body["error"]) == (400, "invalid_request") and "either 'text' or 'action'" in body["message"]
    assert await runtime.bus.pending() == 0
    assert len(await runtime.history.after(accepted["session_id"], 0)) == 2  # /start and its reply only
