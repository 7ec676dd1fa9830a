"""SMS and WhatsApp through Twilio: the real SDK against a fake REST API, webhooks signed with the
real `twilio.request_validator`, through the real app (bus, worker, pipeline, outbox)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from structlog.testing import capture_logs

from channels.twilio.channel import TwilioChannel
from channels.twilio.content import interactive_content
from channels.twilio.outbound import segments, sms_part_limit, sms_parts
from channels.twilio.state.memory import MemoryTwilioState
from channels.twilio.state.redis import RedisTwilioState
from core.actions import Button
from core.delivery.records import DeliveryRecord
from core.envelope import Reply
from core.errors import DeliveryError
from core.redisio import client_from_url
from core.runtime import Runtime
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.scripted import Answer
from tests.fakes.twilio_api import ACCOUNT_SID, AUTH_TOKEN, Created, Fail, FakeTwilio, Hang, Sent
from tests.support.harness import REPO, running_app, write_bot
from tests.support.processes import RelaybotProcess, relaybot_env
from tests.support.servers import free_port
from tests.support.twilio_webhooks import (
    OUR_NUMBER,
    PUBLIC,
    SDK_WARNINGS,
    TEMPLATE,
    USER,
    WA_NUMBER,
    WA_USER,
    settings_for,
    sms,
)

pytestmark = SDK_WARNINGS


@pytest.fixture
async def twilio() -> AsyncIterator[FakeTwilio]:
    fake = await FakeTwilio().start()
    yield fake
    await fake.close()


@pytest.fixture
async def openai() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        fake.always(None, Answer("**Yes**, yearly plans save 20%."))
        yield fake


@pytest.fixture
async def app(tmp_path: Path, twilio: FakeTwilio, openai: FakeOpenAI) -> AsyncIterator[tuple[Runtime, str]]:
    async with running_app(settings_for(tmp_path, twilio, openai)) as started:
        yield started


def adapter(runtime: Runtime) -> TwilioChannel:
    channel = runtime.channels["sms"]
    assert isinstance(channel, TwilioChannel) and runtime.channels["whatsapp"] is channel
    return channel


async def inbound(twilio: FakeTwilio, base: str, params: dict[str, str], route: str = "sms", **kw: Any) -> int:
    status, text = await twilio.signed_post(f"{PUBLIC}/twilio/{route}", params, deliver_to=base, **kw)
    if status == 200:
        assert text.strip().endswith("<Response/>")
    return status


async def settled(runtime: Runtime, reply_id: str) -> DeliveryRecord:
    """The reply's record once the outbox is done with it (the fake sees the send just before)."""
    async with asyncio.timeout(20):
        while True:
            record = await runtime.records.get(reply_id)
            if record is not None and record.status != "pending":
                return record
            await asyncio.sleep(0.02)


def reply_id_of(sent: Sent) -> str:
    assert sent.status_callback is not None
    return parse_qs(urlsplit(sent.status_callback).query)["reply"][0]


# --- the happy paths ---------------------------------------------------------------------------


async def test_an_sms_is_acknowledged_with_empty_twiml_and_answered_through_the_rest_api(
    app: tuple[Runtime, str], twilio: FakeTwilio
) -> None:
    runtime, base = app
    assert await inbound(twilio, base, sms()) == 200
    (sent,) = await twilio.wait_for(1)
    # Answered to the sender, from the number they wrote to, as plain text (Markdown stripped).
    assert (sent.to, sent.from_, sent.body) == (USER, OUR_NUMBER, "Yes, yearly plans save 20%.")
    assert sent.status_callback is not None and sent.status_callback.startswith(f"{PUBLIC}/twilio/status?reply=")
    assert twilio.refused_auth == 0
    record = await settled(runtime, reply_id_of(sent))
    assert record.status == "sent" and record.channel == "sms"
    assert record.session_id == f"support:sms:{USER}" and record.channel_message_ids == (sent.sid,)


async def test_a_whatsapp_message_keeps_its_channel_and_gets_whatsapp_formatting(
    app: tuple[Runtime, str], twilio: FakeTwilio
) -> None:
    runtime, base = app
    params = sms(
        "What does this invoice say?",
        From=WA_USER,
        To=WA_NUMBER,
        ProfileName="Ada",
        WaId=USER.removeprefix("+"),
        NumMedia="1",
        MediaUrl0="https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1",
        MediaContentType0="image/jpeg",
    )
    assert await inbound(twilio, base, params, route="whatsapp") == 200
    (sent,) = await twilio.wait_for(1)
    assert (sent.to, sent.from_, sent.body) == (WA_USER, WA_NUMBER, "*Yes*, yearly plans save 20%.")
    record = await settled(runtime, reply_id_of(sent))
    assert record.channel == "whatsapp" and record.status == "sent"
    # The prefix is the channel; the user is the phone number, the same person as on SMS.
    (user_message, _) = await runtime.history.recent(f"support:whatsapp:{USER}", 10)
    assert user_message.role == "user" and user_message.content == "What does this invoice say?"
    assert user_message.ref == params["MessageSid"]


async def test_a_repeated_message_sid_is_answered_once(app: tuple[Runtime, str], twilio: FakeTwilio) -> None:
    runtime, base = app
    first = sms(sid="SM" + "d" * 32)
    assert await inbound(twilio, base, first) == 200
    assert await inbound(twilio, base, first) == 200  # Twilio's retry: acknowledged, not processed
    assert await inbound(twilio, base, sms("And monthly?")) == 200
    replies = await twilio.wait_for(2)
    # Turns of one conversation run in order: the second reply answers the second distinct message.
    assert len({reply_id_of(s) for s in replies}) == 2
    history = await runtime.history.recent(f"support:sms:{USER}", 10)
    assert [m.content for m in history if m.role == "user"] == ["Can I pay yearly?", "And monthly?"]
    assert len(twilio.sent) == 2


async def test_a_long_reply_is_split_in_order_into_whole_segments(
    app: tuple[Runtime, str], twilio: FakeTwilio, openai: FakeOpenAI
) -> None:
    _, base = app
    sentences = [f"Step {i}: open Settings, choose Billing and check line {i} of the invoice." for i in range(1, 40)]
    long_reply = " ".join(sentences)
    assert 2500 <= len(long_reply) <= 3200
    openai.always(None, Answer(long_reply))
    await inbound(twilio, base, sms())
    first, second = await twilio.wait_for(2)
    assert first.body is not None and second.body is not None
    assert all(len(b) <= 1530 for b in (first.body, second.body))  # 10 full GSM-7 segments at most
    assert segments(first.body) <= 10
    # In order, nothing lost or repeated, cut between sentences.
    assert f"{first.body} {second.body}" == long_reply
    assert first.body.endswith(".") and second.body.startswith("Step ")


async def test_a_429_is_retried_by_the_outbox_and_the_reply_sent_once(
    app: tuple[Runtime, str], twilio: FakeTwilio
) -> None:
    runtime, base = app
    twilio.queue(Fail(429, 20429, "Too Many Requests"))
    await inbound(twilio, base, sms())
    (sent,) = await twilio.wait_for(1)
    assert twilio.requests == 2 and len(twilio.sent) == 1
    record = await settled(runtime, reply_id_of(sent))
    assert (record.status, record.attempts) == ("sent", 2)


async def test_a_retry_after_a_partial_send_does_not_resend_the_parts_already_sent(
    app: tuple[Runtime, str], twilio: FakeTwilio, openai: FakeOpenAI
) -> None:
    runtime, base = app
    long_reply = " ".join(f"Sentence number {i} of a long answer about invoices." for i in range(1, 80))
    openai.always(None, Answer(long_reply))
    twilio.queue(Created(), Fail(500, 20500, "Internal Server Error"))
    await inbound(twilio, base, sms())
    parts = await twilio.wait_for(3)
    assert " ".join(p.body or "" for p in parts) == long_reply
    assert twilio.requests == 4  # part 1, part 2 failed, part 2 again, part 3
    record = await settled(runtime, reply_id_of(parts[0]))
    assert record.status == "sent" and record.channel_message_ids == tuple(p.sid for p in parts)


async def test_a_send_that_times_out_is_recorded_unknown_and_never_repeated(
    tmp_path: Path, twilio: FakeTwilio, openai: FakeOpenAI
) -> None:
    settings = settings_for(tmp_path, twilio, openai, twilio={"send_timeout_seconds": 0.5})
    async with running_app(settings) as (runtime, base):
        twilio.queue(Hang(30))
        await inbound(twilio, base, sms())
        await inbound(twilio, base, sms("And monthly?"))
        (sent,) = await twilio.wait_for(1)  # the second message's reply comes after the first gave up
        assert twilio.requests == 2
        first_reply = [r for r in await runtime.history.recent(f"support:sms:{USER}", 10) if r.role == "assistant"]
        assert len(first_reply) == 2
        assert sent.body == "Yes, yearly plans save 20%."


# --- opt-outs ----------------------------------------------------------------------------------


async def test_stop_opts_the_number_out_until_start(app: tuple[Runtime, str], twilio: FakeTwilio) -> None:
    runtime, base = app
    channel = adapter(runtime)
    assert await inbound(twilio, base, sms("stop")) == 200
    assert await inbound(twilio, base, sms("Are you still there?")) == 200
    assert await runtime.bus.pending() == 0  # neither reached the bot
    # A reply already on its way when STOP arrived is not sent either.
    reply = Reply(
        envelope_id="e", session_id="s", bot="support", channel="sms", reply_to=f"{USER}|{OUR_NUMBER}", text="hi"
    )
    with pytest.raises(DeliveryError, match="texted STOP") as caught:
        await channel.deliver(reply)
    assert not caught.value.retryable
    assert await inbound(twilio, base, sms("START")) == 200
    assert await inbound(twilio, base, sms("Back again")) == 200
    (sent,) = await twilio.wait_for(1)
    assert sent.to == USER and twilio.requests == 1
    history = await runtime.history.recent(f"support:sms:{USER}", 10)
    assert [m.content for m in history if m.role == "user"] == ["Back again"]


async def test_twilio_refusing_an_unsubscribed_number_records_the_opt_out(
    app: tuple[Runtime, str], twilio: FakeTwilio
) -> None:
    runtime, _ = app
    channel = adapter(runtime)
    twilio.queue(Fail(400, 21610, "Attempt to send to unsubscribed recipient"))
    reply = Reply(
        envelope_id="e", session_id="s", bot="support", channel="sms", reply_to=f"{USER}|{OUR_NUMBER}", text="hi"
    )
    with pytest.raises(DeliveryError, match="21610") as caught:
        await channel.deliver(reply)
    assert not caught.value.retryable
    with pytest.raises(DeliveryError, match="texted STOP"):
        await channel.deliver(reply)
    assert twilio.requests == 1  # the second attempt never reached Twilio


async def test_opt_outs_are_shared_through_redis_between_processes(
    tmp_path: Path, twilio: FakeTwilio, openai: FakeOpenAI, redis_url: str
) -> None:
    receiving = settings_for(tmp_path / "a", twilio, openai, redis_url=redis_url)
    async with running_app(receiving) as (_, base):
        assert await inbound(twilio, base, sms("STOP")) == 200
    # Another process (a fresh runtime and adapter) that only delivers knows about it.
    sending = settings_for(tmp_path / "b", twilio, openai, redis_url=redis_url)
    async with running_app(sending) as (runtime, _):
        reply = Reply(
            envelope_id="e", session_id="s", bot="support", channel="sms", reply_to=f"{USER}|{OUR_NUMBER}", text="hi"
        )
        with pytest.raises(DeliveryError, match="texted STOP"):
            await adapter(runtime).deliver(reply)
    assert twilio.requests == 0


# --- the WhatsApp window -----------------------------------------------------------------------


async def _whatsapp_runtime(
    tmp_path: Path, twilio: FakeTwilio, openai: FakeOpenAI, state: MemoryTwilioState, **options: Any
) -> Runtime:
    runtime = await Runtime.from_settings(settings_for(tmp_path, twilio, openai, twilio=options))
    runtime.add_channel(TwilioChannel(runtime.channel_context(), state=state))
    return runtime


def wa_reply(text: str = "Here is your answer.") -> Reply:
    return Reply(
        envelope_id="e", session_id="s", bot="support", channel="whatsapp", reply_to=f"{WA_USER}|{WA_NUMBER}", text=text
    )


async def test_outside_the_24_hour_window_the_template_is_sent(
    tmp_path: Path, twilio: FakeTwilio, openai: FakeOpenAI
) -> None:
    state = MemoryTwilioState()
    await state.wrote_at(WA_USER, time.time() - 25 * 3600)
    runtime = await _whatsapp_runtime(tmp_path, twilio, openai, state)
    async with running_app(runtime.settings, runtime):
        result = await adapter(runtime).deliver(wa_reply())
    (sent,) = twilio.sent
    assert (sent.content_sid, sent.body, sent.to) == (TEMPLATE, None, WA_USER)
    assert result.delivered and "template" in result.detail


async def test_outside_the_window_without_a_template_the_reply_is_recorded_not_sent(
    tmp_path: Path, twilio: FakeTwilio, openai: FakeOpenAI
) -> None:
    state = MemoryTwilioState()
    await state.wrote_at(WA_USER, time.time() - 25 * 3600)
    runtime = await _whatsapp_runtime(tmp_path, twilio, openai, state, whatsapp_templates={})
    async with running_app(runtime.settings, runtime):
        with pytest.raises(DeliveryError, match="24 hours") as caught:
            await adapter(runtime).deliver(wa_reply())
    assert not caught.value.retryable and twilio.requests == 0


async def test_twilio_reporting_63016_falls_back_to_the_template(app: tuple[Runtime, str], twilio: FakeTwilio) -> None:
    runtime, _ = app
    twilio.queue(Fail(400, 63016, "Failed to send freeform message because you are outside the allowed window"))
    result = await adapter(runtime).deliver(wa_reply())
    assert result.delivered and [s.content_sid for s in twilio.sent] == [TEMPLATE]


# --- status callbacks --------------------------------------------------------------------------


async def test_status_callbacks_update_the_replys_status(app: tuple[Runtime, str], twilio: FakeTwilio) -> None:
    runtime, base = app
    await inbound(twilio, base, sms())
    (sent,) = await twilio.wait_for(1)
    reply_id = reply_id_of(sent)
    await settled(runtime, reply_id)
    assert await twilio.status_callback(sent, "delivered", deliver_to=base) == 204
    assert await adapter(runtime).delivery_statuses(reply_id) == {sent.sid: "delivered"}
    record = await runtime.records.get(reply_id)
    assert record is not None and record.status == "sent"
    assert await twilio.status_callback(sent, "undelivered", deliver_to=base, error_code="30003") == 204
    assert await adapter(runtime).delivery_statuses(reply_id) == {sent.sid: "undelivered (30003)"}
    record = await runtime.records.get(reply_id)
    assert record is not None and record.status == "failed" and "30003" in (record.error or "")


async def test_a_forged_status_callback_is_refused(app: tuple[Runtime, str], twilio: FakeTwilio) -> None:
    runtime, base = app
    await inbound(twilio, base, sms())
    (sent,) = await twilio.wait_for(1)
    await settled(runtime, reply_id_of(sent))
    params = {"MessageSid": sent.sid, "MessageStatus": "failed", "AccountSid": ACCOUNT_SID}
    assert sent.status_callback is not None
    status, _ = await twilio.signed_post(sent.status_callback, params, deliver_to=base, token="not-the-token")
    assert status == 403
    record = await runtime.records.get(reply_id_of(sent))
    assert record is not None and record.status == "sent"
    assert await adapter(runtime).delivery_statuses(reply_id_of(sent)) == {}


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "how",
    ["missing", "wrong-token", "other-url", "tampered-body"],
)
async def test_a_bad_or_missing_signature_is_refused_and_nothing_processed(
    app: tuple[Runtime, str], twilio: FakeTwilio, how: str
) -> None:
    runtime, base = app
    params = sms()
    kw: dict[str, Any] = {}
    if how == "missing":
        kw["signature"] = ""
    elif how == "wrong-token":
        kw["token"] = "some-other-token"
    elif how == "other-url":
        from twilio.request_validator import RequestValidator

        kw["signature"] = RequestValidator(AUTH_TOKEN).compute_signature(f"{PUBLIC}/twilio/whatsapp", params)
    else:
        from twilio.request_validator import RequestValidator

        kw["signature"] = RequestValidator(AUTH_TOKEN).compute_signature(f"{PUBLIC}/twilio/sms", params)
        params = {**params, "Body": "Transfer all my money"}
    assert await inbound(twilio, base, params, **kw) == 403
    assert await runtime.bus.pending() == 0
    assert await runtime.history.recent(f"support:sms:{USER}", 10) == []


@pytest.mark.parametrize(
    "params",
    [
        {k: v for k, v in sms().items() if k != "From"},
        {k: v for k, v in sms().items() if k != "Body"},
        sms(NumMedia="lots"),
        sms(NumMedia="1"),  # no MediaUrl0
        sms(Body="x" * 5000),
    ],
    ids=["no-from", "no-body", "bad-num-media", "media-without-url", "body-too-long"],
)
async def test_signed_but_malformed_messages_get_a_400_and_nothing_is_processed(
    app: tuple[Runtime, str], twilio: FakeTwilio, params: dict[str, str]
) -> None:
    runtime, base = app
    assert await inbound(twilio, base, params) == 400
    assert await runtime.bus.pending() == 0


async def test_garbage_and_oversized_bodies_are_refused_without_a_crash(app: tuple[Runtime, str]) -> None:
    import aiohttp

    runtime, base = app
    headers = {"X-Twilio-Signature": "c2lnbmF0dXJl", "Content-Type": "application/x-www-form-urlencoded"}
    async with aiohttp.ClientSession() as http:
        for body, expected in ((b"\xff\xfe\x00garbage=%%%", 400), (b"a=b&&&=c", 400), (b"Body=" + b"x" * 20_000, 413)):
            async with http.post(f"{base}/twilio/sms", data=body, headers=headers) as response:
                assert response.status == expected
    assert await runtime.bus.pending() == 0


# --- formatting for SMS segments ---------------------------------------------------------------


def test_segments_follow_the_sms_encodings() -> None:
    assert [segments("a" * 160), segments("a" * 161), segments("a" * 306), segments("a" * 307)] == [1, 2, 2, 3]
    assert [segments("é" * 160), segments("ж" * 70), segments("ж" * 71)] == [1, 1, 2]
    assert segments("{" * 80) == 1 and segments("{" * 81) == 2  # extension characters take two septets
    assert sms_part_limit("plain text") == 1530 and sms_part_limit("привет") == 1541


def test_smart_punctuation_does_not_force_ucs2() -> None:
    (part,) = sms_parts("It\u2019s \u201cdone\u201d \u2014 **really**\u2026")
    assert part == 'It\'s "done" - really...' and segments(part) == 1


async def test_redis_state_round_trip(redis_url: str) -> None:
    state = RedisTwilioState(client_from_url(redis_url), owns_client=True)
    try:
        await state.opt_out(USER)
        assert await state.is_opted_out(USER)
        await state.opt_in(USER)
        assert not await state.is_opted_out(USER)
        assert await state.last_wrote(WA_USER) is None
        await state.wrote_at(WA_USER, 1234.5)
        assert await state.last_wrote(WA_USER) == 1234.5
        await state.set_status("r1", "SM1", "sent")
        await state.set_status("r1", "SM1", "delivered")
        assert await state.statuses("r1") == {"SM1": "delivered"}
        assert await state.content_sid("k1") is None
        await state.remember_content("k1", TEMPLATE)
        assert await state.content_sid("k1") == TEMPLATE
        await state.forget_content("k1")
        assert await state.content_sid("k1") is None
    finally:
        await state.close()


async def test_a_send_that_times_out_raises_outcome_unknown(app: tuple[Runtime, str], twilio: FakeTwilio) -> None:
    runtime, _ = app
    # A second adapter on the same services, with a short send timeout.
    runtime.settings.twilio.send_timeout_seconds = 0.3
    channel = TwilioChannel(runtime.channel_context())
    try:
        twilio.queue(Hang(30))
        reply = Reply(
            envelope_id="e", session_id="s", bot="support", channel="sms", reply_to=f"{USER}|{OUR_NUMBER}", text="hi"
        )
        with pytest.raises(DeliveryError, match="may have been sent") as caught:
            await channel.deliver(reply)
        assert caught.value.outcome_unknown and twilio.requests == 1
    finally:
        await channel.close()


# --- its own process ---------------------------------------------------------------------------


@pytest.mark.distributed
async def test_relaybot_serve_twilio_runs_as_its_own_process(
    tmp_path: Path, twilio: FakeTwilio, redis_url: str
) -> None:
    port = free_port()
    env = relaybot_env(
        RELAYBOT_BUS="redis",
        REDIS_URL=redis_url,
        RELAYBOT_BOTS_DIR=str(REPO / "bots"),
        RELAYBOT_DATA_DIR=str(tmp_path / "data"),
        RELAYBOT_SECRET_KEY="twilio-process-test-secret",
        RELAYBOT_LOG_LEVEL="WARNING",
        TWILIO_ACCOUNT_SID=ACCOUNT_SID,
        TWILIO_AUTH_TOKEN=AUTH_TOKEN,
        TWILIO_API_URL=twilio.url,
        RELAYBOT_TWILIO__PUBLIC_BASE_URL=PUBLIC,
    )
    serve = RelaybotProcess(
        ["serve", "twilio", "--host", "127.0.0.1", "--port", str(port)], env, tmp_path / "serve.log"
    )
    worker = RelaybotProcess(["worker"], env, tmp_path / "worker.log")
    try:
        base = f"http://127.0.0.1:{port}"
        await asyncio.to_thread(serve.wait_http, f"{base}/healthz")
        await asyncio.to_thread(worker.wait_output, "relaybot worker is running")
        first = sms(sid="SM" + "e" * 32)
        assert await inbound(twilio, base, first) == 200
        assert await inbound(twilio, base, first) == 200
        assert await inbound(twilio, base, sms("And monthly?")) == 200
        replies = await twilio.wait_for(2, within=60)
        assert [r.to for r in replies] == [USER, USER] and len({reply_id_of(r) for r in replies}) == 2
        assert twilio.requests == 2
    finally:
        for proc in (serve, worker):
            await asyncio.to_thread(proc.terminate)


async def test_a_whatsapp_reply_refused_later_with_63016_is_followed_by_the_template(
    app: tuple[Runtime, str], twilio: FakeTwilio
) -> None:
    runtime, base = app
    await inbound(twilio, base, sms(From=WA_USER, To=WA_NUMBER), route="whatsapp")
    (sent,) = await twilio.wait_for(1)
    reply_id = reply_id_of(sent)
    await settled(runtime, reply_id)
    assert await twilio.status_callback(sent, "undelivered", deliver_to=base, error_code="63016") == 204
    _, template = await twilio.wait_for(2)
    assert (template.content_sid, template.to, template.from_) == (TEMPLATE, WA_USER, WA_NUMBER)
    await adapter(runtime).drain()
    record = await settled(runtime, reply_id)
    assert record.status == "sent" and record.channel_message_ids == (sent.sid, template.sid)
    assert "template" in (record.error or "")
    # A repeated callback (Twilio retries them too) does not send the template twice.
    assert await twilio.status_callback(sent, "undelivered", deliver_to=base, error_code="63016") == 204
    await adapter(runtime).drain()
    assert [s.content_sid for s in twilio.sent] == [None, TEMPLATE]


async def test_each_number_can_have_its_own_bot(tmp_path: Path, twilio: FakeTwilio, openai: FakeOpenAI) -> None:
    bots = tmp_path / "bots"
    write_bot(bots, "support")
    write_bot(bots, "sales")
    settings = settings_for(tmp_path, twilio, openai, bots_dir=bots, twilio={"numbers": {OUR_NUMBER: "sales"}})
    async with running_app(settings) as (runtime, base):
        await inbound(twilio, base, sms())
        await inbound(twilio, base, sms("Hi", To="+15550002222", From="+15550003333"))
        sent = await twilio.wait_for(2)
        sessions = {s.to: (await settled(runtime, reply_id_of(s))).session_id for s in sent}
    assert sessions == {USER: f"sales:sms:{USER}", "+15550003333": "support:sms:+15550003333"}
    assert {s.to: s.from_ for s in sent} == {USER: OUR_NUMBER, "+15550003333": "+15550002222"}


async def test_behind_a_trusted_proxy_the_public_url_comes_from_x_forwarded_headers(
    tmp_path: Path, twilio: FakeTwilio, openai: FakeOpenAI
) -> None:
    settings = settings_for(tmp_path, twilio, openai, twilio={"public_base_url": None, "trust_forwarded_headers": True})
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "bot.example.com"}
    async with running_app(settings) as (_, base):
        status, _ = await twilio.signed_post(f"{PUBLIC}/twilio/sms", sms(), deliver_to=base, headers=forwarded)
        assert status == 200
        # Without the proxy's headers the URL the app sees is not the one Twilio signed.
        status, _ = await twilio.signed_post(f"{PUBLIC}/twilio/sms", sms(), deliver_to=base)
        assert status == 403
        (sent,) = await twilio.wait_for(1)
        assert sent.status_callback is None  # no public base URL to give Twilio for callbacks


# --- buttons: the numbered text fallback ------------------------------------------------------------


async def test_sms_buttons_are_numbered_and_a_number_or_a_label_answers_them(
    app: tuple[Runtime, str], twilio: FakeTwilio
) -> None:
    runtime, base = app
    assert await inbound(twilio, base, sms("/start")) == 200
    (greeting,) = await twilio.wait_for(1)
    assert greeting.body.endswith("Reply 1 for Billing, 2 for A problem, 3 for Cancel.")
    assert await inbound(twilio, base, sms(" 3. ")) == 200  # the number of a choice
    confirm = (await twilio.wait_for(2))[-1]
    assert "do you want to cancel it?" in confirm.body
    assert confirm.body.endswith("Reply 1 for Yes, cancel it, 2 for No, keep it.")
    assert await inbound(twilio, base, sms("no, keep it")) == 200  # a label, in any case
    kept = (await twilio.wait_for(3))[-1]
    assert "I've left your subscription as it is" in kept.body and "Reply 1" not in kept.body
    history = await runtime.history.after(f"support:sms:{USER}", 0, role="user")
    assert [(m.content, m.meta.get("action")) for m in history] == [
        ("/start", None),
        ("Cancel", "topic.cancel"),
        ("No, keep it", "cancel.no"),
    ]


async def test_a_number_without_a_choice_to_answer_is_an_ordinary_message(
    app: tuple[Runtime, str], twilio: FakeTwilio
) -> None:
    runtime, base = app
    assert await inbound(twilio, base, sms("/start")) == 200
    await twilio.wait_for(1)
    assert await inbound(twilio, base, sms("7")) == 200  # there is no seventh choice
    await twilio.wait_for(2)
    history = await runtime.history.after(f"support:sms:{USER}", 0, role="user")
    assert (history[-1].content, history[-1].meta.get("action")) == ("7", None)


# --- buttons: WhatsApp quick replies and lists through the Content API ---------------------------------


def whatsapp(body: str, **fields: str) -> dict[str, str]:
    return sms(body, From=WA_USER, To=WA_NUMBER, ProfileName="Ada", WaId=USER.removeprefix("+"), **fields)


def tap(label: str, button_id: str) -> dict[str, str]:
    """A tap on a quick reply, as Twilio posts it: the shown text as Body and ButtonText, the id as ButtonPayload."""
    return whatsapp(label, ButtonText=label, ButtonPayload=button_id, MessageType="button")


@pytest.fixture
async def wa_app(tmp_path: Path, twilio: FakeTwilio, openai: FakeOpenAI) -> AsyncIterator[tuple[Runtime, str]]:
    bots = tmp_path / "bots"
    target = write_bot(bots)
    # A menu of five choices, one label too long for a list item: the list picker and its limits.
    (target / "handlers.py").write_text(
        (target / "handlers.py").read_text()
        + """

@bot.command("plans")
async def plans_command(turn: HandlerTurn) -> None:
    turn.reply("Which plan?", buttons=[
        Button(id=f"plan.{n}", label=label) for n, label in enumerate(
            ["Free", "Starter", "Team", "Business", "Enterprise with a dedicated manager"])
    ])
"""
    )
    settings = settings_for(tmp_path, twilio, openai, twilio={"whatsapp_buttons": True}, bots_dir=bots)
    async with running_app(settings) as started:
        yield started


def content_of(twilio: FakeTwilio, sent: Sent) -> dict[str, Any]:
    """What WhatsApp shows for a message sent with a ContentSid: its content type's fields."""
    assert sent.body is None and sent.content_sid is not None
    (types,) = [twilio.contents[sent.content_sid]["types"]]
    return dict(types)


async def test_whatsapp_buttons_are_quick_replies_and_a_tap_is_the_click(
    wa_app: tuple[Runtime, str], twilio: FakeTwilio
) -> None:
    runtime, base = wa_app
    assert await inbound(twilio, base, whatsapp("/start"), route="whatsapp") == 200
    (greeting,) = await twilio.wait_for(1)
    assert content_of(twilio, greeting) == {
        "twilio/quick-reply": {
            "body": "{{1}}",
            "actions": [
                {"title": "Billing", "id": "topic.billing"},
                {"title": "A problem", "id": "topic.problem"},
                {"title": "Cancel", "id": "topic.cancel"},
            ],
        }
    }
    # The reply's text is the body, without the numbered line (the buttons are there to tap).
    text = greeting.variables["1"]
    assert text.startswith("Hi! I'm the Tasklane support assistant") and "Reply 1" not in text

    assert await inbound(twilio, base, tap("Cancel", "topic.cancel"), route="whatsapp") == 200
    confirm = (await twilio.wait_for(2))[-1]
    assert "do you want to cancel it?" in confirm.variables["1"]
    assert content_of(twilio, confirm)["twilio/quick-reply"]["actions"] == [
        {"title": "Yes, cancel it", "id": "cancel.yes"},
        {"title": "No, keep it", "id": "cancel.no"},
    ]
    assert await inbound(twilio, base, tap("No, keep it", "cancel.no"), route="whatsapp") == 200
    kept = (await twilio.wait_for(3))[-1]
    assert kept.content_sid is None and kept.body is not None and "I've left your subscription" in kept.body

    # The same offer again reuses its content: created once per distinct set of buttons.
    assert await inbound(twilio, base, whatsapp("/start"), route="whatsapp") == 200
    again = (await twilio.wait_for(4))[-1]
    assert again.content_sid == greeting.content_sid and twilio.content_requests == 2

    history = await runtime.history.after(f"support:whatsapp:{USER}", 0, role="user")
    assert [(m.content, m.meta.get("action")) for m in history] == [
        ("/start", None),
        ("Cancel", "topic.cancel"),
        ("No, keep it", "cancel.no"),
        ("/start", None),
    ]
    # SMS is unchanged by the setting: numbered text.
    assert await inbound(twilio, base, sms("/start")) == 200
    texted = (await twilio.wait_for(5))[-1]
    assert texted.body is not None and texted.body.endswith("Reply 1 for Billing, 2 for A problem, 3 for Cancel.")


async def test_more_than_three_buttons_are_a_list_and_long_labels_are_cut_and_logged(
    wa_app: tuple[Runtime, str], twilio: FakeTwilio
) -> None:
    runtime, base = wa_app
    with capture_logs() as logs:
        assert await inbound(twilio, base, whatsapp("/plans"), route="whatsapp") == 200
        (menu,) = await twilio.wait_for(1)
        await settled(runtime, reply_id_of(menu))
    picker = content_of(twilio, menu)["twilio/list-picker"]
    assert (picker["body"], picker["button"], menu.variables) == ("{{1}}", "Choose", {"1": "Which plan?"})
    assert [i["item"] for i in picker["items"]] == ["Free", "Starter", "Team", "Business", "Enterprise with a dedic…"]
    assert picker["items"][4] == {
        "item": "Enterprise with a dedic…",
        "id": "plan.4",
        "description": "Enterprise with a dedicated manager",
    }
    (cut,) = [e for e in logs if e["event"] == "whatsapp_button_label_cut"]
    assert (cut["button_id"], cut["limit"], cut["label_chars"]) == ("plan.4", 24, 35)
    # A pick from the list comes back as ListId / ListTitle: the click, with the whole label as its text.
    pick = whatsapp("Enterprise with a dedic…", ListId="plan.4", ListTitle="Enterprise with a dedic…")
    assert await inbound(twilio, base, pick, route="whatsapp") == 200
    await twilio.wait_for(2)
    history = await runtime.history.after(f"support:whatsapp:{USER}", 0, role="user")
    assert (history[-1].content, history[-1].meta.get("action")) == ("Enterprise with a dedicated manager", "plan.4")


def test_button_content_respects_whatsapp_limits_whatever_the_labels() -> None:
    quick = interactive_content([Button(id="a", label="x" * 80), Button(id="b", label="Fine")])
    actions = quick.types["twilio/quick-reply"]["actions"]
    assert [len(a["title"]) for a in actions] == [20, 4] and actions[0]["title"].endswith("…")
    assert [(c.button_id, c.limit) for c in quick.cuts] == [("a", 20)]
    many = interactive_content([Button(id=f"b{n}", label=f"{n} " + "y" * 78) for n in range(10)])
    items = many.types["twilio/list-picker"]["items"]
    assert len(items) == 10 and all(len(i["item"]) <= 24 and len(i["description"]) <= 72 for i in items)
    assert len(many.cuts) == 10
    # The key names the buttons, not the text: one resource per distinct offer.
    assert quick.key == interactive_content([Button(id="a", label="x" * 80), Button(id="b", label="Fine")]).key
    assert quick.key != interactive_content([Button(id="a", label="x" * 80)]).key


async def test_a_tap_on_an_older_replys_button_is_read_as_its_text(
    wa_app: tuple[Runtime, str], twilio: FakeTwilio
) -> None:
    runtime, base = wa_app
    assert await inbound(twilio, base, whatsapp("/start"), route="whatsapp") == 200
    await twilio.wait_for(1)
    assert await inbound(twilio, base, tap("Cancel", "topic.cancel"), route="whatsapp") == 200
    await twilio.wait_for(2)
    # The greeting's "A problem", tapped while the yes/no is the newest offer: not a click, but its text.
    assert await inbound(twilio, base, tap("A problem", "topic.problem"), route="whatsapp") == 200
    await twilio.wait_for(3)
    history = await runtime.history.after(f"support:whatsapp:{USER}", 0, role="user")
    assert (history[-1].content, history[-1].meta.get("action")) == ("A problem", None)


async def test_without_the_content_api_whatsapp_buttons_are_numbered(
    wa_app: tuple[Runtime, str], twilio: FakeTwilio
) -> None:
    runtime, base = wa_app
    twilio.queue_content(Fail(403, 20403, "Content API not enabled for this account"))
    with capture_logs() as logs:
        assert await inbound(twilio, base, whatsapp("/start"), route="whatsapp") == 200
        (greeting,) = await twilio.wait_for(1)
        await settled(runtime, reply_id_of(greeting))
    assert greeting.content_sid is None and greeting.body is not None
    assert greeting.body.endswith("Reply 1 for Billing, 2 for A problem, 3 for Cancel.")
    assert any(e["event"] == "whatsapp_buttons_numbered" and "20403" in e["error"] for e in logs)
    # The numbers still answer; the next offer tries the Content API again (and gets it).
    assert await inbound(twilio, base, whatsapp("3"), route="whatsapp") == 200
    confirm = (await twilio.wait_for(2))[-1]
    assert confirm.content_sid is not None and "do you want to cancel it?" in confirm.variables["1"]


async def test_a_content_deleted_in_twilio_is_created_again(wa_app: tuple[Runtime, str], twilio: FakeTwilio) -> None:
    runtime, base = wa_app
    assert await inbound(twilio, base, whatsapp("/start"), route="whatsapp") == 200
    (first,) = await twilio.wait_for(1)
    assert first.content_sid is not None
    twilio.delete_content(first.content_sid)
    assert await inbound(twilio, base, whatsapp("/start"), route="whatsapp") == 200
    second = (await twilio.wait_for(2, within=30))[-1]
    assert second.content_sid not in (None, first.content_sid)
    assert twilio.contents[second.content_sid]["types"]["twilio/quick-reply"]["actions"][0]["id"] == "topic.billing"
    record = await settled(runtime, reply_id_of(second))
    assert record.status == "sent"
