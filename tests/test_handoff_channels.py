"""A person's replies go out through the conversation's own channel, with its formatting and its
outbox guarantees: Slack, Telegram, SMS (Twilio) and the web widget, each against its fake."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from core.handoff.desk import ConversationView, HandoffState
from core.runtime import Runtime
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.scripted import Answer
from tests.fakes.slack_api import FakeSlack, user
from tests.fakes.telegram_api import FakeTelegram
from tests.fakes.twilio_api import FakeTwilio
from tests.support.harness import make_settings, running_app
from tests.support.slack_requests import EVENTS, callback, dm, signed, slack_settings
from tests.support.telegram_updates import CHAT, SECRET, message_update, telegram_settings
from tests.support.twilio_webhooks import OUR_NUMBER, PUBLIC, SDK_WARNINGS, USER, settings_for, sms
from tests.support.web_frames import frames_until_reply

OPERATOR = "ana@example.com"
PERSON_SAYS = "Hi, I'm **Ana** from support: your refund is on its way."
SUPPORT_ACK = "Thanks, I've passed this to our support team: a person will follow up here shortly."


async def until(check: Callable[[], Awaitable[bool]], within: float = 15.0) -> None:
    async with asyncio.timeout(within):
        for _ in range(int(within / 0.02) + 1):
            if await check():
                return
            await asyncio.sleep(0.02)
    raise TimeoutError(f"not true within {within} s")


async def waiting_conversation(runtime: Runtime) -> ConversationView:
    found: list[ConversationView] = []

    async def queued() -> bool:
        found[:] = await runtime.handoff_desk.queue()
        return bool(found)

    await until(queued)
    (view,) = found
    assert view.state is HandoffState.PENDING_HUMAN
    return view


async def recorded(runtime: Runtime, session_id: str, text: str) -> None:
    """Wait until the user's message is in the history and its turn is done (nothing left on the bus)."""

    async def done() -> bool:
        history = await runtime.history.recent(session_id, 50)
        return any(m.role == "user" and m.content == text for m in history) and await runtime.bus.pending() == 0

    await until(done)


async def test_on_telegram(tmp_path: Path) -> None:
    async with FakeTelegram() as fake, running_app(telegram_settings(tmp_path, fake)) as (runtime, base):

        async def post(text: str, message_id: int) -> None:
            headers = {"Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": SECRET}
            body = json.dumps(message_update(text, message_id=message_id))
            async with (
                aiohttp.ClientSession() as http,
                http.post(f"{base}/telegram/webhook", data=body, headers=headers) as r,
            ):
                assert r.status == 200

        await post("I need to talk to a human about a refund", 1)
        view = await waiting_conversation(runtime)
        await fake.wait_for(lambda: len(fake.chat(CHAT)) >= 1)
        assert fake.shown(CHAT) == [SUPPORT_ACK]
        await runtime.handoff_desk.take(view.session_id, OPERATOR)
        await runtime.handoff_desk.reply(view.session_id, OPERATOR, PERSON_SAYS)
        await fake.wait_for(lambda: len(fake.chat(CHAT)) >= 2)
        # Telegram's formatting: the Markdown became HTML the user reads as bold.
        assert fake.chat(CHAT)[1].parse_mode == "HTML" and "<b>Ana</b>" in fake.chat(CHAT)[1].text
        assert fake.shown(CHAT)[1] == "Hi, I'm Ana from support: your refund is on its way."
        await post("thank you!", 2)
        await recorded(runtime, view.session_id, "thank you!")
        assert len(fake.chat(CHAT)) == 2  # the bot said nothing


async def test_on_slack(tmp_path: Path) -> None:
    async with (
        FakeSlack(users={"U1": user("Ada")}) as fake,
        running_app(slack_settings(tmp_path, fake)) as (
            runtime,
            base,
        ),
    ):

        async def post(text: str, ts: str, event_id: str) -> None:
            raw = json.dumps(callback(dm(text, ts=ts), event_id)).encode()
            async with aiohttp.ClientSession() as http, http.post(base + EVENTS, data=raw, headers=signed(raw)) as r:
                assert r.status == 200

        await post("can I speak to a person?", "1700000000.000100", "Ev1")
        view = await waiting_conversation(runtime)
        await fake.wait_for(lambda s: len(s.messages) >= 1)
        assert fake.messages[0].text == "A person will reply here shortly."
        await runtime.handoff_desk.take(view.session_id, OPERATOR)
        await runtime.handoff_desk.reply(view.session_id, OPERATOR, PERSON_SAYS)
        await fake.wait_for(lambda s: len(s.messages) >= 2)
        said = fake.messages[1]
        # Slack's mrkdwn, in the same conversation the user wrote in.
        assert said.text == "Hi, I'm *Ana* from support: your refund is on its way."
        assert said.channel == fake.messages[0].channel and said.thread_ts == fake.messages[0].thread_ts
        await post("great, thanks", "1700000000.000300", "Ev2")
        await recorded(runtime, view.session_id, "great, thanks")
        await asyncio.sleep(0.3)
        assert len(fake.messages) == 2


@pytest.mark.filterwarnings("ignore:BasicAuth is deprecated:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:The 'auth' parameter is deprecated:DeprecationWarning")
async def test_on_sms(tmp_path: Path) -> None:
    assert SDK_WARNINGS  # the same two SDK deprecations the Twilio tests ignore
    twilio = await FakeTwilio().start()
    try:
        async with FakeOpenAI() as openai:
            openai.always(None, Answer("the model should not be asked"))
            async with running_app(settings_for(tmp_path, twilio, openai)) as (runtime, base):

                async def text(body: str) -> None:
                    status, _ = await twilio.signed_post(f"{PUBLIC}/twilio/sms", sms(body), deliver_to=base)
                    assert status == 200

                await text("I want to talk to a real person")
                view = await waiting_conversation(runtime)
                (ack,) = await twilio.wait_for(1)
                assert ack.body == SUPPORT_ACK
                await runtime.handoff_desk.take(view.session_id, OPERATOR)
                await runtime.handoff_desk.reply(view.session_id, OPERATOR, PERSON_SAYS)
                _, said = await twilio.wait_for(2)
                # To the user, from the number they wrote to, as plain text (the Markdown stripped).
                assert (said.to, said.from_) == (USER, OUR_NUMBER)
                assert said.body == "Hi, I'm Ana from support: your refund is on its way."
                await text("ok thanks")
                await recorded(runtime, view.session_id, "ok thanks")
                assert len(twilio.sent) == 2
                assert not [
                    r for r in openai.requests if r.body.get("messages", [{}])[-1].get("content") == "ok thanks"
                ]
    finally:
        await twilio.close()


async def test_in_the_widget(tmp_path: Path) -> None:
    async with running_app(make_settings(tmp_path)) as (runtime, base), aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{base}/ws?bot=support") as ws:
            session: dict[str, Any] = await ws.receive_json()
            await ws.send_json({"type": "message", "id": "c1", "text": "please let me talk to an agent"})
            frames = await frames_until_reply(ws)
            assert frames[-1]["text"] == SUPPORT_ACK
            view = await waiting_conversation(runtime)
            assert view.session_id == f"support:web:{session['session_id']}"
            await runtime.handoff_desk.take(view.session_id, OPERATOR)
            await runtime.handoff_desk.reply(view.session_id, OPERATOR, PERSON_SAYS)
            frame = await ws.receive_json(timeout=5)
            assert frame["type"] == "reply" and frame["text"] == PERSON_SAYS  # the widget renders the Markdown
            assert frame["seq"] > frames[-1]["seq"]
            await ws.send_json({"type": "message", "id": "c2", "text": "thanks Ana"})
            assert (await ws.receive_json(timeout=5)) == {"type": "ack", "id": "c2"}
            await recorded(runtime, view.session_id, "thanks Ana")
            with pytest.raises(TimeoutError):
                await ws.receive_json(timeout=0.3)  # the bot said nothing
            await runtime.handoff_desk.hand_back(view.session_id, OPERATOR)
            await ws.send_json({"type": "message", "id": "c3", "text": "How do I export my tasks?"})
            answered = await frames_until_reply(ws)
            assert "export" in answered[-1]["text"].lower() and answered[-1]["text"] != SUPPORT_ACK
        # A widget that reconnects later finds the person's reply in what it resumes.
        async with http.ws_connect(f"{base}/ws?token={session['token']}&after={frames[-1]['seq']}") as again:
            resumed = []
            while len(resumed) < 2:
                frame = await again.receive_json(timeout=5)
                if frame["type"] == "reply":
                    resumed.append(frame["text"])
            assert resumed[0] == PERSON_SAYS
