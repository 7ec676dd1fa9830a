"""The console in the production topology, as real processes on Redis and PostgreSQL:
`relaybot serve console` apart from `relaybot serve web` and a `relaybot worker`. A handoff asked
for on the web process reaches the console's event stream through Redis; the operator's reply goes
out through the web process's outbox to the widget; sign-in sessions live in Redis."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from tests.support.harness import REPO
from tests.support.web_frames import frames_until_reply
from tests.test_console_http import PASSWORD, Operator, holds, read_events
from tests.test_distributed import Topology, topology  # noqa: F401  (the fixture)
from tests.test_handoff_channels import PERSON_SAYS, SUPPORT_ACK, until

pytestmark = [pytest.mark.postgres, pytest.mark.distributed]

ANA = "ana@example.com"


async def test_a_handoff_on_the_web_process_is_served_from_the_console_process(
    topology: Topology,  # noqa: F811
    redis_url: str,
) -> None:
    added = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "core.cli", "operator", "add", ANA, "--password-stdin"],
        input=PASSWORD,
        cwd=REPO,
        env={**topology.env, "RELAYBOT_CONSOLE__PASSWORD_ROUNDS": "4"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert added.returncode == 0, added.stderr
    topology.serve("web")
    web_base = topology.base
    topology.serve("console")
    console_base = topology.base
    topology.worker()
    seen: list[tuple[str, dict[str, Any]]] = []
    async with Operator(console_base) as ana, aiohttp.ClientSession() as user:
        assert (await ana.login(ANA))[0] == 200
        async with (
            ana.http.get(f"{console_base}/console/api/events") as stream,
            ana.http.get(f"{console_base}/console/api/events") as second,
            ana.http.get(f"{console_base}/console/api/events") as third,
        ):
            assert (stream.status, second.status, third.status) == (200, 200, 200)
            reader = asyncio.create_task(read_events(stream, seen))
            try:
                # Three pages open, one Redis subscription: the console process's.
                await until(lambda: holds(bool(seen)))
                client = aioredis.Redis.from_url(redis_url)
                try:
                    assert await client.pubsub_numsub("relaybot:fanout:handoff") == [(b"relaybot:fanout:handoff", 1)]
                finally:
                    await client.aclose()
                async with user.ws_connect(f"{web_base}/ws?bot=support") as ws:
                    hello = await ws.receive_json()
                    session_id = f"support:web:{hello['session_id']}"
                    await ws.send_json({"type": "message", "id": "c1", "text": "please let me talk to an agent"})
                    frames = await frames_until_reply(ws, within=30)
                    assert frames[-1]["text"] == SUPPORT_ACK
                    await until(lambda: holds(any(kind == "requested" for kind, _ in seen)))
                    (requested,) = [data for kind, data in seen if kind == "requested"]
                    assert requested["session_id"] == session_id
                    (waiting,) = (await ana.get("queue"))[1]["waiting"]
                    assert waiting["session_id"] == session_id

                    assert (await ana.post("take", session_id=session_id))[0] == 200
                    assert (await ana.post("reply", session_id=session_id, text=PERSON_SAYS))[0] == 200
                    frame = await ws.receive_json(timeout=15)
                    assert frame["type"] == "reply" and frame["text"] == PERSON_SAYS

                    assert (await ana.post("hand-back", session_id=session_id))[0] == 200
                    await ws.send_json({"type": "message", "id": "c2", "text": "How do I export my tasks?"})
                    answered = await frames_until_reply(ws, within=30)
                    assert answered[-1]["type"] == "reply" and answered[-1]["text"] != SUPPORT_ACK
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
    assert [k for k, _ in seen if k != "message"][:4] == ["ready", "requested", "taken", "handed_back"]
    # The sign-in is in Redis (only its token's hash), so any console process behind a balancer knows it.
    client = aioredis.Redis.from_url(redis_url)
    try:
        keys = [k.decode() async for k in client.scan_iter("relaybot:console:session:*")]
        assert len(keys) == 1 and json.loads(await client.get(keys[0]))["email"] == ANA
    finally:
        await client.aclose()
