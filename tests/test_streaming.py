"""Streaming by editing one message: one poster across processes, throttled edits, a whole ending."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from channels.parts import send_parts
from channels.streaming import CURSOR, EditStreamer
from core.envelope import Reply
from core.errors import DeliveryError
from core.redisio import client_from_url
from core.streams import StreamRegistry
from core.streams.memory import MemoryStreamRegistry
from core.streams.redis import RedisStreamRegistry


class PlatformMessages:
    """Stands in for a platform's post/edit API: keeps every message and every call made to it."""

    def __init__(self) -> None:
        self.messages: dict[str, str] = {}
        self.calls: list[tuple[str, str, str]] = []
        self.failures: list[DeliveryError] = []

    async def post(self, reply: Reply, text: str) -> str:
        ref = f"m{len(self.messages) + 1}"
        self.messages[ref] = text
        self.calls.append(("post", ref, text))
        return ref

    async def edit(self, reply: Reply, message_ref: str, text: str) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.messages[message_ref] = text
        self.calls.append(("edit", message_ref, text))


def fragment(text: str, *, final: bool = False) -> Reply:
    return Reply(envelope_id="e1", session_id="s", bot="b", channel="slack", reply_to="C1", text=text, final=final)


@pytest.fixture(params=["memory", "redis"])
async def registry(request: pytest.FixtureRequest) -> AsyncIterator[StreamRegistry]:
    if request.param == "memory":
        yield MemoryStreamRegistry()
        return
    url = request.getfixturevalue("redis_url")
    client: aioredis.Redis = client_from_url(url)
    yield RedisStreamRegistry(client)
    await client.aclose()


async def test_registry_claims_once_and_closes_with_the_final_text(registry: StreamRegistry) -> None:
    assert await registry.claim("r1") is True
    assert await registry.claim("r1") is False
    await registry.set_ref("r1", "ts-1")
    assert (await registry.get("r1")).message_ref == "ts-1"
    before = await registry.close("r1", "the whole answer")
    assert before.message_ref == "ts-1" and not before.closed
    after = await registry.get("r1")
    assert after.closed and after.final_text == "the whole answer"
    assert (await registry.get("unknown")).message_ref is None


async def test_edits_are_throttled_and_the_finish_returns_the_message(registry: StreamRegistry) -> None:
    platform = PlatformMessages()
    streamer = EditStreamer(registry, platform, dialect="mrkdwn", limit=3500, interval=0.2)
    words = [f"w{i} " for i in range(30)]
    for word in words:
        await streamer.fragment(fragment(word))
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)  # the last throttled edit lands
    posts = [c for c in platform.calls if c[0] == "post"]
    edits = [c for c in platform.calls if c[0] == "edit"]
    assert len(posts) == 1
    assert 1 <= len(edits) < len(words) - 1  # throttled: far fewer edits than fragments
    assert platform.messages["m1"] == "".join(words).strip() + CURSOR
    ref = await streamer.finish(fragment("w0 w1 …", final=True), "done")
    assert ref == "m1"
    await streamer.fragment(fragment("late "))
    await asyncio.sleep(0.3)
    assert platform.calls[-1][2] != "late", "a fragment after the finish is dropped"
    assert len(platform.calls) == len(posts) + len(edits)


async def test_only_one_process_shows_a_stream(redis_url: str) -> None:
    clients = [client_from_url(redis_url) for _ in range(2)]
    platform = PlatformMessages()
    streamers = [
        EditStreamer(RedisStreamRegistry(c), platform, dialect="plain", limit=1600, interval=0.1) for c in clients
    ]
    try:
        for word in ("one ", "two ", "three "):
            await asyncio.gather(*(s.fragment(fragment(word)) for s in streamers))
        await asyncio.sleep(0.3)
        assert [c[0] for c in platform.calls].count("post") == 1
        assert platform.messages == {"m1": "one two three" + CURSOR}
        # The final reply may be delivered by the process that did not stream: it finds the message.
        for streamer in streamers:  # whichever process takes the final reply finds the message
            assert await streamer.finish(fragment("one two three!", final=True), "one two three!") == "m1"
    finally:
        for c in clients:
            await c.aclose()


async def test_a_rate_limited_edit_only_delays_the_stream() -> None:
    platform = PlatformMessages()
    streamer = EditStreamer(MemoryStreamRegistry(), platform, dialect="plain", limit=1600, interval=0.05)
    await streamer.fragment(fragment("first "))
    platform.failures.append(DeliveryError("429", retryable=True, retry_after=0.2))
    await streamer.fragment(fragment("second "))
    await asyncio.sleep(0.1)
    assert platform.messages["m1"] == "first" + CURSOR  # the edit failed; nothing broke
    await streamer.fragment(fragment("third"))
    await asyncio.sleep(0.4)
    assert platform.messages["m1"] == "first second third" + CURSOR


async def test_a_long_stream_shows_the_first_part_only() -> None:
    platform = PlatformMessages()
    streamer = EditStreamer(MemoryStreamRegistry(), platform, dialect="plain", limit=100, interval=0.01)
    await streamer.fragment(fragment("word " * 100))
    assert len(platform.messages["m1"]) <= 100


async def test_a_retried_split_reply_resumes_after_the_parts_already_sent(registry: StreamRegistry) -> None:
    posted: list[str] = []
    fail_on = {"part 2"}

    async def post(index: int, text: str) -> str:
        if text in fail_on:
            fail_on.discard(text)
            raise DeliveryError("429", retryable=True, retry_after=1)
        posted.append(text)
        return f"id-{text}"

    parts = ["part 1", "part 2", "part 3"]
    with pytest.raises(DeliveryError):
        await send_parts(registry, "reply-1", parts, post)
    assert await send_parts(registry, "reply-1", parts, post) == ("id-part 1", "id-part 2", "id-part 3")
    assert posted == parts  # part 1 went out once
    assert await send_parts(registry, "reply-2", ["x"], post) == ("id-x",)


async def test_an_answer_finished_before_open_after_is_never_posted_by_the_stream() -> None:
    platform = PlatformMessages()
    registry = MemoryStreamRegistry()
    streamer = EditStreamer(registry, platform, dialect="plain", limit=1600, interval=0.05, open_after=0.3)
    for word in ("quick ", "answer"):
        await streamer.fragment(fragment(word))
    assert await streamer.finish(fragment("quick answer", final=True), "quick answer") is None  # post it anew
    await asyncio.sleep(0.4)
    assert platform.calls == []


async def test_a_slow_answer_goes_up_after_open_after_and_is_edited_on() -> None:
    platform = PlatformMessages()
    registry = MemoryStreamRegistry()
    streamer = EditStreamer(registry, platform, dialect="plain", limit=1600, interval=0.05, open_after=0.2)
    await streamer.fragment(fragment("slow "))
    await asyncio.sleep(0.1)
    assert platform.calls == []  # still inside the wait
    await streamer.fragment(fragment("model "))
    await asyncio.sleep(0.2)
    assert platform.messages == {"m1": "slow model" + CURSOR}  # posted with everything so far
    await streamer.fragment(fragment("talking"))
    await asyncio.sleep(0.2)
    assert platform.messages["m1"] == "slow model talking" + CURSOR
    assert await streamer.finish(fragment("slow model talking", final=True), "slow model talking") == "m1"
