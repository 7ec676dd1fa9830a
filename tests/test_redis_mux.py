"""The shared Redis connection (core/redismux.py) against a real redis-server.

Every Redis-backed test runs through it too (client_from_url builds it); these pin down what
sharing one connection could break: replies matched to the wrong command, a blocking command
holding up the rest, errors, scripts Redis forgot, a restarted server, the database chosen.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
import redis
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from core.errors import StoreError
from core.redisio import RedisBatch, client_from_url, redis_errors, round_trips
from core.redismux import DEAD_PEER_SECONDS
from tests.support.servers import start_redis


async def test_concurrent_commands_each_get_their_own_reply(redis_url: str) -> None:
    client = client_from_url(redis_url)
    try:
        await client.mset({f"k{i}": f"v{i}" for i in range(300)})
        before = round_trips(client)
        counters, values = await asyncio.gather(
            asyncio.gather(*[client.incr("counter") for _ in range(300)]),
            asyncio.gather(*[client.get(f"k{i}") for i in range(300)]),
        )
        assert sorted(counters) == list(range(1, 301))
        assert values == [f"v{i}".encode() for i in range(300)]
        assert round_trips(client) - before == 600  # one per command, as the pool counted them
    finally:
        await client.aclose()


async def test_a_blocking_read_does_not_hold_up_other_commands(redis_url: str) -> None:
    client = client_from_url(redis_url)
    try:
        await client.set("ready", "yes")
        waiting = asyncio.create_task(client.blpop(["never-filled"], timeout=5))
        reading = asyncio.create_task(client.get("ready"))
        done, _ = await asyncio.wait({waiting, reading}, return_when=asyncio.FIRST_COMPLETED)
        assert done == {reading}
        assert reading.result() == b"yes"
        await client.rpush("never-filled", "item")
        assert await waiting == (b"never-filled", b"item")
    finally:
        await client.aclose()


async def test_a_command_given_up_on_keeps_the_replies_after_it_in_step(redis_url: str) -> None:
    client = client_from_url(redis_url)
    try:
        await client.mset({"first": "1", "second": "2"})
        # A script that keeps Redis busy, so the next two commands are still waiting when one of
        # them is cancelled; its reply must still be read and thrown away, not given to the next.
        slow = asyncio.create_task(client.eval("local i = 0 while i < 3000000 do i = i + 1 end return 'slow'", 0))
        await asyncio.sleep(0.01)
        abandoned = asyncio.create_task(client.get("first"))
        kept = asyncio.create_task(client.get("second"))
        await asyncio.sleep(0.01)
        abandoned.cancel()
        assert await kept == b"2"
        assert await slow == b"slow"
        assert await client.get("first") == b"1"
    finally:
        await client.aclose()


async def test_errors_are_redis_py_errors_and_translate_to_store_errors(redis_url: str) -> None:
    client = client_from_url(redis_url)
    try:
        await client.set("plain", "x")
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await client.lpush("plain", "y")
        with pytest.raises(StoreError, match="WRONGTYPE"), redis_errors("here", "testing"):
            await client.lpush("plain", "y")
        assert await client.get("plain") == b"x"  # the connection is still in step after errors
    finally:
        await client.aclose()


async def test_a_batch_reruns_a_script_redis_forgot_and_reports_each_error_in_place(redis_url: str) -> None:
    client = client_from_url(redis_url)
    script = client.register_script("return redis.call('INCR', KEYS[1])")
    try:
        await client.set("plain", "x")
        await script(keys=["n"])
        await client.script_flush()
        batch = RedisBatch(client)
        counted = batch.script(script, ["n"], [])
        read = batch.command("GET", "plain")
        await batch.run()
        assert batch.result(counted) == 2
        assert batch.result(read) == b"x"

        failing = RedisBatch(client)
        failing.command("LPUSH", "plain", "y")
        failing.command("SET", "after", "1")
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await failing.run()
        assert await client.get("after") == b"1"  # a batch is not a transaction: the rest ran
    finally:
        await client.aclose()


async def test_commands_after_a_redis_restart_reconnect(tmp_path: Path) -> None:
    server = start_redis(tmp_path / "redis", appendonly=True)
    client = client_from_url(server.url)
    try:
        await client.set("kept", "1")
        await asyncio.to_thread(server.restart)
        assert await client.get("kept") == b"1"  # one retry on a new connection, no error
        await asyncio.to_thread(server.stop)  # Redis is down: a command fails with a message, not a hang
        with pytest.raises(StoreError, match="cannot reach Redis"), redis_errors(server.url, "testing"):
            await client.get("kept")
    finally:
        await client.aclose()
        server.stop()


async def test_the_database_in_the_url_is_the_one_written(redis_url: str) -> None:
    url = redis_url.rsplit("/", 1)[0] + "/3"
    client = client_from_url(url)
    try:
        await client.set("in-db-3", "yes")
    finally:
        await client.aclose()
    with redis.Redis.from_url(url) as db3, redis.Redis.from_url(redis_url) as db0:
        assert db3.get("in-db-3") == b"yes"
        assert db0.get("in-db-3") is None


async def test_a_command_past_the_socket_timeout_fails_and_the_next_gets_its_own_reply(redis_url: str) -> None:
    client = client_from_url(redis_url, socket_timeout=0.1)
    try:
        await client.set("k", "v")
        # Redis is busy with a long script for far longer than the client's socket timeout.
        with pytest.raises(RedisTimeoutError):
            await client.eval("local i = 0 while i < 100000000 do i = i + 1 end return 'late'", 0)
        # Commands time out too while the script runs; once it is done, each gets its own reply,
        # never the script's late one.
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            try:
                value = await client.get("k")
                break
            except RedisTimeoutError:
                assert asyncio.get_running_loop().time() < deadline
        assert value == b"v"
    finally:
        await client.aclose()


async def test_the_shared_connection_asks_the_kernel_to_fail_it_if_redis_stops_answering(redis_url: str) -> None:
    client = client_from_url(redis_url)
    try:
        await client.ping()
        # One connection carries every short command: a peer that vanished without closing must
        # not leave them all waiting for ever (a NAT or proxy that forgot the flow, a dead host).
        sock = client._shared._connection._writer.get_extra_info("socket")  # type: ignore[union-attr]
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == DEAD_PEER_SECONDS // 2
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == DEAD_PEER_SECONDS * 1000
    finally:
        await client.aclose()
