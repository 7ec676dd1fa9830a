"""The operator console over real HTTP, against the real app: sign-in, the session cookie, CSRF,
the lockout, 401s, what an operator may see, the take race, replies as a person delivered on the
widget and on Telegram (against its fake), hand back, close, search, outbound, and the events
stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis

from core.runtime import Runtime
from core.settings import Settings
from core.stores.base import Summary, UserFact
from tests.fakes.telegram_api import FakeTelegram
from tests.support.harness import make_settings, running_app
from tests.support.servers import free_port, start_redis
from tests.support.telegram_updates import CHAT, SECRET, message_update, telegram_settings
from tests.support.web_frames import frames_until_reply
from tests.test_handoff_channels import PERSON_SAYS, SUPPORT_ACK, recorded, until, waiting_conversation

PASSWORD = "correct horse battery"
ANA, BEN, OTTO = "ana@example.com", "ben@example.com", "otto@example.com"
CONSOLE = {"password_rounds": 4, "lockout_failures": 3, "lockout_failures_per_ip": 50, "lockout_minutes": 1}


def console_settings(tmp_path: Path, **overrides: Any) -> Settings:
    return make_settings(tmp_path, console=CONSOLE, **overrides)


@asynccontextmanager
async def console_app(settings: Settings, heartbeat: float = 0.5) -> AsyncIterator[tuple[Runtime, str]]:
    """The real app with the console mounted, and three operators: Ana and Ben serve every bot,
    Otto only a bot named `other`."""
    runtime = await Runtime.from_settings(settings)
    runtime.mount_console(heartbeat_seconds=heartbeat)
    async with running_app(settings, runtime) as (runtime, base):
        assert runtime.console is not None
        await runtime.console.accounts.add(ANA, PASSWORD)
        await runtime.console.accounts.add(BEN, PASSWORD)
        await runtime.console.accounts.add(OTTO, PASSWORD, bots=["other"])
        yield runtime, base


class Operator:
    """A browser-like client: its own cookie jar, the CSRF token it got at sign-in."""

    def __init__(self, base: str) -> None:
        self.base = base
        # unsafe: the cookie of a server on an IP address (127.0.0.1) is kept too
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.csrf = ""

    async def __aenter__(self) -> Operator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.close()

    async def login(self, email: str, password: str = PASSWORD, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        async with self.http.post(
            f"{self.base}/console/login", json={"email": email, "password": password}, **kwargs
        ) as r:
            body = await r.json()
            if r.status == 200:
                self.csrf = body["csrf"]
            return r.status, body

    async def get(self, path: str, **params: str) -> tuple[int, dict[str, Any]]:
        async with self.http.get(f"{self.base}/console/api/{path}", params=params) as r:
            return r.status, await r.json()

    async def post(self, path: str, csrf: str | None = None, **body: Any) -> tuple[int, dict[str, Any]]:
        headers = {"X-CSRF-Token": self.csrf if csrf is None else csrf}
        async with self.http.post(f"{self.base}/console/api/{path}", json=body, headers=headers) as r:
            return r.status, await r.json()


async def ask_for_a_person(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    await ws.send_json({"type": "message", "id": "c1", "text": "please let me talk to an agent"})
    frames = await frames_until_reply(ws)
    assert frames[-1]["text"] == SUPPORT_ACK
    return frames[-1]


async def test_sign_in_sets_a_strict_http_only_cookie_and_reads_need_it(tmp_path: Path) -> None:
    async with console_app(console_settings(tmp_path)) as (_, base), Operator(base) as ana:
        assert await ana.get("me") == (401, {"error": "signed_out", "message": "sign in first (POST /console/login)"})
        async with ana.http.post(
            f"{base}/console/login", json={"email": " Ana@Example.com", "password": PASSWORD}
        ) as r:
            assert r.status == 200
            cookie = r.headers["Set-Cookie"]
            body = await r.json()
        assert body["email"] == ANA and body["bots"] is None and len(body["csrf"]) >= 40
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
        assert "Secure" not in cookie  # plain http on a laptop: a Secure cookie would never come back
        status, me = await ana.get("me")
        assert status == 200 and me["email"] == ANA and me["csrf"] == body["csrf"]
        for path in ("queue", "transcript", "search"):
            async with aiohttp.ClientSession() as stranger, stranger.get(f"{base}/console/api/{path}") as r:
                assert r.status == 401
        async with aiohttp.ClientSession() as stranger, stranger.get(f"{base}/console/api/events") as r:
            assert r.status == 401

    # Behind a TLS-terminating proxy the cookie is Secure.
    async with (
        console_app(console_settings(tmp_path / "prod")) as (_, base),
        Operator(base) as ana,
        ana.http.post(
            f"{base}/console/login", json={"email": ANA, "password": PASSWORD}, headers={"X-Forwarded-Proto": "https"}
        ) as r,
    ):
        assert r.status == 200 and "Secure" in r.headers["Set-Cookie"]


async def test_the_sign_in_form_redirects_to_the_console(tmp_path: Path) -> None:
    async with console_app(console_settings(tmp_path)) as (_, base), Operator(base) as ana:
        async with ana.http.post(
            f"{base}/console/login", data={"email": ANA, "password": PASSWORD}, allow_redirects=False
        ) as r:
            assert r.status == 303 and r.headers["Location"] == "/console/"
        assert (await ana.get("me"))[0] == 200
        # Another site's page cannot sign a browser in (login CSRF).
        async with ana.http.post(
            f"{base}/console/login",
            data={"email": ANA, "password": PASSWORD},
            headers={"Origin": "https://evil.example"},
            allow_redirects=False,
        ) as r:
            assert r.status == 403
            assert (await r.json())["error"] == "cross_site"


@pytest.fixture(params=["memory", "redis"])
def store_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Sign-ins and the lockout in memory, or in Redis (where a real server keeps them)."""
    if request.param == "memory":
        return console_settings(tmp_path)
    return console_settings(tmp_path, redis_url=request.getfixturevalue("redis_url"))


async def test_wrong_passwords_lock_the_account_out(store_settings: Settings) -> None:
    async with console_app(store_settings) as (_, base), Operator(base) as ana:
        assert await ana.login(ANA, "not the password") == (
            401,
            {"error": "wrong_credentials", "message": "wrong email or password"},
        )
        assert (await ana.login("nobody@example.com"))[0] == 401
        assert (await ana.login(ANA, "still wrong!"))[0] == 401
        async with ana.http.post(f"{base}/console/login", json={"email": ANA, "password": "third time"}) as r:
            # The third failure for the account locks it.
            assert r.status == 429
            assert 0 < int(r.headers["Retry-After"]) <= 60
            assert (await r.json())["message"] == "too many failed sign-ins: try again in 1 minute"
        # Even the right password is refused while locked; another account is not.
        assert (await ana.login(ANA))[0] == 429
        assert (await ana.login(BEN))[0] == 200


async def test_sign_in_answers_503_while_the_session_store_is_unreachable(tmp_path: Path) -> None:
    nobody = f"redis://127.0.0.1:{free_port()}"  # nothing listens there
    async with console_app(console_settings(tmp_path, redis_url=nobody)) as (_, base), Operator(base) as ana:
        status, body = await ana.login(ANA)
        assert status == 503 and body["error"] == "unavailable"


async def test_changes_need_the_csrf_token_and_sign_out_ends_the_session(store_settings: Settings) -> None:
    async with console_app(store_settings) as (_, base), Operator(base) as ana:
        await ana.login(ANA)
        session_id = "support:web:whatever"
        for csrf in ("", "forged-token"):
            status, body = await ana.post("take", csrf=csrf, session_id=session_id)
            assert status == 403 and body["error"] == "csrf"
            assert "X-CSRF-Token" in body["message"]
        async with ana.http.post(f"{base}/console/logout") as r:
            assert r.status == 403
        async with ana.http.post(f"{base}/console/logout", headers={"X-CSRF-Token": ana.csrf}) as r:
            assert r.status == 200
        assert (await ana.get("me"))[0] == 401
        assert (await ana.post("take", session_id=session_id))[0] == 401


async def test_removing_an_operator_ends_their_sign_in(tmp_path: Path) -> None:
    async with console_app(console_settings(tmp_path)) as (runtime, base), Operator(base) as ben:
        assert (await ben.login(BEN))[0] == 200
        assert runtime.console is not None and await runtime.console.accounts.remove(BEN)
        gone = {"error": "signed_out", "message": "this operator account no longer exists"}
        assert await ben.get("me") == (401, gone)
        assert (await ben.login(BEN))[0] == 401


async def test_two_operators_race_to_take_one_wins_and_replies_reach_the_widget(tmp_path: Path) -> None:
    async with (
        console_app(console_settings(tmp_path)) as (runtime, base),
        Operator(base) as ana,
        Operator(base) as ben,
        Operator(base) as otto,
        aiohttp.ClientSession() as user,
    ):
        for operator, email in ((ana, ANA), (ben, BEN), (otto, OTTO)):
            assert (await operator.login(email))[0] == 200
        async with user.ws_connect(f"{base}/ws?bot=support") as ws:
            hello = await ws.receive_json()
            ack = await ask_for_a_person(ws)
            session_id = f"support:web:{hello['session_id']}"
            await waiting_conversation(runtime)
            # What the bot knows of the user and the conversation comes with the queue.
            await runtime.history.remember(
                bot="support", user_id=f"web:{hello['session_id']}", facts=[UserFact(key="plan", value="Pro")]
            )
            await runtime.history.save_summary(
                session_id, Summary(text="The user wants a refund for a double charge.", through_seq=1)
            )

            status, queue = await ana.get("queue")
            assert status == 200 and queue["live"] == []
            (waiting,) = queue["waiting"]
            assert waiting["session_id"] == session_id and waiting["channel"] == "web"
            assert waiting["state"] == "pending_human" and waiting["wait_seconds"] >= 0
            assert waiting["summary"] == "The user wants a refund for a double charge."
            assert waiting["facts"] == {"plan": "Pro"}
            assert waiting["reason"] == "please let me talk to an agent"
            # Otto serves another bot: he sees nothing of support's and can do nothing to it.
            assert (await otto.get("queue"))[1]["waiting"] == []
            assert (await otto.get("transcript", session_id=session_id))[0] == 404
            assert (await otto.post("take", session_id=session_id))[0] == 404

            (a, b) = await asyncio.gather(
                ana.post("take", session_id=session_id), ben.post("take", session_id=session_id)
            )
            assert sorted([a[0], b[0]]) == [200, 409]
            winner, loser = (ana, ben) if a[0] == 200 else (ben, ana)
            winner_email = ANA if winner is ana else BEN
            refusal = (b if a[0] == 200 else a)[1]
            assert refusal["error"] == "conflict" and winner_email in refusal["message"]
            status, queue = await loser.get("queue")
            assert queue["waiting"] == [] and queue["live"][0]["operator"] == winner_email

            # Only the holder may reply.
            status, body = await loser.post("reply", session_id=session_id, text="me too")
            assert status == 409 and body["error"] == "not_held"
            status, body = await winner.post("reply", session_id=session_id, text=PERSON_SAYS)
            assert status == 200 and body["message"]["author"] == winner_email
            frame = await ws.receive_json(timeout=5)
            assert frame["type"] == "reply" and frame["text"] == PERSON_SAYS and frame["seq"] > ack["seq"]

            await ws.send_json({"type": "message", "id": "c2", "text": "thanks!"})
            assert (await ws.receive_json(timeout=5)) == {"type": "ack", "id": "c2"}
            await recorded(runtime, session_id, "thanks!")
            status, transcript = await winner.get("transcript", session_id=session_id)
            assert status == 200 and transcript["state"] == "human"
            said = [(m["author"], m["text"]) for m in transcript["messages"] if m["author"] != "system"]
            assert said[-3:] == [("bot", SUPPORT_ACK), (winner_email, PERSON_SAYS), ("user", "thanks!")]

            assert (await winner.post("hand-back", session_id=session_id)) == (200, {"state": "bot"})
            queue = (await winner.get("queue"))[1]
            assert (queue["waiting"], queue["live"]) == ([], [])
            await ws.send_json({"type": "message", "id": "c3", "text": "How do I export my tasks?"})
            answered = await frames_until_reply(ws)
            assert "export" in answered[-1]["text"].lower()

            # Taken again from the bot (a search result, say), then closed.
            assert (await loser.post("take", session_id=session_id))[0] == 200
            assert (await loser.post("close", session_id=session_id)) == (200, {"state": "bot"})
            status, transcript = await loser.get("transcript", session_id=session_id)
            assert transcript["state"] == "bot"
            assert transcript["messages"][-1]["text"].endswith("closed the conversation")


async def test_replies_as_a_person_reach_telegram(tmp_path: Path) -> None:
    async with (
        FakeTelegram() as fake,
        console_app(telegram_settings(tmp_path, fake, console=CONSOLE)) as (runtime, base),
        Operator(base) as ana,
    ):
        headers = {"Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": SECRET}
        body = json.dumps(message_update("I need to talk to a human about a refund", message_id=1))
        async with aiohttp.ClientSession() as http, http.post(f"{base}/telegram/webhook", data=body, headers=headers):
            pass
        view = await waiting_conversation(runtime)
        await fake.wait_for(lambda: len(fake.chat(CHAT)) >= 1)
        await ana.login(ANA)
        assert (await ana.post("take", session_id=view.session_id))[0] == 200
        assert (await ana.post("reply", session_id=view.session_id, text=PERSON_SAYS))[0] == 200
        await fake.wait_for(lambda: len(fake.chat(CHAT)) >= 2)
        # Through Telegram's own formatting: the Markdown became HTML.
        assert "<b>Ana</b>" in fake.chat(CHAT)[1].text
        assert fake.shown(CHAT)[1] == "Hi, I'm Ana from support: your refund is on its way."


async def read_events(response: aiohttp.ClientResponse, into: list[tuple[str, dict[str, Any]]]) -> None:
    kind = ""
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            into.append((kind, json.loads(line[6:])))


async def test_the_events_stream_pushes_what_happens_to_the_operators_bots(tmp_path: Path) -> None:
    # A long heartbeat: an event that waited for the next one would miss the test's deadlines.
    async with (
        console_app(console_settings(tmp_path), heartbeat=30) as (runtime, base),
        Operator(base) as ana,
        Operator(base) as otto,
        aiohttp.ClientSession() as user,
    ):
        await ana.login(ANA)
        await otto.login(OTTO)
        seen: list[tuple[str, dict[str, Any]]] = []
        otto_seen: list[tuple[str, dict[str, Any]]] = []
        async with (
            ana.http.get(f"{base}/console/api/events") as stream,
            otto.http.get(f"{base}/console/api/events") as otto_stream,
        ):
            assert stream.status == 200 and stream.headers["Content-Type"] == "text/event-stream"
            readers = [
                asyncio.create_task(read_events(stream, seen)),
                asyncio.create_task(read_events(otto_stream, otto_seen)),
            ]
            try:
                await until(lambda: holds(bool(seen) and bool(otto_seen)), within=10)
                assert seen[0][0] == "ready"
                assert runtime.console is not None and runtime.console.events.open_streams == 2
                async with user.ws_connect(f"{base}/ws?bot=support") as ws:
                    await ws.receive_json()
                    await ask_for_a_person(ws)
                    await until(lambda: holds(any(kind == "requested" for kind, _ in seen)), within=10)
                    (requested,) = [data for kind, data in seen if kind == "requested"]
                    session_id = requested["session_id"]
                    assert requested["conversation"]["state"] == "pending_human"
                    assert requested["conversation"]["channel"] == "web"
                    await ana.post("take", session_id=session_id)
                    await ws.send_json({"type": "message", "id": "c2", "text": "are you there?"})
                    await until(
                        lambda: holds(
                            any(k == "message" and d["message"]["text"] == "are you there?" for k, d in seen)
                        ),
                        within=10,
                    )
                    assert [k for k, _ in seen if k != "message"] == ["ready", "requested", "taken"]
                assert [k for k, _ in otto_seen] == ["ready"]  # nothing of a bot he does not serve
            finally:
                for reader in readers:
                    reader.cancel()
                await asyncio.gather(*readers, return_exceptions=True)


async def test_signing_out_ends_the_events_stream_at_its_next_heartbeat(tmp_path: Path) -> None:
    async with (
        console_app(console_settings(tmp_path), heartbeat=0.3) as (runtime, base),
        Operator(base) as otto,
    ):
        await otto.login(OTTO)
        async with otto.http.get(f"{base}/console/api/events") as stream:
            ended: list[tuple[str, dict[str, Any]]] = []
            reader = asyncio.create_task(read_events(stream, ended))
            await until(lambda: holds(bool(ended)))
            async with otto.http.post(f"{base}/console/logout", headers={"X-CSRF-Token": otto.csrf}) as r:
                assert r.status == 200
            await asyncio.wait_for(reader, 5)
            assert [k for k, _ in ended] == ["ready", "signed_out"]
        assert runtime.console is not None and runtime.console.events.open_streams == 0


async def holds(value: bool) -> bool:
    return value


async def test_search_and_outbound_from_the_console(tmp_path: Path) -> None:
    async with (
        console_app(console_settings(tmp_path)) as (runtime, base),
        Operator(base) as ana,
        Operator(base) as otto,
        aiohttp.ClientSession() as user,
    ):
        await ana.login(ANA)
        await otto.login(OTTO)
        async with user.ws_connect(f"{base}/ws?bot=support") as ws:
            hello = await ws.receive_json()
            session_id = f"support:web:{hello['session_id']}"
            await ws.send_json({"type": "message", "id": "c1", "text": "How do I export my tasks to CSV?"})
            await frames_until_reply(ws)
            await recorded(runtime, session_id, "How do I export my tasks to CSV?")

            status, found = await ana.get("search", text="tasks to csv")
            assert status == 200
            (hit,) = found["results"]
            assert hit["session_id"] == session_id and hit["channel"] == "web"
            assert (await ana.get("search", channel="telegram"))[1]["results"] == []
            assert (await otto.get("search", text="tasks to csv"))[1]["results"] == []
            assert (await ana.get("search"))[0] == 400

            status, sent = await ana.post("outbound", session_id=session_id, text="Did the export work?")
            assert status == 202 and sent["status"] == "queued"
            frame = await ws.receive_json(timeout=5)
            assert frame["type"] == "reply" and frame["text"] == "Did the export work?"
            status, refused = await ana.post("outbound", session_id="support:web:nobody-ever", text="hi")
            assert status == 404 and refused["error"] == "unknown_conversation"
            assert (await ana.post("outbound", session_id=session_id, text="  "))[0] == 400


@pytest.mark.parametrize("path", ["/console", "/console/", "/console/console.js", "/console/console.css"])
async def test_the_page_is_served_by_us(tmp_path: Path, path: str) -> None:
    async with console_app(console_settings(tmp_path)) as (_, base), aiohttp.ClientSession() as http:
        async with http.get(base + path) as r:
            assert r.status == 200
            body = await r.text()
            assert "default-src 'self'" in r.headers["Content-Security-Policy"]
        assert "http://" not in body and "https://" not in body  # nothing loaded from elsewhere


def _answers_ping(url: str) -> bool:
    try:
        with redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


async def test_events_flow_when_redis_was_down_as_the_console_started(tmp_path: Path) -> None:
    server = start_redis(tmp_path / "redis")
    try:
        # Redis goes down for a while; the console starts meanwhile (its subscription fails).
        restarting = asyncio.create_task(asyncio.to_thread(server.restart, 4.0))
        await until(lambda: holds(not _answers_ping(server.url)), within=5)
        async with (
            console_app(console_settings(tmp_path, redis_url=server.url), heartbeat=30) as (_, base),
            Operator(base) as ana,
            aiohttp.ClientSession() as user,
        ):
            await restarting
            assert (await ana.login(ANA))[0] == 200
            seen: list[tuple[str, dict[str, Any]]] = []
            async with ana.http.get(f"{base}/console/api/events") as stream:
                reader = asyncio.create_task(read_events(stream, seen))
                try:
                    await until(lambda: holds(bool(seen)), within=10)
                    async with user.ws_connect(f"{base}/ws?bot=support") as ws:
                        await ws.receive_json()
                        await ask_for_a_person(ws)
                        await until(lambda: holds(any(kind == "requested" for kind, _ in seen)), within=10)
                finally:
                    reader.cancel()
                    await asyncio.gather(reader, return_exceptions=True)
    finally:
        server.stop()
