"""The widget's WebSocket protocol against the real app on a real port."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import ValidationError

from channels.api.channel import callback_signing_key
from channels.web.tokens import SessionTokens, WebSession
from core.envelope import Reply
from core.runtime import Runtime
from core.secrets import WEB_SESSION_TOKENS, derive_key
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.scripted import Answer
from tests.support.harness import make_settings, running_app, write_bot
from tests.support.llm import llm_settings, write_bot_models
from tests.support.raw_http import raw_get
from tests.support.web_frames import frames_until_reply


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[tuple[Runtime, str]]:
    async with running_app(make_settings(tmp_path)) as started:
        yield started


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def assert_silent(ws: aiohttp.ClientWebSocketResponse, seconds: float = 0.3) -> None:
    with pytest.raises(TimeoutError):
        frame = await ws.receive(timeout=seconds)
        pytest.fail(f"unexpected frame {frame.data!r}")


async def test_first_frame_is_a_signed_session_then_an_ack_and_a_numbered_reply(
    app: tuple[Runtime, str], http: aiohttp.ClientSession
) -> None:
    _, base = app
    async with http.ws_connect(f"{base}/ws?bot=support") as ws:
        session = await ws.receive_json()
        assert session["type"] == "session" and session["session_id"] and "." in session["token"]
        await ws.send_json({"type": "message", "id": "c1", "text": "Where is the billing page?"})
        frames = await frames_until_reply(ws)
        # The offline answer is complete long before a first piece would be due: no deltas, only the reply.
        assert [f["type"] for f in frames] == ["ack", "reply"]
        assert frames[0] == {"type": "ack", "id": "c1"}
        reply = frames[-1]
        assert reply["type"] == "reply" and reply["reply_to"] == "c1" and reply["seq"] == 2
        assert "Where is the billing page?" in reply["text"]


async def test_a_slowly_streamed_answer_arrives_in_deltas_that_add_up_to_the_reply(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    words = "Open Settings, then Billing, then Invoices, and pick the month you need."
    async with FakeOpenAI() as openai_fake:
        openai_fake.always("gpt-4o", Answer(words, token_delay=0.04))
        bots = write_bot_models(tmp_path / "bots", chain=["openai:gpt-4o"])
        settings = llm_settings(tmp_path, openai_fake, None, bots_dir=bots)
        async with running_app(settings) as (_, base), http.ws_connect(f"{base}/ws?bot=support") as ws:
            await ws.receive_json()
            await ws.send_json({"type": "message", "id": "c1", "text": "Where are my invoices?"})
            frames = await frames_until_reply(ws)
    assert frames[0] == {"type": "ack", "id": "c1"}
    deltas = [f for f in frames if f["type"] == "delta"]
    reply = frames[-1]
    # Half a second of tokens (a loaded machine still shows several pieces): shown as they come,
    # in ~50 ms pieces rather than one per word.
    assert 2 <= len(deltas) < len(words.split()), [d["text"] for d in deltas]
    assert all(d["reply_to"] == "c1" for d in deltas)
    assert reply["type"] == "reply" and reply["text"] == words
    assert "".join(d["text"] for d in deltas).strip() == reply["text"]


async def test_a_resent_client_id_is_acknowledged_but_not_answered_twice(
    app: tuple[Runtime, str], http: aiohttp.ClientSession
) -> None:
    runtime, base = app
    async with http.ws_connect(f"{base}/ws") as ws:
        session = await ws.receive_json()
        await ws.send_json({"type": "message", "id": "same", "text": "hello"})
        await frames_until_reply(ws)
        await ws.send_json({"type": "message", "id": "same", "text": "hello"})
        assert await ws.receive_json(timeout=5) == {"type": "ack", "id": "same", "duplicate": True}
        await assert_silent(ws)
    saved = await runtime.history.after(f"support:web:{session['session_id']}", 0)
    assert len(saved) == 2


async def test_resume_replays_every_reply_missed_while_away(
    app: tuple[Runtime, str], http: aiohttp.ClientSession
) -> None:
    runtime, base = app
    async with http.ws_connect(f"{base}/ws") as ws:
        session = await ws.receive_json()
        await ws.send_json({"type": "message", "id": "one", "text": "first question"})
        first = (await frames_until_reply(ws))[-1]
        await ws.send_json({"type": "message", "id": "two", "text": "second question"})
        assert (await ws.receive_json(timeout=5))["type"] == "ack"
    # Gone before the second reply could be read: it is waiting in the history.
    session_id = f"support:web:{session['session_id']}"
    for _ in range(100):
        if len(await runtime.history.after(session_id, 0)) == 4:
            break
        await asyncio.sleep(0.05)
    async with http.ws_connect(f"{base}/ws?token={session['token']}&after={first['seq']}") as ws:
        again = await ws.receive_json()
        assert again["session_id"] == session["session_id"]
        missed = await ws.receive_json(timeout=5)
        assert missed["type"] == "reply" and missed["reply_to"] == "two" and missed["seq"] == 4
        assert "second question" in missed["text"]
        await assert_silent(ws)
        # The resumed session carries on with the same numbering.
        await ws.send_json({"type": "message", "id": "three", "text": "third"})
        assert (await frames_until_reply(ws))[-1]["seq"] == 6
    async with http.ws_connect(f"{base}/ws?token={again['token']}&after=0") as ws:
        await ws.receive_json()
        replayed = [await ws.receive_json(timeout=5) for _ in range(3)]
        assert [f["reply_to"] for f in replayed] == ["one", "two", "three"]


async def test_a_resume_replays_only_the_newest_replies_it_missed(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running_app(make_settings(tmp_path, web={"resume_replies": 2})) as (_, base):
        async with http.ws_connect(f"{base}/ws") as ws:
            session = await ws.receive_json()
            for n in range(4):
                await ws.send_json({"type": "message", "id": f"m{n}", "text": f"question {n}"})
                await frames_until_reply(ws)
        async with http.ws_connect(f"{base}/ws?token={session['token']}&after=0") as ws:
            await ws.receive_json()
            replayed = [await ws.receive_json(timeout=5) for _ in range(2)]
            assert [(f["reply_to"], f["seq"]) for f in replayed] == [("m2", 6), ("m3", 8)]
            await assert_silent(ws)


@pytest.mark.parametrize(
    "token",
    ["", "garbage", "eyJzIjoiYWJjIn0.forgedsignature", "a.b.c", "é.ü", "eyJzIjoiYWJjIn0.sïgnature"],
)
async def test_a_forged_or_malformed_token_gets_a_fresh_session(
    app: tuple[Runtime, str], http: aiohttp.ClientSession, token: str
) -> None:
    _, base = app
    async with http.ws_connect(f"{base}/ws") as ws:
        victim = await ws.receive_json()
    async with http.ws_connect(f"{base}/ws", params={"token": token, "after": "0"}) as ws:
        fresh = await ws.receive_json()
        assert fresh["type"] == "session" and fresh["session_id"] != victim["session_id"]
        await assert_silent(ws, 0.1)


async def test_a_token_for_another_session_cannot_be_edited_into_the_victims(
    app: tuple[Runtime, str], http: aiohttp.ClientSession
) -> None:
    _, base = app
    async with http.ws_connect(f"{base}/ws") as ws:
        victim = await ws.receive_json()
        await ws.send_json({"type": "message", "id": "v", "text": "my secret order number is 1234"})
        await frames_until_reply(ws)
    async with http.ws_connect(f"{base}/ws") as ws:
        attacker = await ws.receive_json()
    _, mac = attacker["token"].split(".")
    forged_payload = base64.urlsafe_b64encode(
        json.dumps({"s": victim["session_id"], "b": "support", "e": 4102444800}).encode()
    ).rstrip(b"=")
    async with http.ws_connect(f"{base}/ws", params={"token": f"{forged_payload.decode()}.{mac}", "after": "0"}) as ws:
        fresh = await ws.receive_json()
        assert fresh["session_id"] not in (victim["session_id"], attacker["session_id"])
        await assert_silent(ws)


@pytest.mark.parametrize("signed_with", ["the server secret", "the API callback key"])
async def test_a_token_signed_with_any_other_key_gets_a_fresh_session(
    tmp_path: Path, http: aiohttp.ClientSession, signed_with: str
) -> None:
    """Whoever can verify API callbacks holds the callback key; it must not mint widget tokens."""
    settings = make_settings(tmp_path, api={"keys": ["k"]})  # callbacks signed with the derived key
    runtime = await Runtime.from_settings(settings)
    key = runtime.secret if signed_with == "the server secret" else callback_signing_key(settings, runtime.secret)
    async with running_app(settings, runtime) as (_, base):
        async with http.ws_connect(f"{base}/ws") as ws:
            victim = await ws.receive_json()
        forged = SessionTokens(key, ttl_seconds=3600).sign(WebSession(victim["session_id"], "support", 4102444800))
        async with http.ws_connect(f"{base}/ws", params={"token": forged, "after": "0"}) as ws:
            fresh = await ws.receive_json()
            assert fresh["session_id"] != victim["session_id"]
        # The token the server issued still resumes: only foreign keys are refused.
        async with http.ws_connect(f"{base}/ws", params={"token": victim["token"], "after": "0"}) as ws:
            assert (await ws.receive_json())["session_id"] == victim["session_id"]


async def test_an_expired_token_gets_a_fresh_session(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    settings = make_settings(tmp_path)
    settings.web.token_ttl_seconds = 60
    runtime = await Runtime.from_settings(settings)
    key = derive_key(runtime.secret, WEB_SESSION_TOKENS)
    expired = SessionTokens(key, ttl_seconds=60).sign(WebSession("old-session", "support", 1000))
    async with (
        running_app(settings, runtime) as (_, base),
        http.ws_connect(f"{base}/ws?token={expired}") as ws,
    ):
        fresh = await ws.receive_json()
        assert fresh["session_id"] != "old-session"


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json at all", "bad_json"),
        ("[1, 2, 3]", "bad_json"),
        ('{"type": "dance"}', "unknown_type"),
        ('{"type": "message", "text": "no id"}', "bad_id"),
        ('{"type": "message", "id": "e1", "text": ""}', "empty_text"),
        ('{"type": "message", "id": "e2", "text": "  \\n\\t "}', "empty_text"),
        ('{"type": "message", "id": "e3", "text": 42}', "bad_type"),
        ('{"type": "message", "id": "e5", "text": ["hi"]}', "bad_type"),
        (json.dumps({"type": "message", "id": "e4", "text": "x" * 4001}), "text_too_long"),
    ],
)
async def test_bad_frames_get_an_error_frame_and_the_connection_stays_usable(
    app: tuple[Runtime, str], http: aiohttp.ClientSession, frame: str, code: str
) -> None:
    runtime, base = app
    async with http.ws_connect(f"{base}/ws") as ws:
        session = await ws.receive_json()
        await ws.send_str(frame)
        error = await ws.receive_json(timeout=5)
        assert error["type"] == "error" and error["code"] == code and error["message"]
        await ws.send_json({"type": "message", "id": "ok", "text": "still there?"})
        assert (await frames_until_reply(ws))[-1]["type"] == "reply"
    # Rejected frames were never processed: only the good message and its reply are saved.
    assert len(await runtime.history.after(f"support:web:{session['session_id']}", 0)) == 2


async def test_binary_frames_get_an_error_frame(app: tuple[Runtime, str], http: aiohttp.ClientSession) -> None:
    _, base = app
    async with http.ws_connect(f"{base}/ws") as ws:
        await ws.receive_json()
        await ws.send_bytes(b"\x00\x01")
        assert (await ws.receive_json(timeout=5))["code"] == "binary_not_supported"


async def test_an_oversized_frame_closes_with_1009_and_the_server_carries_on(
    app: tuple[Runtime, str], http: aiohttp.ClientSession
) -> None:
    _, base = app
    async with http.ws_connect(f"{base}/ws") as ws:
        await ws.receive_json()
        await ws.send_str(json.dumps({"type": "message", "id": "big", "text": "x" * 17_000}))
        closing = await ws.receive(timeout=5)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
        assert ws.close_code == 1009
    async with http.ws_connect(f"{base}/ws") as ws:
        await ws.receive_json()
        await ws.send_json({"type": "message", "id": "after", "text": "hello again"})
        assert (await frames_until_reply(ws))[-1]["type"] == "reply"


async def test_every_accepted_message_gets_exactly_one_reply_in_order(
    app: tuple[Runtime, str], http: aiohttp.ClientSession
) -> None:
    _, base = app
    async with http.ws_connect(f"{base}/ws") as ws:
        await ws.receive_json()
        for i in range(10):
            await ws.send_json({"type": "message", "id": f"m{i}", "text": f"message number {i}"})
        replies: list[dict[str, Any]] = []
        acks = 0
        while len(replies) < 10:
            frame = await ws.receive_json(timeout=10)
            acks += frame["type"] == "ack"
            if frame["type"] == "reply":
                replies.append(frame)
        assert acks == 10
        assert [r["reply_to"] for r in replies] == [f"m{i}" for i in range(10)]
        assert [r["seq"] for r in replies] == list(range(2, 21, 2))
        await assert_silent(ws)


async def test_the_rate_limit_notice_arrives_as_a_reply(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    bots = tmp_path / "bots"
    write_bot(bots, limits={"messages_per_minute": 1})
    async with (
        running_app(make_settings(tmp_path, bots_dir=bots)) as (_, base),
        http.ws_connect(f"{base}/ws") as ws,
    ):
        await ws.receive_json()
        await ws.send_json({"type": "message", "id": "a", "text": "one"})
        assert "offline mode" in (await frames_until_reply(ws))[-1]["text"]
        await ws.send_json({"type": "message", "id": "b", "text": "two"})
        notice = (await frames_until_reply(ws))[-1]
        assert notice["reply_to"] == "b" and "Please try again in about 60 seconds" in notice["text"]


async def test_unknown_bot_is_a_404_and_a_foreign_origin_a_403(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    settings = make_settings(tmp_path)
    settings.web.allowed_origins = ["https://shop.example.com"]
    async with running_app(settings) as (_, base):
        for path in ("/ws?bot=nope", "/?bot=nope"):
            async with http.get(f"{base}{path}") as response:
                assert response.status == 404
                assert (await response.json())["error"] == "unknown_bot"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(f"{base}/ws", origin="https://evil.example.net")
        assert refused.value.status == 403
        async with http.ws_connect(f"{base}/ws", origin="https://shop.example.com") as ws:
            assert (await ws.receive_json())["type"] == "session"


async def test_demo_page_embeds_the_widget_and_health_endpoints_answer(
    app: tuple[Runtime, str], http: aiohttp.ClientSession
) -> None:
    _, base = app
    async with http.get(f"{base}/") as response:
        assert response.status == 200
        page = await response.text()
        assert 'src="/widget.js"' in page and 'data-bot="support"' in page
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    async with http.get(f"{base}/widget.js") as response:
        assert response.status == 200
        assert response.content_type == "application/javascript"
        assert "WebSocket" in await response.text()
    async with http.get(f"{base}/healthz") as response:
        assert response.status == 200 and (await response.json())["status"] == "ok"
    async with http.get(f"{base}/readyz") as response:
        body = await response.json()
        assert response.status == 200 and body["checks"] == {"sessions": "ok", "history": "ok"}


async def test_readyz_reports_an_unreachable_redis(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    async with (
        running_app(make_settings(tmp_path, redis_url=f"redis://127.0.0.1:{closed_port}/0")) as (
            _,
            base,
        ),
        http.get(f"{base}/readyz") as response,
    ):
        body = await response.json()
        assert response.status == 503
        assert body["checks"]["history"] == "ok"
        assert body["checks"]["sessions"].startswith("unavailable (Redis)")
        # The route is public: it names the kind of store, never where it is.
        assert str(closed_port) not in json.dumps(body) and "127.0.0.1" not in json.dumps(body)


async def test_metrics_count_turns_deliveries_and_the_backlog(
    app: tuple[Runtime, str], http: aiohttp.ClientSession
) -> None:
    runtime, base = app
    async with http.ws_connect(f"{base}/ws") as ws:
        await ws.receive_json()
        await ws.send_json({"type": "message", "id": "m", "text": "count me"})
        await frames_until_reply(ws)
    # The bus entry is acknowledged once the turn's follow-up (remembering facts) is done too.
    for _ in range(100):
        if await runtime.bus.pending() == 0:
            break
        await asyncio.sleep(0.05)
    async with http.get(f"{base}/metrics") as response:
        assert response.status == 200
        assert response.content_type == "text/plain"
        text = await response.text()
    assert 'relaybot_turns_total{bot="support",channel="web",outcome="answered"} 1.0' in text
    assert 'relaybot_deliveries_total{channel="web",status="sent"} 1.0' in text
    assert 'relaybot_queue_pending{queue="bus"} 0.0' in text
    assert 'relaybot_turn_latency_seconds_count{channel="web"} 1.0' in text


def _read_server_frame(sock: socket.socket) -> str:
    """One unmasked text frame from a raw socket (what a server sends)."""

    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    _, length = exactly(2)
    if length == 126:
        length = int.from_bytes(exactly(2), "big")
    elif length == 127:
        length = int.from_bytes(exactly(8), "big")
    return exactly(length).decode()


async def test_a_client_that_stops_reading_is_dropped_without_delaying_anyone_else(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    settings = make_settings(tmp_path, web={"send_timeout_seconds": 1.0})
    async with running_app(settings) as (runtime, base):
        port = int(base.rsplit(":", 1)[1])
        # The stuck client: a real WebSocket handshake, one frame read, then it never reads again.
        stuck = socket.socket()
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.settimeout(10)
        key = base64.b64encode(b"0123456789abcdef").decode()

        def handshake() -> str:
            # Blocking socket calls: in a thread, since the server answers on this event loop.
            stuck.connect(("127.0.0.1", port))
            stuck.sendall(
                f"GET /ws?bot=support HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            head = b""
            while b"\r\n\r\n" not in head:
                head += stuck.recv(1)
            assert b" 101 " in head.split(b"\r\n", 1)[0]
            return _read_server_frame(stuck)

        stuck_session = json.loads(await asyncio.to_thread(handshake))["session_id"]
        web_channel = runtime.channels["web"]

        def fragment(n: int) -> Reply:
            return Reply(
                envelope_id=f"e{n}",
                session_id=f"support:web:{stuck_session}",
                bot="support",
                channel="web",
                reply_to=stuck_session,
                in_reply_to="c1",
                text="x" * 60_000,
                final=False,
            )

        try:
            flood = asyncio.gather(*(web_channel.deliver(fragment(n)) for n in range(100)))
            # Meanwhile a reading client gets its answer as usual.
            async with http.ws_connect(f"{base}/ws") as ws:
                await ws.receive_json()
                started = asyncio.get_running_loop().time()
                await ws.send_json({"type": "message", "id": "m1", "text": "hello there"})
                frames = await frames_until_reply(ws)
                assert frames[-1]["type"] == "reply" and frames[-1]["reply_to"] == "m1"
                assert asyncio.get_running_loop().time() - started < 1.0
            await flood
            # The stuck socket's writer stalls past the send timeout: the server drops it, and
            # nothing more is queued for it (its replies stay in the history for a resume).
            deadline = asyncio.get_running_loop().time() + 5
            while (await web_channel.deliver(fragment(999))).delivered:
                assert asyncio.get_running_loop().time() < deadline, "the stuck client was never dropped"
                await asyncio.sleep(0.1)
        finally:
            stuck.close()


# --- limits at the edge: before anything is queued or stored ------------------------------------------------


async def answered(ws: aiohttp.ClientWebSocketResponse, client_id: str, text: str = "hello") -> dict[str, Any]:
    await ws.send_json({"type": "message", "id": client_id, "text": text})
    return (await frames_until_reply(ws))[-1]


async def test_a_socket_over_its_message_limit_gets_rate_limited_and_nothing_is_stored(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    settings = make_settings(tmp_path, web={"messages_per_minute_per_connection": 2})
    async with running_app(settings) as (runtime, base), http.ws_connect(f"{base}/ws") as ws:
        session = await ws.receive_json()
        assert (await answered(ws, "m1"))["type"] == "reply"
        assert (await answered(ws, "m2"))["type"] == "reply"
        refused = await answered(ws, "m3")
        assert refused["type"] == "error" and refused["code"] == "rate_limited" and refused["id"] == "m3"
        assert 1 <= refused["retry_after"] <= 60
        await assert_silent(ws)
        assert len(await runtime.history.after(f"support:web:{session['session_id']}", 0)) == 4
        assert await runtime.bus.pending() == 0


async def test_new_sessions_are_limited_per_address_and_a_resume_is_not_a_new_session(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    settings = make_settings(tmp_path, web={"new_sessions_per_minute_per_ip": 2})
    async with running_app(settings) as (_, base):
        tokens = []
        for _ in range(2):
            async with http.ws_connect(f"{base}/ws") as ws:
                tokens.append((await ws.receive_json())["token"])
        async with http.ws_connect(f"{base}/ws") as ws:
            refused = await ws.receive_json()
            assert refused["code"] == "rate_limited" and refused["retry_after"] >= 1
            assert (await ws.receive()).type == aiohttp.WSMsgType.CLOSE and ws.close_code == 1013
        async with http.ws_connect(f"{base}/ws", params={"token": tokens[0]}) as ws:
            assert (await ws.receive_json())["type"] == "session"


async def test_messages_are_limited_per_address_across_sockets(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    settings = make_settings(tmp_path, web={"messages_per_minute_per_ip": 3})
    async with (
        running_app(settings) as (_, base),
        http.ws_connect(f"{base}/ws") as first,
        http.ws_connect(f"{base}/ws") as second,
    ):
        await first.receive_json()
        await second.receive_json()
        assert (await answered(first, "a1"))["type"] == "reply"
        assert (await answered(second, "b1"))["type"] == "reply"
        assert (await answered(first, "a2"))["type"] == "reply"
        assert (await answered(second, "b2"))["code"] == "rate_limited"


@pytest.mark.parametrize("trusted", [True, False])
async def test_x_forwarded_for_names_the_client_only_behind_a_trusted_proxy(
    tmp_path: Path, http: aiohttp.ClientSession, trusted: bool
) -> None:
    web = {"new_sessions_per_minute_per_ip": 1, "trusted_proxies": ["127.0.0.0/8"] if trusted else []}
    async with running_app(make_settings(tmp_path, web=web)) as (_, base):
        kinds = []
        for client in ("203.0.113.7", "198.51.100.9"):
            async with http.ws_connect(f"{base}/ws", headers={"X-Forwarded-For": client}) as ws:
                kinds.append((await ws.receive_json())["type"])
    # Behind the proxy, two clients get a session each; without it, the header is anyone's to send.
    assert kinds == (["session", "session"] if trusted else ["session", "error"])


async def test_a_bot_past_its_daily_tokens_takes_no_more_messages(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    bots = tmp_path / "bots"
    write_bot(bots, limits={"bot_tokens_per_day": 1})
    async with running_app(make_settings(tmp_path, bots_dir=bots)) as (_, base):
        async with http.ws_connect(f"{base}/ws") as ws:
            await ws.receive_json()
            assert (await answered(ws, "m1"))["type"] == "reply"  # spends the day's tokens
        async with http.ws_connect(f"{base}/ws") as ws:  # another user of the same bot
            await ws.receive_json()
            refused = await answered(ws, "m2")
            assert refused["code"] == "rate_limited" and "today" in refused["message"]


async def test_a_spent_daily_budget_says_when_it_resets_by_the_runtimes_clock(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    class LateEvening:
        def now(self) -> datetime:
            return datetime(2026, 3, 1, 23, 0, tzinfo=UTC)

    bots = tmp_path / "bots"
    write_bot(bots, limits={"bot_tokens_per_day": 1})
    settings = make_settings(tmp_path, bots_dir=bots)
    runtime = await Runtime.from_settings(settings, clock=LateEvening())
    async with running_app(settings, runtime) as (_, base), http.ws_connect(f"{base}/ws") as ws:
        await ws.receive_json()
        assert (await answered(ws, "m1"))["type"] == "reply"
        refused = await answered(ws, "m2")
    # The budget resets at midnight UTC of the runtime's day: an hour away, whatever the host's time.
    assert refused["code"] == "rate_limited" and refused["retry_after"] == 3600


async def test_metrics_need_the_token_when_one_is_set(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running_app(make_settings(tmp_path, metrics_token="scrape-me")) as (_, base):
        async with http.get(f"{base}/metrics") as response:
            assert response.status == 401 and "RELAYBOT_METRICS_TOKEN" in await response.text()
        async with http.get(f"{base}/metrics", headers={"Authorization": "Bearer wrong"}) as response:
            assert response.status == 401
        assert await raw_get(base, "/metrics", [(b"Authorization", b"Bearer scrape-me\xff")]) == 401  # was a 500
        async with http.get(f"{base}/metrics", headers={"Authorization": "Bearer scrape-me"}) as response:
            assert response.status == 200 and "relaybot_turns_total" in await response.text()


async def test_in_production_metrics_are_closed_until_a_token_is_set(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with running_app(make_settings(tmp_path, env="production")) as (_, base):
        async with http.get(f"{base}/metrics") as response:
            assert response.status == 403 and "RELAYBOT_METRICS_TOKEN" in await response.text()
        async with http.get(f"{base}/healthz") as response:
            assert response.status == 200  # health checks stay open for the load balancer


def test_a_trusted_proxy_that_is_no_address_is_a_clear_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"'proxy\.example\.com' is not an IP address or network"):
        make_settings(tmp_path, web={"trusted_proxies": ["10.0.0.0/8", "proxy.example.com"]})


# --- buttons ---------------------------------------------------------------------------------------


async def test_a_click_on_an_offered_button_is_acked_and_answered_like_a_message(
    app: tuple[Runtime, str], http: aiohttp.ClientSession
) -> None:
    runtime, base = app
    async with http.ws_connect(f"{base}/ws") as ws:
        session = await ws.receive_json()
        greeting = await answered(ws, "c1", "/start")
        assert greeting["actions"] == [
            {"id": "topic.billing", "label": "Billing"},
            {"id": "topic.problem", "label": "A problem"},
            {"id": "topic.cancel", "label": "Cancel"},
        ]
        await ws.send_json({"type": "action", "id": "c2", "action": "topic.cancel"})
        frames = await frames_until_reply(ws)
        assert [f["type"] for f in frames] == ["ack", "reply"] and frames[0] == {"type": "ack", "id": "c2"}
        confirm = frames[-1]
        assert "do you want to cancel it?" in confirm["text"] and confirm["reply_to"] == "c2"
        assert confirm["actions"] == [
            {"id": "cancel.yes", "label": "Yes, cancel it", "style": "danger"},
            {"id": "cancel.no", "label": "No, keep it"},
        ]
        # The same client id again is a resend: acknowledged, not answered twice
        await ws.send_json({"type": "action", "id": "c2", "action": "topic.cancel"})
        assert await ws.receive_json(timeout=5) == {"type": "ack", "id": "c2", "duplicate": True}
        kept = await answered_click(ws, "c3", "cancel.no")
        assert "I've left your subscription as it is" in kept["text"] and "actions" not in kept
    history = await runtime.history.after(f"support:web:{session['session_id']}", 0)
    # The click is recorded as the user saying the label, with the button's id alongside
    assert (history[4].content, history[4].meta.get("action")) == ("No, keep it", "cancel.no")


async def answered_click(ws: aiohttp.ClientWebSocketResponse, client_id: str, action: str) -> dict[str, Any]:
    await ws.send_json({"type": "action", "id": client_id, "action": action})
    return (await frames_until_reply(ws))[-1]


async def test_a_forged_or_stale_action_id_is_an_error_frame_and_nothing_is_queued(
    app: tuple[Runtime, str], http: aiohttp.ClientSession
) -> None:
    runtime, base = app
    async with http.ws_connect(f"{base}/ws") as ws:
        session = await ws.receive_json()
        forged = await answered_click(ws, "f1", "cancel.yes")  # nothing was offered yet
        assert forged["type"] == "error" and forged["code"] == "unknown_action" and forged["id"] == "f1"
        assert "it offered: none" in forged["message"]
        await answered(ws, "c1", "/start")
        stale = await answered_click(ws, "f2", "cancel.yes")  # a button of another reply
        assert stale["code"] == "unknown_action" and "topic.billing, topic.problem, topic.cancel" in stale["message"]
        for frame, code in (
            ({"type": "action", "id": "f3"}, "bad_action"),
            ({"type": "action", "id": "f4", "action": 7}, "bad_action"),
            ({"type": "action", "id": "f5", "action": "x" * 65}, "bad_action"),
        ):
            await ws.send_json(frame)
            error = await ws.receive_json(timeout=5)
            assert error["type"] == "error" and error["code"] == code and error["id"] == frame["id"]
        await assert_silent(ws)
    # Only /start and its reply were stored; nothing else reached the bus
    assert len(await runtime.history.after(f"support:web:{session['session_id']}", 0)) == 2
    assert await runtime.bus.pending() == 0


async def test_a_resume_replays_a_reply_with_its_buttons(app: tuple[Runtime, str], http: aiohttp.ClientSession) -> None:
    _, base = app
    async with http.ws_connect(f"{base}/ws") as ws:
        session = await ws.receive_json()
        greeting = await answered(ws, "c1", "/start")
    async with http.ws_connect(f"{base}/ws?token={session['token']}&after=0") as ws:
        await ws.receive_json()
        replayed = await ws.receive_json(timeout=5)
        assert replayed["seq"] == greeting["seq"] and replayed["actions"] == greeting["actions"]
