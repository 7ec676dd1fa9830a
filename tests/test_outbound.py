"""POST /api/outbound: a proactive message to a user who wrote before, on their channel; WhatsApp's
24-hour window sends the bot's template, or refuses explicitly."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from core.outbound import OutboundSender
from core.plugins import installed_reply_windows
from core.runtime import Runtime
from core.settings import Settings
from tests.fakes.callback_server import CallbackServer
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.scripted import Answer
from tests.fakes.twilio_api import FakeTwilio
from tests.support.api_requests import KEY, message
from tests.support.harness import make_settings, running_app
from tests.support.twilio_webhooks import PUBLIC, SDK_WARNINGS, TEMPLATE, USER, WA_NUMBER, WA_USER, settings_for, sms

SECRET = "api-callback-secret"
pytestmark = SDK_WARNINGS


class _Later:
    """The real time, `by` ahead (a `core.clock.Clock`)."""

    def __init__(self, by: timedelta) -> None:
        self._by = by

    def now(self) -> datetime:
        return datetime.now(UTC) + self._by


async def post(base: str, path: str, body: Any, *, key: str | None = KEY) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    async with aiohttp.ClientSession() as http, http.post(f"{base}{path}", data=json.dumps(body), headers=headers) as r:
        return r.status, await r.json()


@pytest.fixture
async def callbacks() -> AsyncIterator[CallbackServer]:
    server = CallbackServer(secret=SECRET.encode())
    await server.start()
    yield server
    await server.stop()


def api_settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, api={"keys": [KEY], "signing_secret": SECRET, "allow_private_callbacks": True})


async def test_a_back_end_writes_first_to_a_user_of_the_api_channel(tmp_path: Path, callbacks: CallbackServer) -> None:
    async with running_app(api_settings(tmp_path)) as (runtime, base):
        assert (await post(base, "/api/messages", message(callbacks.url)))[0] == 202
        await callbacks.wait_for(1)
        status, body = await post(
            base, "/api/outbound", {"channel": "api", "conversation_id": "c1", "text": "Your export is **ready**."}
        )
        assert status == 202 and body["status"] == "queued" and body["template"] is None
        _, sent = await callbacks.wait_for(2)
        assert sent["text"] == "Your export is **ready**." and sent["session_id"] == body["session_id"]
        assert callbacks.bad_signatures == 0
        history = await runtime.history.recent(body["session_id"], 10)
        assert (history[-1].role, history[-1].content, history[-1].meta["kind"]) == (
            "assistant",
            "Your export is **ready**.",
            "outbound",
        )


async def test_refusals_are_explicit(tmp_path: Path, callbacks: CallbackServer) -> None:
    async with running_app(api_settings(tmp_path)) as (_, base):
        outbound = {"channel": "api", "conversation_id": "never-wrote", "text": "hello"}
        assert (await post(base, "/api/outbound", outbound, key="wrong"))[0] == 401
        status, body = await post(base, "/api/outbound", outbound)
        assert (status, body["error"]) == (404, "unknown_conversation")
        assert "writes only to users who wrote to it first" in body["message"]
        status, body = await post(base, "/api/outbound", {**outbound, "bot": "nobody"})
        assert (status, body["error"]) == (404, "unknown_bot")
        status, body = await post(base, "/api/outbound", {"channel": "api", "conversation_id": "c1", "text": "  "})
        assert (status, body["error"]) == (400, "invalid_request")


async def whatsapp_app(
    tmp_path: Path, twilio: FakeTwilio, openai: FakeOpenAI, *, later: timedelta, **twilio_options: Any
) -> AbstractAsyncContextManager[tuple[Runtime, str]]:
    settings = settings_for(tmp_path, twilio, openai, api={"keys": [KEY]}, twilio=twilio_options)
    runtime = await Runtime.from_settings(settings)
    # The clock of proactive sends, `later` past the user's message (the rest of the process runs on real time).
    runtime.outbound = OutboundSender(
        sessions=runtime.sessions,
        history=runtime.history,
        outbox=runtime.outbox,
        bots=runtime.bots,
        settings=settings,
        windows=installed_reply_windows(),
        clock=_Later(later),
    )
    return running_app(settings, runtime)


@pytest.mark.parametrize(
    ("later", "templates", "expected"),
    [
        pytest.param(timedelta(hours=23), {"support": TEMPLATE}, (202, None), id="inside-the-window"),
        pytest.param(timedelta(hours=25), {"support": TEMPLATE}, (202, TEMPLATE), id="outside-with-a-template"),
        pytest.param(timedelta(hours=25), {}, (409, "outside_window"), id="outside-without-a-template"),
    ],
)
async def test_whatsapp_24_hour_window(
    tmp_path: Path, later: timedelta, templates: dict[str, str], expected: tuple[int, str | None]
) -> None:
    twilio = await FakeTwilio().start()
    try:
        async with FakeOpenAI() as openai:
            openai.always(None, Answer("Hello!"))
            app = await whatsapp_app(tmp_path, twilio, openai, later=later, whatsapp_templates=templates)
            async with app as (_, base):
                params = sms("hi", From=WA_USER, To=WA_NUMBER, WaId=USER.removeprefix("+"))
                status, _ = await twilio.signed_post(f"{PUBLIC}/twilio/whatsapp", params, deliver_to=base)
                assert status == 200
                await twilio.wait_for(1)
                outbound = {"channel": "whatsapp", "conversation_id": USER, "text": "Your order shipped."}
                status, body = await post(base, "/api/outbound", outbound)
                assert status == expected[0]
                if status == 202:
                    assert body["template"] == expected[1]
                    _, sent = await twilio.wait_for(2)
                    assert (sent.to, sent.from_) == (WA_USER, WA_NUMBER)
                else:
                    assert body["error"] == "outside_window"
                    assert "outside whatsapp's 24-hour window" in body["message"]
                    assert "RELAYBOT_TWILIO__WHATSAPP_TEMPLATES" in body["message"]
                    assert len(twilio.sent) == 1  # nothing sent, and the caller was told why
    finally:
        await twilio.close()
