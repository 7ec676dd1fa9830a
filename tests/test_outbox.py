"""The production outbox's broadcast path (web replies fan out to every web process), on a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from core.dedupe.redis import RedisDedupeStore
from core.delivery.outbox import QueueOutbox, deliver_topic
from core.delivery.records.redis import RedisDeliveryRecords
from core.envelope import Reply
from core.fanout.redis import RedisFanout
from core.plugins import installed_capabilities
from core.queue.redis import RedisQueue


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(redis_url)
    yield c
    await c.aclose()


def reply(n: int) -> Reply:
    return Reply(
        envelope_id=f"e{n}",
        session_id="support:web:s1",
        bot="support",
        channel="web",
        reply_to="s1",
        text=f"answer {n}",
        dedupe_key=f"support:web:s1:m{n}",
        seq=2 * n,
    )


async def test_a_web_reply_no_process_listens_for_is_recorded_kept_not_sent(client: aioredis.Redis) -> None:
    fanout = RedisFanout(client)
    records = RedisDeliveryRecords(client)
    outbox = QueueOutbox(
        queue_for=lambda channel: RedisQueue(client, f"outbox:{channel}"),
        capabilities=installed_capabilities(),
        fanout=fanout,
        dedupe=RedisDedupeStore(client),
        records=records,
    )
    try:
        nobody = reply(1)
        assert await outbox.submit(nobody)
        record = await records.get(nobody.id)
        assert record is not None and record.status == "kept" and "resume" in (record.error or "")

        got: list[str] = []

        async def web_process(payload: str) -> None:
            got.append(Reply.from_json(payload).text)

        await fanout.subscribe(deliver_topic("web"), web_process)
        await asyncio.sleep(0.2)  # the subscription is in place
        heard = reply(2)
        assert await outbox.submit(heard)
        record = await records.get(heard.id)
        assert record is not None and record.status == "sent"
        for _ in range(50):
            if got:
                break
            await asyncio.sleep(0.02)
        assert got == ["answer 2"]
    finally:
        await fanout.close()
