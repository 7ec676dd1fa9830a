"""One shared Redis connection for a process's short commands.

For every command redis-py checks a connection out of its pool, polls the socket for stale
data, wraps the call in its retry policy and hands the connection back: about 30 µs of CPU
beside a few µs of actual protocol work, paid on each of the ten or so round trips a message
makes in the Redis topology. Redis answers a connection's commands in the order it received
them, so short commands from every coroutine of the process can share one connection instead:
each is written as it is issued, and the replies, read by one task, resolve their waiters in
the same order.

What must have a connection of its own keeps using redis-py's pool: blocking reads (the bus's
XREADGROUP BLOCK, BLPOP), transactions and pipelines, pub/sub, and commands that change a
connection's state. A URL this does not reproduce exactly (RESP3, or a client that must never
decode) falls back to the pool for everything. As one connection now carries every short command,
the kernel is asked to fail it within about 30 s if Redis stops answering (`_detect_dead_peer`),
and the next command reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import socket
from collections import deque
from collections.abc import Sequence
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis._parsers.base import BaseParser
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["MultiplexedRedis", "execute_many"]

_EMPTY_RESPONSE = "EMPTY_RESPONSE"  # redis-py's option names (redis.asyncio.client)
_NEVER_DECODE = "NEVER_DECODE"

# Commands that block, change the connection's state or take it over: on a shared connection
# they would hold up, or change, every other coroutine's commands.
_OWN_CONNECTION = frozenset(
    {
        "AUTH",
        "BLMOVE",
        "BLMPOP",
        "BLPOP",
        "BRPOP",
        "BRPOPLPUSH",
        "BZMPOP",
        "BZPOPMAX",
        "BZPOPMIN",
        "CLIENT",
        "DEBUG",
        "DISCARD",
        "EXEC",
        "HELLO",
        "MONITOR",
        "MULTI",
        "PSUBSCRIBE",
        "PSYNC",
        "QUIT",
        "RESET",
        "SELECT",
        "SHUTDOWN",
        "SSUBSCRIBE",
        "SUBSCRIBE",
        "SYNC",
        "UNWATCH",
        "WAIT",
        "WAITAOF",
        "WATCH",
    }
)
_MAYBE_BLOCKING = frozenset({"XREAD", "XREADGROUP"})
_MORE = object()  # hiredis's "no complete reply yet"


def _name(command: Any) -> str:
    text = command.decode() if isinstance(command, bytes) else str(command)
    return text.split(" ", 1)[0].upper()


def needs_own_connection(args: Sequence[Any]) -> bool:
    """Whether a command must not go over the shared connection."""
    name = _name(args[0])
    if name in _OWN_CONNECTION:
        return True
    if name in _MAYBE_BLOCKING:
        return any(_name(arg) == "BLOCK" for arg in args[1:] if isinstance(arg, str | bytes))
    return False


#: how long a shared connection may go unanswered before the kernel declares it dead
DEAD_PEER_SECONDS = 30


def _detect_dead_peer(connection: AbstractConnection) -> None:
    """Have the kernel fail the shared connection if Redis stops answering (a host gone without
    closing, a NAT or proxy that forgot the flow) instead of leaving every command of the process
    waiting on it: keepalive probes while it is idle, and a limit on unacknowledged data."""
    writer = connection._writer
    sock = writer.get_extra_info("socket") if writer is not None else None
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return  # a Unix socket has no peer to lose
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (
        ("TCP_KEEPIDLE", DEAD_PEER_SECONDS // 2),
        ("TCP_KEEPINTVL", DEAD_PEER_SECONDS // 6),
        ("TCP_KEEPCNT", 3),
        ("TCP_USER_TIMEOUT", DEAD_PEER_SECONDS * 1000),  # Linux: milliseconds
    ):
        if hasattr(socket, option):  # not every platform has each
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


class _SharedConnection:
    """A redis-py connection (so its handshake, TLS, AUTH and SELECT are redis-py's) whose
    replies are read by one task and matched to their commands in order."""

    def __init__(self, connection: AbstractConnection) -> None:
        self._connection = connection
        encoder = connection.encoder
        decoding = {"encoding": encoder.encoding, "errors": encoder.encoding_errors} if encoder.decode_responses else {}
        self._parser = hiredis.Reader(notEnoughData=_MORE, **decoding)
        self._waiting: deque[asyncio.Future[Any]] = deque()
        self._failure: BaseException | None = None
        self._unsent: list[bytes] = []
        self._reading = asyncio.get_running_loop().create_task(self._read_replies())

    @property
    def usable(self) -> bool:
        return self._failure is None

    def send(self, commands: Sequence[Sequence[Any]]) -> list[asyncio.Future[Any]]:
        writer = self._connection._writer
        if self._failure is not None or writer is None or writer.is_closing():
            raise RedisConnectionError("Connection closed by server.")
        if len(commands) == 1:
            chunks = self._connection.pack_command(*commands[0])
        else:
            chunks = self._connection.pack_commands(commands)
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in commands]
        # Queued before the write so that no reply can arrive ahead of its waiter.
        self._waiting.extend(futures)
        # Commands issued in the same turn of the event loop go out in one write: under load
        # that is one system call for many coroutines' commands instead of one each.
        if not self._unsent:
            loop.call_soon(self._flush)
        self._unsent.extend(chunks)
        return futures

    def _flush(self) -> None:
        chunks, self._unsent = self._unsent, []
        writer = self._connection._writer
        if writer is None or writer.is_closing():
            self._fail(RedisConnectionError("Connection closed by server."))
            return
        writer.writelines(chunks)

    async def _read_replies(self) -> None:
        reader = self._connection._reader
        try:
            if reader is None:
                raise RedisConnectionError("Connection closed by server.")
            while True:
                data = await reader.read(65536)
                if not data:
                    raise RedisConnectionError("Connection closed by server.")
                self._parser.feed(data)
                while (reply := self._parser.gets()) is not _MORE:
                    waiter = self._waiting.popleft()
                    # A waiter given up on (cancelled, timed out) still takes its reply, so the
                    # replies after it stay matched to their commands.
                    if not waiter.done():
                        waiter.set_result(reply)
        except asyncio.CancelledError:
            self._fail(RedisConnectionError("Connection closed by client."))
            raise
        except Exception as exc:
            # Whatever stopped the reader (a reset, a protocol error, a reply with no command
            # waiting for it) fails the connection: its waiters learn it, the next command reconnects.
            error = (
                exc
                if isinstance(exc, RedisConnectionError)
                else RedisConnectionError(f"Error reading from Redis: {exc!r}")
            )
            self._fail(error)

    def _fail(self, error: BaseException) -> None:
        self._failure = error
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_exception(error)

    async def close(self) -> None:
        self._reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reading
        await self._connection.disconnect()


class MultiplexedRedis(aioredis.Redis):
    """redis-py's asyncio client whose short commands share one connection (see the module).

    Everything else about it is redis-py's: the same commands, replies, response parsing and
    errors, so components take it as an `aioredis.Redis`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        connection_kwargs = self.connection_pool.connection_kwargs
        #: RESP2 and no single-connection mode: what the shared connection reproduces
        self.multiplexing = connection_kwargs.get("protocol") in (None, 2, "2") and self.connection is None
        self._socket_timeout: float | None = connection_kwargs.get("socket_timeout")
        self._shared: _SharedConnection | None = None
        self._connecting = asyncio.Lock()
        self.shared_sends = 0

    def shares(self, commands: Sequence[Sequence[Any]]) -> bool:
        """Whether these commands go over the shared connection."""
        return self.multiplexing and not any(needs_own_connection(command) for command in commands)

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        if _NEVER_DECODE in options or not self.shares([args]):
            return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        (reply,) = await self._send([args])
        return await self._parsed(args[0], reply, options)

    async def _execute_shared(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        replies = await self._send(commands)
        results: list[Any] = []
        for command, reply in zip(commands, replies, strict=True):
            try:
                results.append(await self._parsed(command[0], reply, {}))
            except Exception as exc:  # returned in its place, as a pipeline does
                results.append(exc)
        return results

    async def _send(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        # One immediate retry on a fresh connection, as the pool's retry does: the shared
        # connection may have died with a restarted Redis before anything reached it.
        for attempt in (1, 2):
            try:
                shared = await self._shared_connection()
                futures = shared.send(commands)
                self.shared_sends += 1
                return list(await self._wait(futures))
            except RedisConnectionError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _wait(self, futures: list[asyncio.Future[Any]]) -> list[Any]:
        if self._socket_timeout is None:  # redis-py's default: wait as long as the connection lives
            return [await future for future in futures]
        try:
            async with asyncio.timeout(self._socket_timeout):
                return [await future for future in futures]
        except TimeoutError as exc:
            raise RedisTimeoutError("Timeout reading from Redis") from exc

    async def _shared_connection(self) -> _SharedConnection:
        shared = self._shared
        if shared is not None and shared.usable:
            return shared
        async with self._connecting:
            if self._shared is not None and self._shared.usable:
                return self._shared
            if self._shared is not None:
                await self._shared.close()
                self._shared = None
            connection = self.connection_pool.make_connection()  # type: ignore[no-untyped-call]
            await connection.connect()
            _detect_dead_peer(connection)
            self._shared = _SharedConnection(connection)
            return self._shared

    async def _parsed(self, command: Any, reply: Any, options: dict[str, Any]) -> Any:
        if isinstance(reply, hiredis.ReplyError):
            if _EMPTY_RESPONSE in options:
                return options[_EMPTY_RESPONSE]
            raise BaseParser.parse_error(str(reply))  # type: ignore[no-untyped-call]
        callback = self.response_callbacks.get(command)
        if callback is None:
            return reply
        options = {key: value for key, value in options.items() if key not in (_EMPTY_RESPONSE, "keys")}
        parsed = callback(reply, **options)
        return await parsed if inspect.isawaitable(parsed) else parsed

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        if self._shared is not None:
            await self._shared.close()
            self._shared = None
        await super().aclose(close_connection_pool)


async def execute_many(client: aioredis.Redis, commands: Sequence[Sequence[Any]]) -> list[Any]:
    """Several commands in one round trip, not a transaction; each command's error is returned in
    its place, as redis-py's `pipeline.execute(raise_on_error=False)` does. Over the shared
    connection when `client` has one and the commands may use it, else in a redis-py pipeline."""
    if isinstance(client, MultiplexedRedis) and client.shares(commands):
        return await client._execute_shared(commands)
    async with client.pipeline(transaction=False) as pipe:
        for command in commands:
            pipe.execute_command(*command)
        return list(await pipe.execute(raise_on_error=False))
