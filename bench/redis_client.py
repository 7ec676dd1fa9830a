"""What redis-py itself costs per command, against a minimal RESP client in the same run.

relaybot's Redis topology makes about ten round trips per message (bench/distributed_throughput.py),
so the client library's own CPU per command is a visible share of a message's cost. This starts a
redis-server on a free port and, in this one process on uvloop, times the same three operations
with each client, 16 tasks at a time:

    get        GET of a short string
    evalsha    a one-line Lua script (redis-py: `register_script`, as relaybot's queue and stores call
               them; the baseline sends EVALSHA itself)
    pipeline6  six commands in one round trip (GET, GET, EXPIRE, HGETALL, LRANGE, MGET), the shape of
               relaybot's turn-opening batch

The clients:

    relaybot   the client relaybot builds (`core.redisio.client_from_url`): redis-py's client whose
               short commands share one connection (`core.redismux.MultiplexedRedis`); the
               pipeline is a `RedisBatch`, as the turn sends it
    redis-py   the installed redis-py as relaybot built it before that: its client on a
               BlockingConnectionPool (hiredis when installed), every command checked out of the pool
    baseline   16 asyncio connections writing RESP by hand and reading replies with hiredis: the
               floor a Python client can reach (no pool, no retries, no error translation)

Prints process CPU microseconds per operation (time.process_time over the run) and the ratio to the
baseline. Run it under another redis-py with `PYTHONPATH=DIR` after `pip install --target DIR
redis==X`, to compare versions. Never fails on timing.

    python bench/redis_client.py [--operations 16000]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from tempfile import TemporaryDirectory

import benchkit  # noqa: F401  (puts the repository on sys.path)
import hiredis
import redis
import redis.asyncio as aioredis
import uvloop

from core.redisio import RedisBatch, client_from_url, reply
from tests.support.servers import start_redis

TASKS = 16
SCRIPT = "return redis.call('GET', KEYS[1])"
PIPELINE = [
    (b"GET", b"k"),
    (b"GET", b"k"),
    (b"EXPIRE", b"k", b"3600"),
    (b"HGETALL", b"h"),
    (b"LRANGE", b"l", b"0", b"-1"),
    (b"MGET", b"a", b"b"),
]


def pack(*args: bytes) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


class RawConnection:
    """One connection speaking RESP2 by hand: the cost floor for a request and its replies."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._parser = hiredis.Reader()

    @classmethod
    async def open(cls, port: int) -> RawConnection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def call(self, payload: bytes, replies: int = 1) -> list[object]:
        self._writer.write(payload)
        out: list[object] = []
        while len(out) < replies:
            parsed = self._parser.gets()
            if parsed is False:
                self._parser.feed(await self._reader.read(65536))
                continue
            out.append(parsed)
        return out

    def close(self) -> None:
        self._writer.close()


async def timed(operation: Callable[[int], Awaitable[None]], per_task: int) -> float:
    """Process CPU microseconds per operation, after a warm-up."""
    await asyncio.gather(*(operation(t) for t in range(TASKS)))
    rounds = max(1, per_task // 50)
    started = time.process_time()
    for _ in range(rounds):
        await asyncio.gather(*(operation(t) for t in range(TASKS)))
    return 1e6 * (time.process_time() - started) / (TASKS * rounds * 50)


async def measure(port: int, operations: int) -> dict[str, dict[str, float]]:
    per_task = max(50, operations // TASKS)
    client = client_from_url(f"redis://127.0.0.1:{port}/0")
    pooled = aioredis.Redis.from_pool(aioredis.BlockingConnectionPool.from_url(f"redis://127.0.0.1:{port}/0"))
    await client.set("k", "v")
    script = client.register_script(SCRIPT)
    pooled_script = pooled.register_script(SCRIPT)
    sha = await reply(client.script_load(SCRIPT))
    raw = [await RawConnection.open(port) for _ in range(TASKS)]

    async def relaybot_get(_: int) -> None:
        for _ in range(50):
            await client.get("k")

    async def relaybot_evalsha(_: int) -> None:
        for _ in range(50):
            await script(keys=["k"])

    async def relaybot_pipeline(_: int) -> None:
        for _ in range(50):
            batch = RedisBatch(client)
            for command in PIPELINE:
                batch.command(*command)
            await batch.run()

    async def redis_get(_: int) -> None:
        for _ in range(50):
            await pooled.get("k")

    async def redis_evalsha(_: int) -> None:
        for _ in range(50):
            await pooled_script(keys=["k"])

    async def redis_pipeline(_: int) -> None:
        for _ in range(50):
            async with pooled.pipeline(transaction=False) as pipe:
                pipe.get("k")
                pipe.get("k")
                pipe.expire("k", 3600)
                pipe.hgetall("h")
                pipe.lrange("l", 0, -1)
                pipe.mget("a", "b")
                await pipe.execute()

    get_payload = pack(b"GET", b"k")
    evalsha_payload = pack(b"EVALSHA", sha.encode(), b"1", b"k")
    pipeline_payload = b"".join(pack(*command) for command in PIPELINE)

    def raw_operation(payload: bytes, replies: int) -> Callable[[int], Awaitable[None]]:
        async def run(task: int) -> None:
            for _ in range(50):
                await raw[task].call(payload, replies)

        return run

    figures = {
        "relaybot": {
            "get": await timed(relaybot_get, per_task),
            "evalsha": await timed(relaybot_evalsha, per_task),
            "pipeline6": await timed(relaybot_pipeline, per_task),
        },
        "redis-py": {
            "get": await timed(redis_get, per_task),
            "evalsha": await timed(redis_evalsha, per_task),
            "pipeline6": await timed(redis_pipeline, per_task),
        },
        "baseline": {
            "get": await timed(raw_operation(get_payload, 1), per_task),
            "evalsha": await timed(raw_operation(evalsha_payload, 1), per_task),
            "pipeline6": await timed(raw_operation(pipeline_payload, len(PIPELINE)), per_task),
        },
    }
    for connection in raw:
        connection.close()
    await client.aclose()
    await pooled.aclose()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--operations", type=int, default=16000, help="operations per measurement (default 16000)")
    args = parser.parse_args()
    with TemporaryDirectory() as tmp:
        server = start_redis(Path(tmp) / "redis")
        try:
            figures = uvloop.run(measure(server.port, args.operations))
        finally:
            server.stop()
    print(f"redis-py {redis.__version__} against a hand-written RESP client, {TASKS} tasks, uvloop")
    columns = ("relaybot us", "redis-py us", "baseline us", "relaybot/base", "redis-py/base")
    print(f"{'operation':<12}" + "".join(f"{column:>15}" for column in columns))
    for operation in ("get", "evalsha", "pipeline6"):
        ours, pool, base = (figures[client][operation] for client in ("relaybot", "redis-py", "baseline"))
        print(f"{operation:<12}{ours:>15.1f}{pool:>15.1f}{base:>15.1f}{ours / base:>14.2f}x{pool / base:>14.2f}x")
    print("(process CPU per operation over the run: client work only, Redis runs in its own process)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
