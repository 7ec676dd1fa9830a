"""The ordered queue (memory and Redis Streams) and the consumer that keeps conversations in order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from core.backoff import Backoff
from core.errors import PoisonMessage
from core.queue.base import OrderedQueue, QueueEntry, Start
from core.queue.consumer import OrderedConsumer
from core.queue.memory import MemoryQueue
from core.queue.redis import RedisQueue


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    c = aioredis.Redis.from_url(redis_url)
    yield c
    await c.aclose()


@pytest.fixture(params=["memory", "redis"])
async def queue(request: pytest.FixtureRequest) -> AsyncIterator[OrderedQueue]:
    if request.param == "memory":
        yield MemoryQueue(max_attempts=2)
        return
    c = aioredis.Redis.from_url(request.getfixturevalue("redis_url"))
    yield RedisQueue(c, "test", visibility_timeout=0.3, max_attempts=2, block_seconds=0.05)
    await c.aclose()


async def take(q: OrderedQueue, n: int) -> list[QueueEntry]:
    got: list[QueueEntry] = []
    async with asyncio.timeout(5):
        while len(got) < n:
            got += await q.read(n - len(got))
    return got


async def test_tickets_number_each_partition_in_order_and_add_once_holds(queue: OrderedQueue) -> None:
    assert [await queue.add("a", "a1"), await queue.add("b", "b1"), await queue.add("a", "a2")] == [1, 1, 2]
    assert await queue.add("a", "a3", dedupe_key="k") == 3
    assert await queue.add("a", "a3 again", dedupe_key="k") is None
    entries = await take(queue, 4)
    assert [(e.partition, e.ticket, e.payload) for e in entries] == [
        ("a", 1, "a1"),
        ("b", 1, "b1"),
        ("a", 2, "a2"),
        ("a", 3, "a3"),
    ]
    assert await queue.pending() == 4
    for entry in entries:
        await queue.ack(entry)
    assert await queue.pending() == 0


async def test_progress_never_moves_back_and_a_jump_leaves_the_skipped_tickets_owed(queue: OrderedQueue) -> None:
    for n in range(1, 5):
        await queue.add("p", f"x{n}")
    entries = {entry.ticket: entry for entry in await take(queue, 4)}
    assert await queue.last_done("p") == 0
    await queue.mark_done("p", 1)
    await queue.mark_done("p", 4)  # 2 and 3 never showed up in time
    await queue.mark_done("p", 2)
    assert await queue.last_done("p") == 4
    # 3 was jumped over: it is still owed, and handled late, once; 1 was handled: done.
    assert (await queue.start(entries[3])).state == "late"
    assert await queue.finish(entries[3], handled=True)
    assert (await queue.start(entries[3])).state == "done"
    assert (await queue.start(entries[1])).state == "done"


async def test_dead_letters_keep_the_error_and_can_be_replayed(queue: OrderedQueue) -> None:
    await queue.add("p", "poison")
    (entry,) = await take(queue, 1)
    await queue.fail(entry, "ValueError: bad")
    await queue.dead_letter(entry, "gave up after 2 attempts")
    (dead,) = await queue.dead()
    assert dead.payload == "poison" and dead.partition == "p"
    assert "gave up after 2 attempts" in dead.error
    assert await queue.pending() == 0
    assert await queue.replay(dead.id) is True
    assert await queue.replay(dead.id) is False
    assert await queue.dead() == []
    (again,) = await take(queue, 1)
    assert again.payload == "poison" and again.ticket == 2


async def test_redis_entries_of_a_crashed_consumer_are_taken_over_and_counted(client: aioredis.Redis) -> None:
    options: dict[str, Any] = {"visibility_timeout": 0.3, "claim_ttl": 0.3, "block_seconds": 0.05}
    crashed = RedisQueue(client, "q", consumer="crashed", **options)
    survivor = RedisQueue(client, "q", consumer="survivor", **options)
    await crashed.add("p", "hello")
    (first,) = await take(crashed, 1)
    assert (await crashed.start(first)).attempt == 1  # attempts are counted as an entry is claimed
    # `crashed` never finishes; after the visibility timeout (and its claim's) the survivor gets it.
    await asyncio.sleep(0.4)
    assert await survivor.read(1) == []  # not a new entry...
    (taken,) = await survivor.reclaim(10)  # ...but one to take over
    assert (taken.id, taken.payload) == (first.id, "hello")
    assert await survivor.start(taken, force=True) == Start("run", 0, 2)  # its second attempt
    await survivor.ack(taken)
    assert await survivor.pending() == 0


async def test_redis_touch_keeps_an_entry_and_release_hands_it_over_at_once(client: aioredis.Redis) -> None:
    busy = RedisQueue(client, "q", consumer="busy", visibility_timeout=0.3, block_seconds=0.05)
    other = RedisQueue(client, "q", consumer="other", visibility_timeout=0.3, block_seconds=0.05)
    await busy.add("p", "slow turn")
    (entry,) = await take(busy, 1)
    for _ in range(4):
        await asyncio.sleep(0.15)
        await busy.touch(entry)
    assert await other.reclaim(10) == []  # a touched entry is not taken over
    await busy.release(entry)
    (taken,) = await other.reclaim(10)
    assert taken.id == entry.id and taken.attempt == 1  # giving back is not an attempt


async def run_consumer(q: OrderedQueue, handler: Any, *, count: int, concurrency: int = 4) -> OrderedConsumer:
    consumer = OrderedConsumer(q, handler, name="t", concurrency=concurrency, visibility_timeout=0.3)
    task = asyncio.create_task(consumer.run())
    try:
        async with asyncio.timeout(20):
            while await q.pending() or consumer.in_flight:  # noqa: ASYNC110 - polling a queue in another backend
                await asyncio.sleep(0.02)
    finally:
        await consumer.stop(1)
        await task
    return consumer


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_consumers_keep_each_partition_in_order_and_run_partitions_in_parallel(
    backend: str, request: pytest.FixtureRequest
) -> None:
    if backend == "memory":
        q: OrderedQueue = MemoryQueue()
        c = None
    else:
        c = aioredis.Redis.from_url(request.getfixturevalue("redis_url"))
        q = RedisQueue(c, "order", visibility_timeout=0.3, block_seconds=0.05, claim_ttl=2)
    seen: dict[str, list[int]] = {}
    running: set[str] = set()
    overlap: list[str] = []
    parallel = 0

    async def handler(entry: QueueEntry) -> None:
        nonlocal parallel
        if entry.partition in running:
            overlap.append(entry.partition)
        running.add(entry.partition)
        parallel = max(parallel, len(running))
        await asyncio.sleep(0.01)
        seen.setdefault(entry.partition, []).append(int(entry.payload))
        running.discard(entry.partition)

    for i in range(12):
        for p in ("a", "b", "c"):
            await q.add(p, str(i))
    await run_consumer(q, handler, count=36, concurrency=8)
    assert seen == {p: list(range(12)) for p in ("a", "b", "c")}
    assert overlap == [] and parallel > 1
    if c is not None:
        await c.aclose()


async def test_a_poison_entry_is_dead_lettered_at_once_and_the_partition_moves_on() -> None:
    q = MemoryQueue(max_attempts=5)
    handled: list[str] = []

    async def handler(entry: QueueEntry) -> None:
        if entry.payload == "bad":
            raise PoisonMessage("not an envelope")
        handled.append(entry.payload)

    for payload in ("one", "bad", "three"):
        await q.add("p", payload)
    await run_consumer(q, handler, count=3)
    assert handled == ["one", "three"]
    (dead,) = await q.dead()
    assert dead.payload == "bad" and "not an envelope" in dead.error and dead.attempts == 1


async def test_a_failing_entry_is_retried_then_dead_lettered_in_its_turn() -> None:
    q = MemoryQueue(max_attempts=3)
    calls: list[str] = []

    async def handler(entry: QueueEntry) -> None:
        calls.append(entry.payload)
        if entry.payload == "flaky":
            raise RuntimeError("provider down")

    for payload in ("first", "flaky", "last"):
        await q.add("p", payload)
    await run_consumer(q, handler, count=3)
    assert calls == ["first", "flaky", "flaky", "flaky", "last"]
    (dead,) = await q.dead()
    assert "gave up after 3 attempts" in dead.error and "provider down" in dead.error


async def test_a_full_consumer_still_takes_over_the_predecessors_its_entries_wait_for(
    client: aioredis.Redis,
) -> None:
    # A crashed consumer holds ticket 1 of a conversation; the survivor has read tickets 2..n and
    # they fill its whole read-ahead, waiting for 1. It must still take 1 over, or wait forever.
    crashed = RedisQueue(client, "q", consumer="crashed", visibility_timeout=0.3, block_seconds=0.05)
    survivor = RedisQueue(client, "q", consumer="survivor", visibility_timeout=0.3, block_seconds=0.05)
    for i in range(10):
        await crashed.add("p", str(i))
    assert len(await crashed.read(1)) == 1  # ticket 1, never acknowledged
    handled: list[str] = []

    async def handler(entry: QueueEntry) -> None:
        handled.append(entry.payload)

    # One handler slot reads ahead 4 entries: fewer than the 9 waiting for ticket 1.
    consumer = OrderedConsumer(survivor, handler, name="t", concurrency=1, visibility_timeout=0.3)
    task = asyncio.create_task(consumer.run())
    try:
        async with asyncio.timeout(15):
            while len(handled) < 10:  # noqa: ASYNC110 - the consumer runs in its own task
                await asyncio.sleep(0.05)
    finally:
        await consumer.stop(1)
        await task
    assert handled == [str(i) for i in range(10)]


async def test_entries_handled_for_longer_than_the_visibility_timeout_are_handled_once(
    redis_url: str,
) -> None:
    """Two consumers on one Redis queue; each handler runs for 4 visibility timeouts. The
    keeper touches what it holds, and the claim and tickets keep a taken-over copy from running."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        handled: list[tuple[str, str]] = []

        def slow(name: str) -> Any:
            async def handler(entry: QueueEntry) -> None:
                handled.append((name, entry.payload))
                await asyncio.sleep(1.2)

            return handler

        consumers = []
        for name in ("a", "b"):
            q = RedisQueue(client, "slow", consumer=name, visibility_timeout=0.3, block_seconds=0.05, max_attempts=2)
            consumers.append(OrderedConsumer(q, slow(name), name="t", visibility_timeout=0.3))
        for i in range(4):
            await q.add(f"p{i}", str(i))
        tasks = [asyncio.create_task(c.run()) for c in consumers]
        async with asyncio.timeout(20):
            while await q.pending():  # noqa: ASYNC110 - polling a queue in another backend
                await asyncio.sleep(0.05)
        for c in consumers:
            await c.stop(1)
        await asyncio.gather(*tasks)
        assert sorted(payload for _, payload in handled) == ["0", "1", "2", "3"], handled
        # Taken over again and again, an entry would count attempts and end in the dead letters.
        assert await q.dead() == []
    finally:
        await client.aclose()


async def test_an_entry_waiting_on_another_process_starts_when_notified_not_on_a_poll(redis_url: str) -> None:
    """Ticket 2 waits in consumer B while "another process" (a second queue client) holds
    ticket 1. When that process marks 1 done, B starts 2 on the notice, well before the
    once-a-second re-check that only covers lost notices."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        other = RedisQueue(client, "notify", consumer="other", block_seconds=0.05)
        mine = RedisQueue(client, "notify", consumer="mine", block_seconds=0.05)
        await other.add("p", "first")
        [first] = await other.read(10)
        await other.add("p", "second")
        started: asyncio.Future[float] = asyncio.get_running_loop().create_future()

        async def handler(entry: QueueEntry) -> None:
            started.set_result(asyncio.get_running_loop().time())

        consumer = OrderedConsumer(mine, handler, name="t")
        task = asyncio.create_task(consumer.run())
        await asyncio.sleep(0.5)  # B has read ticket 2 and is waiting for ticket 1
        assert not started.done()
        finished_at = asyncio.get_running_loop().time()
        await other.mark_done("p", first.ticket)
        await other.ack(first)
        started_at = await asyncio.wait_for(started, 5)
        assert started_at - finished_at < 0.5, started_at - finished_at
        await consumer.stop(1)
        await task
    finally:
        await client.aclose()


async def test_a_partition_claim_is_exclusive_and_finish_marks_done_releases_and_acknowledges(
    redis_url: str,
) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        a = RedisQueue(client, "claims", consumer="a", visibility_timeout=0.3, block_seconds=0.05)
        b = RedisQueue(client, "claims", consumer="b", visibility_timeout=0.3, block_seconds=0.05)
        await a.add("p", "one")
        await a.add("p", "two")
        first, second = await a.read(10)
        assert (await a.start(second)).state == "wait"  # ticket 1 is not done
        assert await a.start(first) == Start("run", 0, 1)
        await asyncio.sleep(0.4)
        # Idle past the visibility timeout: b takes the entries over...
        copy = next(e for e in await b.reclaim(10) if e.id == first.id)
        assert (await b.start(copy)).state == "busy"  # ...but a still holds the conversation
        assert await a.finish(first, handled=True)
        assert await a.last_done("p") == 1
        assert (await b.start(copy)).state == "done"  # handled: b only acknowledges its copy
        assert await a.start(second) == Start("run", 1, 1)
        assert await a.finish(second, handled=True)
        assert await a.pending() == 0
        assert not await client.exists("relaybot:q:claims:claim:p")
    finally:
        await client.aclose()


async def test_a_dead_holders_claim_expires_and_a_stalled_holder_learns_it_lost_it(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        dead = RedisQueue(client, "claims", consumer="dead", claim_ttl=0.3, block_seconds=0.05)
        alive = RedisQueue(client, "claims", consumer="alive", claim_ttl=0.3, block_seconds=0.05)
        await dead.add("p", "one")
        [entry] = await dead.read(10)
        assert (await dead.start(entry)).state == "run"
        assert (await alive.start(entry)).state == "busy"
        await asyncio.sleep(0.4)  # the holder died (never touched, never finished): its claim expires
        assert (await alive.start(entry)).state == "run"
        assert not await dead.finish(entry, handled=True)  # the stalled one's claim was gone
        assert await alive.finish(entry, handled=True)
    finally:
        await client.aclose()


async def test_a_touch_keeps_the_claim_of_an_entry_in_hand(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        busy = RedisQueue(client, "claims", consumer="busy", claim_ttl=0.3, block_seconds=0.05)
        other = RedisQueue(client, "claims", consumer="other", claim_ttl=0.3, block_seconds=0.05)
        await busy.add("p", "one")
        [entry] = await busy.read(10)
        assert (await busy.start(entry)).state == "run"
        for _ in range(4):
            await asyncio.sleep(0.15)
            await busy.touch(entry)
        assert (await other.start(entry)).state == "busy"
        assert await busy.finish(entry, handled=True)
    finally:
        await client.aclose()


async def test_memory_queue_claims_work_the_same_way() -> None:
    q = MemoryQueue()
    await q.add("p", "one")
    await q.add("p", "two")
    first, second = await q.read(10)
    assert (await q.start(second)).state == "wait"
    assert await q.start(first) == Start("run", 0, 1)
    assert await q.finish(first, handled=True)
    assert (await q.start(first)).state == "done"
    assert await q.start(second) == Start("run", 1, 1)
    assert await q.finish(second, handled=True)
    assert await q.pending() == 0


def test_a_backoff_doubles_up_to_its_ceiling_and_starts_over_after_a_success() -> None:
    backoff = Backoff(first=0.1, ceiling=0.5)
    assert [backoff.next() for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    backoff.reset()
    assert backoff.next() == 0.1
    with pytest.raises(ValueError, match="first <= ceiling"):
        Backoff(first=2.0, ceiling=1.0)
