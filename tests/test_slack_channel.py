"""The Slack channel end to end: the real slack-bolt/slack-sdk against a fake Slack Web API.

Requests are signed with slack_sdk's own SignatureVerifier; the relaybot app runs for real on
127.0.0.1 with the embedded bus and a worker.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from slack_sdk.web.async_client import AsyncWebClient
from structlog.testing import capture_logs

from channels.inbound import Ignored
from channels.slack.cli import manifest
from channels.slack.inbound import Inbound, parse
from channels.slack.users import UserNames
from core.cli import main as cli_main
from core.envelope import session_id_for
from core.errors import ConfigError
from core.runtime import Runtime
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.scripted import Answer
from tests.fakes.slack_api import BOT_USER_ID, TOKEN, FakeSlack, Message, RateLimited, SlackError, Slow, user
from tests.support.harness import running_app, write_bot
from tests.support.llm import llm_settings
from tests.support.processes import RelaybotProcess, relaybot_env
from tests.support.servers import free_port
from tests.support.slack_requests import (
    EVENTS,
    INTERACTIONS,
    SECRET,
    block_click,
    callback,
    dm,
    mention,
    plain_bot,
    signed,
    slack_settings,
)

# --- helpers -----------------------------------------------------------------------------------


async def send(
    base: str,
    body: dict[str, Any] | bytes,
    *,
    headers: dict[str, str] | None = None,
    retry: int | None = None,
) -> tuple[int, str]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    sent = dict(headers) if headers is not None else signed(raw)
    if retry is not None:
        sent |= {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"}
    async with aiohttp.ClientSession() as http, http.post(base + EVENTS, data=raw, headers=sent) as response:
        return response.status, await response.text()


def final_texts(slack: FakeSlack) -> list[str]:
    return [m.text for m in slack.messages]


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(users={"U1": user("Ada")}) as fake:
        yield fake


@pytest.fixture
async def app(tmp_path: Path, slack: FakeSlack) -> AsyncIterator[tuple[Runtime, str]]:
    async with running_app(slack_settings(tmp_path, slack)) as started:
        assert "slack" in started[0].channels
        yield started


async def settle(slack: FakeSlack, runtime: Runtime) -> None:
    """Wait until every accepted message has been answered and delivered."""
    for _ in range(200):
        if await runtime.bus.pending() == 0:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)


# --- verification and bad input ------------------------------------------------------------------


async def test_url_verification_answers_the_challenge(app: tuple[Runtime, str]) -> None:
    _, base = app
    status, text = await send(base, {"type": "url_verification", "token": "t", "challenge": "abc123"})
    assert status == 200 and "abc123" in text


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="missing"),
        pytest.param(signed(b"something else"), id="forged"),
        pytest.param(None, id="wrong-secret"),
        pytest.param(None, id="stale"),
    ],
)
async def test_bad_signatures_get_401_and_nothing_is_processed(
    app: tuple[Runtime, str], slack: FakeSlack, headers: dict[str, str] | None, request: pytest.FixtureRequest
) -> None:
    runtime, base = app
    raw = json.dumps(callback(dm("hello"))).encode()
    case = request.node.callspec.id
    if case == "wrong-secret":
        headers = signed(raw, secret="not-the-secret")
    elif case == "stale":
        headers = signed(raw, timestamp=int(time.time()) - 6 * 60)  # outside the 5-minute window
    status, _ = await send(base, raw, headers=headers)
    assert status == 401
    await settle(slack, runtime)
    assert slack.messages == [] and await runtime.bus.pending() == 0


@pytest.mark.parametrize(
    ("body", "timestamp", "signature"),
    [
        pytest.param(b"{}", "not-a-number", "v0=00", id="timestamp-not-a-number"),
        pytest.param(b"{}", "9" * 5000, "v0=00", id="timestamp-past-int-digits"),
        pytest.param(b"{}", None, "v0=\u00e9", id="signature-not-ascii"),
        pytest.param(b"\xff\xfe{}", None, "v0=00", id="body-not-utf8"),
    ],
)
async def test_signatures_that_cannot_be_checked_get_401_not_a_crash(
    app: tuple[Runtime, str], body: bytes, timestamp: str | None, signature: str
) -> None:
    # slack_sdk's verifier raised on each of these (a 500 with a traceback).
    runtime, base = app
    headers = {"X-Slack-Request-Timestamp": timestamp or str(int(time.time())), "X-Slack-Signature": signature}
    assert (await send(base, body, headers=headers | {"Content-Type": "application/json"}))[0] == 401
    assert await runtime.bus.pending() == 0


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        pytest.param('{"type": "event_callback", "event": [1]}', "application/json", id="event-a-list"),
        pytest.param('{"type": "event_callback", "event": {"type": 5}}', "application/json", id="event-type-a-number"),
        pytest.param(
            '{"type": "event_callback", "event": {"type": "message", "channel": 5, "user": "U1", "text": "hi"}}',
            "application/json",
            id="channel-a-number",
        ),
        pytest.param('{"type": "event_callback", "authorizations": 5}', "application/json", id="authorizations"),
        pytest.param('{"type": "event_callback", "event": null}', "application/json", id="event-null"),
        pytest.param("payload=not-json", "application/x-www-form-urlencoded", id="form-payload-not-json"),
        pytest.param("payload=%5B1%5D", "application/x-www-form-urlencoded", id="form-payload-a-list"),
    ],
)
async def test_signed_bodies_bolt_cannot_read_get_400_and_nothing_is_processed(
    app: tuple[Runtime, str], slack: FakeSlack, body: str, content_type: str
) -> None:
    # Authentic (signed), of a shape Slack never sends: Bolt raised on each (a 500 with a traceback).
    runtime, base = app
    raw = body.encode()
    with capture_logs() as logs:
        status, text = await send(base, raw, headers=signed(raw) | {"Content-Type": content_type})
    assert status == 400 and "malformed_body" in text
    assert not [e for e in logs if e["log_level"] == "error"]
    await settle(slack, runtime)
    assert slack.messages == [] and await runtime.bus.pending() == 0


async def test_malformed_and_oversized_bodies_are_refused_without_a_crash(
    app: tuple[Runtime, str], slack: FakeSlack
) -> None:
    runtime, base = app
    assert (await send(base, b'{"type": "event_callback", "event": '))[0] == 400
    assert (await send(base, b"[1, 2, 3]", headers=signed(b"[1, 2, 3]")))[0] == 400
    huge = json.dumps(callback(dm("x" * 300_000))).encode()
    assert (await send(base, huge))[0] == 413
    # Unknown event types are acknowledged (Slack would retry anything else) and ignored.
    status, _ = await send(base, callback({"type": "reaction_added", "user": "U1", "reaction": "+1"}, "Ev9"))
    assert status == 200
    # The adapter still works afterwards.
    assert (await send(base, callback(dm("still there?"), "Ev10")))[0] == 200
    await slack.wait_for(lambda s: len(s.messages) == 1)
    await settle(slack, runtime)
    assert len(slack.messages) == 1 and "still there?" in slack.messages[0].text


# --- the ack, retries and duplicates ----------------------------------------------------------------


async def test_the_ack_does_not_wait_for_a_slow_model(tmp_path: Path, slack: FakeSlack) -> None:
    async with FakeOpenAI() as openai_fake:
        openai_fake.always(None, Answer("A considered answer.", first_token_delay=1.0))
        bots_dir = plain_bot(tmp_path / "bots", first_token_timeout_seconds=10.0, step_timeout_seconds=20.0)
        settings = llm_settings(
            tmp_path,
            openai_fake,
            None,
            bots_dir=bots_dir,
            slack_bot_token=TOKEN,
            slack_signing_secret=SECRET,
            slack_api_url=slack.api_url,
        )
        async with running_app(settings) as (_, base):
            started = time.monotonic()
            status, _ = await send(base, callback(dm("What does the Pro plan cost?")))
            ack_seconds = time.monotonic() - started
            # The order proves the ack did not wait: it came back while the model had not answered.
            assert status == 200
            assert slack.messages == []
            await slack.wait_for(lambda s: any("considered" in m.text for m in s.messages))
            answered_seconds = time.monotonic() - started
    print(f"ack {ack_seconds * 1000:.0f} ms, reply after {answered_seconds:.1f} s")
    assert ack_seconds < answered_seconds


async def test_the_same_event_delivered_three_times_is_answered_once(
    app: tuple[Runtime, str], slack: FakeSlack
) -> None:
    runtime, base = app
    body = callback(dm("How do I export my tasks?"), "EvSame")
    statuses = [(await send(base, body))[0], (await send(base, body, retry=1))[0], (await send(base, body, retry=2))[0]]
    assert statuses == [200, 200, 200]
    await slack.wait_for(lambda s: len(s.messages) >= 1)
    await settle(slack, runtime)
    assert len(slack.messages) == 1


async def test_a_retry_whose_first_delivery_never_arrived_is_answered(
    app: tuple[Runtime, str], slack: FakeSlack
) -> None:
    runtime, base = app
    status, _ = await send(base, callback(dm("Lost the first time"), "EvLost"), retry=1)
    assert status == 200
    await slack.wait_for(lambda s: len(s.messages) == 1)
    await settle(slack, runtime)
    assert len(slack.messages) == 1 and "Lost the first time" in slack.messages[0].text


async def test_message_and_app_mention_for_one_slack_message_give_one_reply(
    app: tuple[Runtime, str], slack: FakeSlack
) -> None:
    runtime, base = app
    await send(base, callback(mention("Is there an API?", kind="message"), "EvA"))
    await send(base, callback(mention("Is there an API?"), "EvB"))
    await slack.wait_for(lambda s: len(s.messages) >= 1)
    await settle(slack, runtime)
    assert len(slack.messages) == 1


# --- where answers land ---------------------------------------------------------------------------------


async def test_a_dm_a_mention_and_a_thread_reply_each_land_in_the_right_thread(
    app: tuple[Runtime, str], slack: FakeSlack
) -> None:
    runtime, base = app
    await send(base, callback(dm("Hello from a DM"), "Ev1"))
    await slack.wait_for(lambda s: len(s.messages) == 1)
    await send(base, callback(mention("Question in a channel", ts="1700000001.000100"), "Ev2"))
    await slack.wait_for(lambda s: len(s.messages) == 2)
    await settle(slack, runtime)  # the thread is the bot's once its answer is recorded
    # A reply in the bot's thread, without a mention.
    reply = {
        "type": "message",
        "channel": "C1",
        "channel_type": "channel",
        "user": "U1",
        "text": "And a follow-up in the thread",
        "ts": "1700000002.000100",
        "thread_ts": "1700000001.000100",
    }
    await send(base, callback(reply, "Ev3"))
    await slack.wait_for(lambda s: len(s.messages) == 3)
    # A channel message with no mention in no thread of the bot's is not answered.
    await send(base, callback({**reply, "ts": "1700000003.000100", "thread_ts": None, "text": "chatter"}, "Ev4"))
    await send(
        base,
        callback({**reply, "ts": "1700000004.000100", "thread_ts": "1699999999.000100", "text": "other"}, "Ev5"),
    )
    await settle(slack, runtime)
    direct, channel, threaded = slack.messages
    assert (direct.channel, direct.thread_ts) == ("D1", None)  # DMs are answered inline
    assert (channel.channel, channel.thread_ts) == ("C1", "1700000001.000100")
    assert (threaded.channel, threaded.thread_ts) == ("C1", "1700000001.000100")
    assert "Question in a channel" in channel.text and f"<@{BOT_USER_ID}>" not in channel.text
    assert "follow-up" in threaded.text
    assert len(slack.messages) == 3
    # The mention and the follow-up are one conversation: the channel plus the thread.
    history = await runtime.history.after("support:slack:C1:1700000001.000100", 0)
    assert [m.role for m in history] == ["user", "assistant", "user", "assistant"]
    assert [history[0].content, history[2].content] == ["Question in a channel", "And a follow-up in the thread"]
    # The user's display name came from users.info, once (cached).
    assert len(slack.calls_to("users.info")) == 1


async def test_own_messages_edits_deletions_and_other_bots_are_ignored(
    app: tuple[Runtime, str], slack: FakeSlack
) -> None:
    runtime, base = app
    events = [
        dm("I am the bot", user=BOT_USER_ID, bot_id="B1"),
        dm("another bot", ts="1700000000.000101", bot_id="B99", user="U9"),
        {**dm("edited", ts="1700000000.000102"), "subtype": "message_changed"},
        {**dm("", ts="1700000000.000103"), "subtype": "message_deleted"},
    ]
    for i, event in enumerate(events):
        assert (await send(base, callback(event, f"EvIgnored{i}")))[0] == 200
    await settle(slack, runtime)
    assert slack.messages == []


def test_normalizing_files_mentions_other_bots_and_thread_replies() -> None:
    event = {
        **mention("see this file", kind="message"),
        "subtype": "file_share",
        "files": [
            {
                "id": "F1",
                "name": "report.pdf",
                "mimetype": "application/pdf",
                "size": 1234,
                "url_private": "https://files.slack.com/report.pdf",
            }
        ],
    }
    found = parse(event, bot_user_id=BOT_USER_ID)
    assert isinstance(found, Inbound)
    assert found.text == "see this file" and found.kind == "mention"
    (attachment,) = found.attachments
    assert (attachment.name, attachment.mime_type, attachment.size) == ("report.pdf", "application/pdf", 1234)
    assert isinstance(parse({**event, "bot_id": "B9"}, bot_user_id=BOT_USER_ID), Ignored)
    assert isinstance(parse({**event, "bot_id": "B9"}, bot_user_id=BOT_USER_ID, ignore_bots=False), Inbound)
    reply = {**dm("thanks", ts="1700000000.000900"), "channel": "C1", "channel_type": "channel"}
    in_bots_thread = parse({**reply, "thread_ts": "1", "parent_user_id": BOT_USER_ID}, bot_user_id=BOT_USER_ID)
    in_users_thread = parse({**reply, "thread_ts": "1", "parent_user_id": "U7"}, bot_user_id=BOT_USER_ID)
    assert isinstance(in_bots_thread, Inbound) and in_bots_thread.in_bot_thread
    assert isinstance(in_users_thread, Inbound) and not in_users_thread.in_bot_thread
    assert in_users_thread.kind == "thread" and in_users_thread.conversation_id == "C1:1"


# --- delivery ----------------------------------------------------------------------------------------------


async def test_a_429_on_delivery_is_waited_out_and_the_reply_arrives_once(
    app: tuple[Runtime, str], slack: FakeSlack
) -> None:
    runtime, base = app
    # The offline answer is too quick to stream: the final post is the only one, limited twice.
    slack.fail("chat.postMessage", RateLimited(retry_after=1), RateLimited(retry_after=1))
    await send(base, callback(dm("Rate limit me"), "Ev429"))
    await slack.wait_for(lambda s: len(s.messages) >= 1 and "Rate limit me" in s.messages[-1].text)
    await settle(slack, runtime)
    limited = slack.calls_to("chat.postMessage")
    assert len(limited) == 3  # two 429s, then one post
    assert limited[2].at - limited[1].at >= 0.9  # Retry-After: 1 was honoured
    assert len(slack.messages) == 1


async def test_a_non_retryable_slack_error_is_dropped_with_a_clear_record(
    app: tuple[Runtime, str], slack: FakeSlack
) -> None:
    runtime, base = app
    slack.fail("chat.postMessage", SlackError("channel_not_found"), SlackError("channel_not_found"))
    await send(base, callback(dm("Nowhere to go"), "EvGone"))
    await slack.wait_for(lambda s: len(s.calls_to("chat.postMessage")) >= 1)
    await settle(slack, runtime)
    assert slack.messages == []
    # The offline answer is whole before a streamed message would open: one post, and no retry of it.
    assert len(slack.calls_to("chat.postMessage")) == 1


async def test_a_long_reply_is_split_in_order_and_a_retry_does_not_repeat_parts(
    tmp_path: Path, slack: FakeSlack
) -> None:
    paragraphs = [f"Paragraph {i}: " + ("word " * 150).strip() + "." for i in range(12)]
    long_text = "\n\n".join(paragraphs)
    async with FakeOpenAI() as openai_fake:
        openai_fake.always(None, Answer(long_text))
        bots_dir = plain_bot(tmp_path / "bots")
        settings = llm_settings(
            tmp_path,
            openai_fake,
            None,
            bots_dir=bots_dir,
            slack_bot_token=TOKEN,
            slack_signing_secret=SECRET,
            slack_api_url=slack.api_url,
            slack={"stream_interval_seconds": 60.0},
        )
        async with running_app(settings) as (runtime, base):
            # The third post is rate limited: the retry resumes there, without re-posting parts 1 and 2.
            slack.fail_call("chat.postMessage", 3, RateLimited(retry_after=0.5))
            await send(base, callback(dm("Tell me everything"), "EvLong"))
            await slack.wait_for(lambda s: "Paragraph 11" in "".join(m.text for m in s.messages))
            await settle(slack, runtime)
    assert len(slack.calls_to("chat.postMessage")) == len(slack.messages) + 1  # one 429, no repeats
    texts = final_texts(slack)
    assert len(texts) >= 3 and all(len(t) <= 3500 for t in texts)
    joined = "\n\n".join(texts)
    positions = [joined.index(f"Paragraph {i}:") for i in range(12)]
    assert positions == sorted(positions)
    assert sum(joined.count(f"Paragraph {i}:") for i in range(12)) == 12  # nothing twice, nothing lost
    assert all(m.thread_ts is None and m.channel == "D1" for m in slack.messages)


async def test_a_reply_done_before_the_first_words_go_up_is_posted_once(tmp_path: Path, slack: FakeSlack) -> None:
    # The default: the offline answer streams in a few milliseconds, well inside the 0.5 s wait.
    settings = slack_settings(tmp_path, slack, slack={})
    async with running_app(settings) as (runtime, base):
        await send(base, callback(dm("Is there a yearly plan?"), "EvFast"))
        await slack.wait_for(lambda s: len(s.messages) == 1)
        await settle(slack, runtime)
        await asyncio.sleep(0.7)  # past the wait: nothing more goes up
    (message,) = slack.messages
    assert "Is there a yearly plan?" in message.text and message.edits == []
    assert len(slack.calls_to("chat.postMessage")) == 1 and slack.calls_to("chat.update") == []


async def test_streamed_edits_end_with_the_full_text(tmp_path: Path, slack: FakeSlack) -> None:
    text = "Open Settings, then Billing, then choose the yearly plan and confirm with your card."
    async with FakeOpenAI() as openai_fake:
        openai_fake.always(None, Answer(text, token_delay=0.1))
        bots_dir = plain_bot(tmp_path / "bots")
        settings = llm_settings(
            tmp_path,
            openai_fake,
            None,
            bots_dir=bots_dir,
            slack_bot_token=TOKEN,
            slack_signing_secret=SECRET,
            slack_api_url=slack.api_url,
            slack={"stream_interval_seconds": 0.3},
        )
        async with running_app(settings) as (runtime, base):
            await send(base, callback(mention("How do I pay yearly?"), "EvStream"))
            await slack.wait_for(lambda s: len(s.messages) == 1 and s.messages[0].text == text)
            await settle(slack, runtime)
    (message,) = slack.messages
    assert message.text == text and message.thread_ts == "1700000000.000200"
    assert len(message.edits) >= 2  # intermediate edits while streaming, then the final text
    assert message.edits[-1] == text
    assert all(not e.endswith(" …") for e in message.edits[-1:])
    updates = slack.calls_to("chat.update")
    gaps = [b.at - a.at for a, b in itertools.pairwise(updates[:-1])]
    assert all(g >= 0.25 for g in gaps)  # throttled (the final edit may follow at once)


# --- CLI ----------------------------------------------------------------------------------------------------


def test_manifest_names_the_scopes_events_and_request_url(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["slack", "manifest", "--url", "https://bot.example.com", "--name", "Tasky"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["settings"]["event_subscriptions"]["request_url"] == "https://bot.example.com/slack/events"
    assert printed["settings"]["interactivity"] == {
        "is_enabled": True,
        "request_url": "https://bot.example.com/slack/interactions",
    }
    assert {"app_mention", "message.im"} <= set(printed["settings"]["event_subscriptions"]["bot_events"])
    assert {"chat:write", "users:read", "app_mentions:read"} <= set(printed["oauth_config"]["scopes"]["bot"])
    assert printed["display_information"]["name"] == "Tasky"
    socket = manifest(name="x", request_url=None, socket_mode=True)
    assert socket["settings"]["socket_mode_enabled"] and "request_url" not in socket["settings"]["event_subscriptions"]


# --- Socket Mode --------------------------------------------------------------------------------------------


async def test_socket_mode_receives_without_a_public_url_and_acks_each_envelope(
    tmp_path: Path, slack: FakeSlack
) -> None:
    settings = slack_settings(tmp_path, slack, slack_signing_secret=None, slack_app_token="xapp-1-test", polling=True)
    async with running_app(settings) as (runtime, base):
        assert "slack" in runtime.channels
        body = callback(dm("A question over a socket"), "EvSocket")
        first = await slack.push_event(body)
        await slack.wait_for(lambda s: first in s.socket_acks)
        retried = await slack.push_event(body, retry_attempt=1)  # the same event again: acked, not answered
        await slack.wait_for(lambda s: retried in s.socket_acks and len(s.messages) == 1)
        await settle(slack, runtime)
        # No HTTP route without a signing secret: events come only through the socket.
        assert (await send(base, body))[0] == 404
    (message,) = slack.messages
    assert message.channel == "D1" and "A question over a socket" in message.text


async def test_socket_mode_with_a_bad_app_token_fails_with_a_clear_message(tmp_path: Path, slack: FakeSlack) -> None:
    settings = slack_settings(tmp_path, slack, slack_signing_secret=None, slack_app_token="bad-token", polling=True)
    runtime = await Runtime.from_settings(settings)
    try:
        runtime.add_configured_channels(["slack"])
        with pytest.raises(ConfigError, match="SLACK_APP_TOKEN"):
            await runtime.channels["slack"].start()
    finally:
        await runtime.close()


# --- the production topology ---------------------------------------------------------------------------------


@pytest.mark.distributed
async def test_serve_slack_in_two_processes_with_a_worker_on_redis_answers_a_retried_event_once(
    tmp_path: Path, slack: FakeSlack, redis_url: str
) -> None:
    """`relaybot serve slack` twice behind a balancer: Slack's retry lands on the other process."""
    env = relaybot_env(
        RELAYBOT_BUS="redis",
        REDIS_URL=redis_url,
        RELAYBOT_DATA_DIR=str(tmp_path / "data"),
        RELAYBOT_BOTS_DIR=str(plain_bot(tmp_path / "bots")),
        RELAYBOT_SECRET_KEY="slack-distributed-secret-key",
        RELAYBOT_LOG_LEVEL="INFO",
        RELAYBOT_SHUTDOWN_GRACE_SECONDS="2",
        SLACK_BOT_TOKEN=TOKEN,
        SLACK_SIGNING_SECRET=SECRET,
        SLACK_API_URL=slack.api_url,
    )
    processes: list[RelaybotProcess] = []
    try:
        bases = []
        for i in range(2):
            port = free_port()
            proc = RelaybotProcess(
                ["serve", "slack", "--host", "127.0.0.1", "--port", str(port)], env, tmp_path / f"serve-{i}.log"
            )
            processes.append(proc)
            bases.append(f"http://127.0.0.1:{port}")
            await asyncio.to_thread(proc.wait_http, f"{bases[-1]}/healthz")
        worker = RelaybotProcess(["worker"], env, tmp_path / "worker.log")
        processes.append(worker)
        await asyncio.to_thread(worker.wait_output, "relaybot worker is running")
        body = callback(mention("Which plans include SSO?"), "EvTwice")
        assert (await send(bases[0], body))[0] == 200
        assert (await send(bases[1], body, retry=1))[0] == 200
        await slack.wait_for(
            lambda s: len(s.messages) >= 1 and "SSO" in s.messages[0].text and "…" not in s.messages[0].text[-2:]
        )
        await asyncio.sleep(1.5)  # anything answered twice would have been posted by now
    finally:
        await asyncio.gather(*(asyncio.to_thread(proc.terminate) for proc in processes))
    (message,) = slack.messages
    assert (message.channel, message.thread_ts) == ("C1", "1700000000.000200")
    assert "Which plans include SSO?" in message.text


# --- display names ---------------------------------------------------------------------------------------------


async def test_display_names_are_cached_bounded_expire_and_never_hold_up_the_ack(slack: FakeSlack) -> None:
    slack.users["U2"] = user("Grace")
    slack.users["U3"] = user("Linus")
    now = [0.0]
    async with aiohttp.ClientSession() as http:
        client = AsyncWebClient(token=TOKEN, base_url=slack.api_url, session=http, retry_handlers=[])
        names = UserNames(client, size=2, ttl_seconds=60, timeout_seconds=5.0, clock=lambda: now[0])
        assert [await names.get("U1"), await names.get("U1")] == ["Ada", "Ada"]
        assert len(slack.calls_to("users.info")) == 1  # cached
        now[0] = 61.0
        assert await names.get("U1") == "Ada" and len(slack.calls_to("users.info")) == 2  # expired, fetched again
        await names.get("U2")
        await names.get("U3")
        assert len(names) == 2  # bounded: the oldest (U1) was dropped
        assert await names.get("UNKNOWN") is None
        await names.close()
        slack.users["U4"] = user("Ken")
        slack.fail("users.info", Slow(1.0))
        names = UserNames(client, size=10, ttl_seconds=60, timeout_seconds=0.2, clock=lambda: now[0])
        assert await names.get("U4") is None  # Slack is slow: no name rather than a late ack
        calls = len(slack.calls_to("users.info"))
        await asyncio.sleep(1.5)
        assert await names.get("U4") == "Ken"  # the lookup finished in the background and was kept
        assert len(slack.calls_to("users.info")) == calls
        await names.close()


async def test_with_the_bus_down_the_event_is_not_acked_so_slack_sends_it_again(
    tmp_path: Path, slack: FakeSlack
) -> None:
    # Nothing listens on this port: publishing fails, and Slack must get a non-200 to retry later.
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    settings = slack_settings(tmp_path, slack, bus="redis", redis_url=dead_redis)
    runtime = await Runtime.from_settings(settings)
    runtime.add_configured_channels(["slack"])
    runner = web.AppRunner(runtime.build_app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        await runtime.start(worker=False, delivery=False)
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        status, _ = await send(base, callback(dm("Is anyone there?"), "EvDown"))
    finally:
        await runner.cleanup()
        await runtime.close(grace=0)
    assert status == 500
    assert slack.messages == []


async def test_a_post_that_times_out_is_not_repeated_and_is_recorded_as_unknown(
    tmp_path: Path, slack: FakeSlack
) -> None:
    # Slack has no idempotency key: a post that timed out may have landed, so a second one could answer twice.
    settings = slack_settings(
        tmp_path,
        slack,
        slack={"api_timeout_seconds": 1.0, "stream_interval_seconds": 0.2, "stream_open_after_seconds": 0.0},
    )
    slack.fail("chat.postMessage", Slow(2.5), Slow(2.5))
    async with running_app(settings) as (runtime, base):
        with capture_logs() as logs:
            await send(base, callback(dm("Slow Slack today"), "EvSlow"))
            await slack.wait_for(lambda s: len(s.calls_to("chat.postMessage")) == 1)
            await slack.wait_for(lambda s: len(s.messages) == 1, within=10)  # the slow post does land, late
            await settle(slack, runtime)
            await asyncio.sleep(1.0)
    assert len(slack.calls_to("chat.postMessage")) == 1  # the final post (the answer is too quick to stream): no retry
    (failed,) = [e for e in logs if e["event"] == "delivery_failed"]
    assert failed["status"] == "unknown" and "may have been posted" in failed["error"]


async def test_start_up_prints_no_token_warning_when_the_token_comes_from_the_environment(
    tmp_path: Path, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # How a user runs it: SLACK_BOT_TOKEN in the environment, which Bolt also reads by itself.
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    with caplog.at_level(logging.WARNING):
        async with running_app(slack_settings(tmp_path, slack)) as (runtime, _):
            assert "slack" in runtime.channels
    assert "will be unused" not in caplog.text


# --- buttons --------------------------------------------------------------------------------------


async def click(base: str, raw: bytes) -> tuple[int, str]:
    headers = signed(raw) | {"Content-Type": "application/x-www-form-urlencoded"}
    async with aiohttp.ClientSession() as http, http.post(base + INTERACTIONS, data=raw, headers=headers) as response:
        return response.status, await response.text()


@pytest.fixture
async def support_app(tmp_path: Path, slack: FakeSlack) -> AsyncIterator[tuple[Runtime, str]]:
    # The example bot, whose /start offers topic buttons and whose cancellation flow asks yes/no.
    settings = slack_settings(tmp_path, slack, bots_dir=write_bot(tmp_path / "support-bots").parent)
    async with running_app(settings) as started:
        yield started


def as_clicked(message: Message) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "message", "channel": message.channel, "ts": message.ts, "text": message.text}
    if message.thread_ts:
        body["thread_ts"] = message.thread_ts
    body["blocks"] = message.blocks
    return body


async def test_buttons_are_an_actions_block_and_a_click_is_handled_and_shown(
    support_app: tuple[Runtime, str], slack: FakeSlack
) -> None:
    runtime, base = support_app
    assert (await send(base, callback(dm("/start"))))[0] == 200
    await slack.wait_for(lambda s: len(s.messages) == 1)
    (greeting,) = slack.messages
    assert greeting.blocks is not None and [b["type"] for b in greeting.blocks] == ["section", "actions"]
    buttons = greeting.blocks[1]["elements"]
    assert [(b["text"]["text"], b["action_id"], b["value"]) for b in buttons] == [
        ("Billing", "relaybot:0", "2:0"),
        ("A problem", "relaybot:1", "2:1"),
        ("Cancel", "relaybot:2", "2:2"),
    ]
    status, _ = await click(base, block_click(as_clicked(greeting), "2:2"))
    assert status == 200
    await slack.wait_for(lambda s: len(s.messages) == 2 and s.messages[0].edits != [])
    confirm = slack.messages[1]
    assert "do you want to cancel it?" in confirm.text
    assert confirm.blocks is not None and confirm.blocks[1]["elements"][0]["style"] == "danger"
    # The clicked message shows the choice instead of its buttons
    assert greeting.blocks is not None and [b["type"] for b in greeting.blocks] == ["section", "context"]
    assert greeting.blocks[1]["elements"][0]["text"] == "<@U1> chose *Cancel*"
    history = await runtime.history.after(session_id_for("support", "slack", "D1"), 0, role="user")
    assert (history[-1].content, history[-1].meta.get("action")) == ("Cancel", "topic.cancel")


async def test_a_click_on_an_older_message_or_a_forged_value_is_acked_and_not_handled(
    support_app: tuple[Runtime, str], slack: FakeSlack
) -> None:
    runtime, base = support_app
    assert (await send(base, callback(dm("/start"))))[0] == 200
    await slack.wait_for(lambda s: len(s.messages) == 1)
    greeting = as_clicked(slack.messages[0])
    assert (await send(base, callback(dm("I'd like to cancel Tasklane", ts="1700000000.000200"), "Ev2")))[0] == 200
    await slack.wait_for(lambda s: len(s.messages) == 2)
    for n, value in enumerate(("2:0", "4:9", "nonsense")):
        status, _ = await click(base, block_click(greeting, value, action_ts=f"1800000002.00000{n}"))
        assert status == 200  # acked: Slack shows no error, nothing is handled
    await settle(slack, runtime)
    assert len(slack.messages) == 2 and slack.messages[0].edits == []
    assert len(await runtime.history.after(session_id_for("support", "slack", "D1"), 0)) == 4


async def test_a_click_with_a_bad_signature_is_refused(support_app: tuple[Runtime, str]) -> None:
    _, base = support_app
    raw = block_click({"type": "message", "channel": "D1", "ts": "1.2"}, "2:0")
    headers = signed(raw, secret="wrong") | {"Content-Type": "application/x-www-form-urlencoded"}
    async with aiohttp.ClientSession() as http, http.post(base + INTERACTIONS, data=raw, headers=headers) as response:
        assert response.status == 401
