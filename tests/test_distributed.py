"""The production topology with real processes: `relaybot serve api` + `relaybot worker`s on Redis,
history on PostgreSQL, replies POSTed to a callback server. Nothing lost, nothing answered twice."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from channels.api.channel import key_id
from core.stores.sql import SqlHistoryStore
from tests.fakes.callback_server import CallbackServer, Scripted
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.scripted import Answer
from tests.support.harness import REPO, write_bot
from tests.support.llm import OPENAI_KEY
from tests.support.processes import RelaybotProcess, relaybot_env
from tests.support.servers import PostgresServer, RedisServer, free_port, start_redis

pytestmark = [pytest.mark.postgres, pytest.mark.distributed]

API_KEY = "test-api-key"
CALLBACK_SECRET = "callback-signing-secret"


class Topology:
    def __init__(self, tmp_path: Path, redis_url: str, database_url: str) -> None:
        self.tmp = tmp_path
        bots = tmp_path / "bots"
        write_bot(
            bots,
            limits={"messages_per_minute": 100_000, "messages_per_hour": 100_000},
            knowledge={"enabled": False},  # offline replies echo the message, which these tests check
        )
        self.env = relaybot_env(
            RELAYBOT_BUS="redis",
            REDIS_URL=redis_url,
            DATABASE_URL=database_url,
            RELAYBOT_BOTS_DIR=str(bots),
            RELAYBOT_DATA_DIR=str(tmp_path / "data"),
            RELAYBOT_SECRET_KEY="distributed-test-secret-key",
            RELAYBOT_API__KEYS=json.dumps([API_KEY]),
            RELAYBOT_API__SIGNING_SECRET=CALLBACK_SECRET,
            RELAYBOT_API__ALLOW_PRIVATE_CALLBACKS="true",  # the callback server is on 127.0.0.1
            RELAYBOT_VISIBILITY_TIMEOUT_SECONDS="3",
            RELAYBOT_LOCK_TTL_SECONDS="10",
            RELAYBOT_MAX_ATTEMPTS="5",
            RELAYBOT_SHUTDOWN_GRACE_SECONDS="10",
            RELAYBOT_LOG_LEVEL="WARNING",
        )
        self.processes: list[RelaybotProcess] = []
        self.base = ""

    def _spawn(self, args: list[str], **env: str) -> RelaybotProcess:
        log = self.tmp / f"{args[0]}-{len(self.processes)}.log"
        proc = RelaybotProcess(args, {**self.env, **env}, log)
        self.processes.append(proc)
        return proc

    def serve(self, *channels: str) -> RelaybotProcess:
        port = free_port()
        proc = self._spawn(["serve", *(channels or ("api",)), "--host", "127.0.0.1", "--port", str(port)])
        self.base = f"http://127.0.0.1:{port}"
        proc.wait_http(f"{self.base}/healthz")
        return proc

    def worker(self, **env: str) -> RelaybotProcess:
        proc = self._spawn(["worker"], **env)
        proc.wait_output("relaybot worker is running")
        return proc

    def cli(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "core.cli", *args],
            cwd=REPO,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )

    def stop(self) -> None:
        for proc in self.processes:
            proc.kill()


@pytest.fixture
def topology(tmp_path: Path, redis_url: str, postgres_server: PostgresServer) -> AsyncIterator[Topology]:
    top = Topology(tmp_path, redis_url, postgres_server.url)
    yield top  # type: ignore[misc]
    top.stop()


@pytest.fixture
async def callbacks() -> AsyncIterator[CallbackServer]:
    server = CallbackServer(secret=CALLBACK_SECRET.encode())
    await server.start()
    yield server
    await server.stop()


def conversations(prefix: str, count: int, per: int) -> dict[str, list[str]]:
    return {f"{prefix}{c}": [f"{prefix}{c} message {i}" for i in range(per)] for c in range(count)}


async def post_all(
    base: str, callback_url: str, convs: dict[str, list[str]], *, user: str = "u", pace: float = 0.0
) -> int:
    """Post each conversation's messages in order (conversations in parallel), retrying while the
    service answers 503 or is unreachable, as a client should. Returns how many 503s were seen."""
    unavailable = 0
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {API_KEY}"}) as http:

        async def one(conv: str, texts: list[str]) -> None:
            nonlocal unavailable
            for i, text in enumerate(texts):
                body = {
                    "conversation_id": conv,
                    "user_id": f"{user}-{conv}",
                    "text": text,
                    "message_id": f"{conv}#{i}",
                    "callback_url": callback_url,
                }
                for _ in range(200):
                    try:
                        async with http.post(f"{base}/api/messages", json=body) as response:
                            if response.status in (200, 202):
                                break
                            assert response.status == 503, await response.text()
                            unavailable += 1
                    except aiohttp.ClientConnectionError:
                        unavailable += 1
                    await asyncio.sleep(0.1)
                else:
                    pytest.fail(f"{conv}#{i} was never accepted")
                await asyncio.sleep(pace)

        await asyncio.gather(*(one(c, t) for c, t in convs.items()))
    return unavailable


def assert_each_answered_once_in_order(replies: list[dict[str, Any]], convs: dict[str, list[str]]) -> None:
    seen: dict[str, list[str]] = defaultdict(list)
    for reply in replies:
        conv = reply["in_reply_to"].rsplit("#", 1)[0]
        seen[conv].append(reply["in_reply_to"])
        # The reply answers the message it says it answers (offline mode echoes the text).
        index = int(reply["in_reply_to"].rsplit("#", 1)[1])
        assert convs[conv][index] in reply["text"]
    for conv, texts in convs.items():
        assert seen[conv] == [f"{conv}#{i}" for i in range(len(texts))], conv
    assert len(replies) == sum(len(t) for t in convs.values())


async def settle(callbacks: CallbackServer, expected: int, seconds: float = 1.5) -> None:
    """Give stragglers (a duplicate, if there were one) the time to arrive before counting."""
    await asyncio.sleep(seconds)
    by_message: dict[str, list[str]] = defaultdict(list)
    for reply in callbacks.replies:
        by_message[reply["in_reply_to"]].append(reply["reply_id"])
    twice = {m: ids for m, ids in by_message.items() if len(ids) > 1}
    assert not twice, f"answered more than once (message: reply ids): {dict(list(twice.items())[:5])}"
    assert len(callbacks.replies) == expected
    assert callbacks.bad_signatures == 0


async def test_a_thousand_messages_over_a_hundred_conversations_with_four_workers(
    topology: Topology, callbacks: CallbackServer
) -> None:
    topology.serve()
    workers = [topology.worker() for _ in range(4)]
    convs = conversations("c", 100, 10)
    await post_all(topology.base, callbacks.url, convs)
    replies = await callbacks.wait_for(1000, within=240)
    await settle(callbacks, 1000)
    assert_each_answered_once_in_order(replies, convs)
    assert len(set(callbacks.idempotency_keys)) == 1000
    assert all(w.proc.poll() is None for w in workers)


async def test_a_worker_killed_mid_turn_loses_nothing_and_duplicates_nothing(
    topology: Topology, callbacks: CallbackServer, redis_url: str
) -> None:
    topology.serve()
    victim = topology.worker()
    topology.worker()
    convs = conversations("k", 30, 10)
    posting = asyncio.create_task(post_all(topology.base, callbacks.url, convs))
    client = aioredis.Redis.from_url(redis_url)
    try:
        # Kill it at a moment it holds entries it has not acknowledged: a turn in flight.
        held = 0
        for _ in range(400):
            consumers = await client.xinfo_consumers("relaybot:q:bus", "consumers")
            held = sum(c["pending"] for c in consumers if f"-{victim.pid}-" in c["name"].decode())
            if held:
                break
            await asyncio.sleep(0.01)
        assert held, "the worker never held an entry"
        await asyncio.to_thread(victim.kill)
        await posting
        replies = await callbacks.wait_for(300, within=120)
        await settle(callbacks, 300, seconds=3)  # past the visibility timeout: reclaimed ones arrived
        assert_each_answered_once_in_order(replies, convs)
        assert await client.xlen("relaybot:q:bus") == 0
        # And the transcripts: each message and its answer stored once, in order, even for the
        # turns the dead worker had recorded before it died (they ran again on another worker).
        await assert_each_transcript_once(topology, convs)
    finally:
        await client.aclose()


async def assert_each_transcript_once(topology: Topology, convs: dict[str, list[str]]) -> None:
    history = SqlHistoryStore.from_url(topology.env["DATABASE_URL"])
    try:
        for conv, texts in convs.items():
            stored = await history.after(f"support:api:{key_id(API_KEY.encode())}:{conv}", 0)
            assert [m.content for m in stored if m.role == "user"] == texts, conv
            assert [m.role for m in stored] == ["user", "assistant"] * len(texts), conv
            assert [m.seq for m in stored] == list(range(1, 2 * len(texts) + 1)), conv
    finally:
        await history.close()


async def test_sigterm_lets_a_worker_finish_its_turns(topology: Topology, callbacks: CallbackServer) -> None:
    topology.serve()
    leaving = topology.worker()
    convs = conversations("t", 20, 10)
    posting = asyncio.create_task(post_all(topology.base, callbacks.url, convs))
    await callbacks.wait_for(30, within=60)
    # Blocking process calls run in threads: the callback server shares this event loop.
    await asyncio.to_thread(topology.worker)
    assert await asyncio.to_thread(leaving.terminate) == 0
    assert "Traceback" not in leaving.output()
    await posting
    replies = await callbacks.wait_for(200, within=120)
    await settle(callbacks, 200)
    assert_each_answered_once_in_order(replies, convs)


async def test_a_redis_restart_during_load_is_survived(
    tmp_path: Path, postgres_server: PostgresServer, callbacks: CallbackServer
) -> None:
    # The bus's durability comes from Redis persistence: append-only file, flushed on shutdown.
    durable: RedisServer = start_redis(tmp_path / "redis", appendonly=True)
    topology = Topology(tmp_path, durable.url, postgres_server.url)
    try:
        topology.serve()
        topology.worker()
        topology.worker()
        convs = conversations("r", 10, 20)
        # Paced (about 6 s of posting), so that messages keep arriving while Redis is down and comes
        # back, even when a loaded machine is slow to answer the first ones.
        posting = asyncio.create_task(post_all(topology.base, callbacks.url, convs, pace=0.3))
        await callbacks.wait_for(20, within=60)
        assert not posting.done(), "posting ended before the restart: pace it slower"
        await asyncio.to_thread(durable.restart, 1.5)
        unavailable = await posting
        replies = await callbacks.wait_for(200, within=120)
        await settle(callbacks, 200, seconds=3)
        assert_each_answered_once_in_order(replies, convs)
        assert unavailable > 0, "the restart happened while nobody was posting"
    finally:
        topology.stop()
        durable.stop()


async def test_a_dead_letter_can_be_listed_and_replayed_from_the_cli(
    topology: Topology, callbacks: CallbackServer
) -> None:
    # A deploy where the workers lack a bot the web process already serves.
    write_bot(Path(topology.env["RELAYBOT_BOTS_DIR"]), name="sales")
    topology.serve()
    partial = topology.tmp / "worker-bots"
    write_bot(
        partial,
        limits={"messages_per_minute": 100_000, "messages_per_hour": 100_000},
        knowledge={"enabled": False},  # offline replies echo the message, which these tests check
    )
    broken = topology.worker(RELAYBOT_BOTS_DIR=str(partial))
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {API_KEY}"}) as http:
        body = {
            "bot": "sales",
            "conversation_id": "d1",
            "user_id": "u1",
            "text": "Do you have a discount for schools?",
            "message_id": "d1#0",
            "callback_url": callbacks.url,
        }
        async with http.post(f"{topology.base}/api/messages", json=body) as response:
            assert response.status == 202
    listed: list[dict[str, Any]] = []
    for _ in range(100):
        result = topology.cli("dead-letters", "list")
        assert result.returncode == 0, result.stderr
        listed = [json.loads(line) for line in result.stdout.splitlines()]
        if listed:
            break
        await asyncio.sleep(0.1)
    (dead,) = listed
    assert "no bot named 'sales'" in dead["error"]
    assert dead["payload"]["text"] == "Do you have a discount for schools?"
    assert callbacks.replies == []

    broken.terminate()
    topology.worker()  # the fixed deploy
    result = topology.cli("dead-letters", "replay", dead["id"])
    assert result.returncode == 0 and "replayed 1" in result.stdout
    (reply,) = await callbacks.wait_for(1, within=30)
    assert reply["in_reply_to"] == "d1#0" and "discount for schools" in reply["text"]
    assert topology.cli("dead-letters", "list").stdout == ""
    missing = topology.cli("dead-letters", "replay", "1-1")
    assert missing.returncode == 1 and "no dead letter '1-1'" in missing.stderr


def test_worker_and_serve_refuse_to_run_without_a_shared_bus(tmp_path: Path) -> None:
    env = relaybot_env(RELAYBOT_DATA_DIR=str(tmp_path))
    for command in (["worker"], ["serve", "web"]):
        result = subprocess.run(
            [sys.executable, "-m", "core.cli", *command], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 2
        assert "RELAYBOT_BUS=redis" in result.stderr


async def test_the_web_widget_works_with_separate_web_processes_and_workers(topology: Topology) -> None:
    topology.serve("web")
    first = topology.base
    topology.serve("web")
    second = topology.base
    # A model that takes its time, so the answer streams: each word 30 ms after the last.
    async with FakeOpenAI() as openai_fake, aiohttp.ClientSession() as http:
        openai_fake.always(None, Answer(echo=True, token_delay=0.03))
        topology.worker(OPENAI_API_KEY=OPENAI_KEY, OPENAI_BASE_URL=openai_fake.base_url)
        async with http.ws_connect(f"{first}/ws?bot=support") as ws:
            session = await ws.receive_json()
            await ws.send_json({"type": "message", "id": "w1", "text": "Is there a mobile app?"})
            frames = []
            while not frames or frames[-1]["type"] != "reply":
                frames.append(await ws.receive_json(timeout=30))
            assert frames[0] == {"type": "ack", "id": "w1"}
            deltas = [f["text"] for f in frames if f["type"] == "delta"]
            reply = frames[-1]
            # Streamed from the worker process, through Redis, to the web process holding the socket.
            assert deltas and "".join(deltas).strip() == reply["text"]
            assert "Is there a mobile app?" in reply["text"] and reply["seq"] == 2
        # Any web process can resume the session: the token is signed with the shared secret and
        # the replies come from the shared history.
        async with http.ws_connect(f"{second}/ws?bot=support&token={session['token']}&after=0") as ws:
            resumed = await ws.receive_json()
            assert resumed["session_id"] == session["session_id"]
            replayed = await ws.receive_json(timeout=10)
            assert replayed == {"type": "reply", "reply_to": "w1", "seq": 2, "text": reply["text"]}
            await ws.send_json({"type": "message", "id": "w2", "text": "And a desktop one?"})
            while (frame := await ws.receive_json(timeout=30))["type"] != "reply":
                pass
            assert frame["reply_to"] == "w2" and frame["seq"] == 4


async def test_a_callback_answering_429_then_500_then_200_gets_its_reply_once(
    topology: Topology, callbacks: CallbackServer, redis_url: str
) -> None:
    topology.serve()
    topology.worker()
    callbacks.script = [Scripted(429, retry_after="1"), Scripted(500)]
    convs = {"q": ["first", "second"]}
    await post_all(topology.base, callbacks.url, convs)
    replies = await callbacks.wait_for(2, within=60)
    await settle(callbacks, 2, seconds=2)
    assert_each_answered_once_in_order(replies, convs)
    assert callbacks.requests == 4  # 429, 500, then each reply once
    client = aioredis.Redis.from_url(redis_url)
    try:
        first = json.loads(await client.get(f"relaybot:delivery:{replies[0]['reply_id']}"))
    finally:
        await client.aclose()
    assert first["status"] == "sent" and first["attempts"] == 3
