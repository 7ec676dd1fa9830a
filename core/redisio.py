"""Shared Redis plumbing: one client per process, and one translation of Redis errors.

Every Redis-backed component (sessions, bus, locks, rate limits, outbox) takes the client in its
constructor; the runtime builds it once from REDIS_URL.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar, cast

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection, SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import AuthenticationError, AuthorizationError, NoScriptError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from core.errors import ConfigError, StoreError
from core.redismux import MultiplexedRedis, execute_many


def client_from_url(url: str, *, max_connections: int = 200, **client_kwargs: Any) -> aioredis.Redis:
    """A client for REDIS_URL that fails fast when Redis is unreachable.

    Its pool waits for a free connection under a burst (redis-py's default pool raises "Too many
    connections" at 100 instead, which turned a busy minute into failed messages).
    """
    # Without a connect timeout a firewalled Redis stalls every turn for minutes instead of
    # failing fast enough for the caller to tell the user.
    client_kwargs.setdefault("socket_connect_timeout", 5.0)
    # A pooled connection can outlive a Redis restart unnoticed; its first command fails with
    # "Connection closed by server" before a byte reached Redis. One immediate retry on a fresh
    # connection rides that out (a client built from a pool gets no retry of its own).
    client_kwargs.setdefault("retry", Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)))
    try:
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=20, **client_kwargs
        )
        pool.connection_class = _counting(pool.connection_class)
        return MultiplexedRedis.from_pool(pool)
    except ValueError as exc:
        raise ConfigError(f"REDIS_URL is not a valid Redis URL ({exc}); expected redis://host:port/db") from exc


def _counting(base: type[AbstractConnection]) -> type[AbstractConnection]:
    """`base` (plain, TLS or Unix socket, as the URL chose) counting what it sends: one send is one
    round trip, whether it carries a command, a pipeline or a script call."""

    class Counted(base):  # type: ignore[valid-type, misc]
        sent = 0

        async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            type(self).sent += 1
            await super().send_packed_command(command, check_health)

    return Counted


def round_trips(client: aioredis.Redis) -> int:
    """Requests the client's connections have sent to Redis since it was built (0 if not counted)."""
    pooled = int(getattr(client.connection_pool.connection_class, "sent", 0))
    return pooled + (client.shared_sends if isinstance(client, MultiplexedRedis) else 0)


def describe(client: aioredis.Redis) -> str:
    """Where the client points, without credentials, for error messages."""
    pool = client.connection_pool
    kwargs = pool.connection_kwargs
    if kwargs.get("path"):
        return f"unix://{kwargs['path']}"
    scheme = "rediss" if issubclass(pool.connection_class, SSLConnection) else "redis"
    return f"{scheme}://{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"


_T = TypeVar("_T")


async def reply(command: Awaitable[_T] | _T) -> _T:
    """The reply to an asyncio client's command. redis-py 7 types every command for both clients
    (`Awaitable[T] | T`); the asyncio client always returns the awaitable."""
    return await cast(Awaitable[_T], command)


def text(value: bytes | str) -> str:
    # The client may or may not have been built with decode_responses; accept both.
    return value.decode() if isinstance(value, bytes) else value


@contextmanager
def redis_errors(where: str, action: str, *, prefix: str = "relaybot") -> Iterator[None]:
    """Turn redis-py errors into StoreError with a message that says what to check."""
    try:
        yield
    except (AuthenticationError, AuthorizationError) as exc:
        raise StoreError(
            f"Redis at {where} refused relaybot while {action} ({exc}): check the user name and password in REDIS_URL"
        ) from exc
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        raise StoreError(
            f"cannot reach Redis at {where} while {action} ({exc}): is redis-server running, and is REDIS_URL right?"
        ) from exc
    except RedisError as exc:
        raise StoreError(
            f"Redis at {where} failed while {action} ({exc}); if the error is WRONGTYPE, "
            f"another application is using keys under the prefix {prefix!r}"
        ) from exc


class RedisBatch:
    """Commands of several components sent to Redis in one round trip.

    A turn opens with three reads (its rate limit, its session and window, what memory holds)
    that do not depend on each other; each component queues its commands here and reads its own
    results once the batch has run, so the three cost one round trip instead of three. The batch
    is a plain pipeline, not a transaction: each component's commands keep the atomicity they had
    (a script is one command), and the turn holds its conversation's lock while they run.

    Scripts go in as EVALSHA: redis-py's own pipeline would first ask SCRIPT EXISTS for every
    script it was given (a round trip more); a script Redis does not know (after a restart or a
    SCRIPT FLUSH) is run again on its own, which loads it.
    """

    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client
        self._commands: list[tuple[Any, ...]] = []
        self._scripts: dict[int, tuple[AsyncScript, Sequence[Any], Sequence[Any]]] = {}
        self._results: list[Any] | None = None

    @property
    def client(self) -> aioredis.Redis:
        return self._client

    def command(self, *args: Any) -> int:
        """Queue a command; its result is `result(index)` once the batch has run."""
        self._commands.append(args)
        return len(self._commands) - 1

    def script(self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]) -> int:
        """Queue a registered script with its keys and arguments."""
        index = self.command("EVALSHA", script.sha, len(keys), *keys, *args)
        self._scripts[index] = (script, keys, args)
        return index

    async def run(self) -> None:
        """Send everything queued; raise the first command's error, if any, after retrying scripts
        Redis did not know."""
        if not self._commands:
            self._results = []
            return
        results = await execute_many(self._client, self._commands)
        for index, (script, keys, args) in self._scripts.items():
            if isinstance(results[index], NoScriptError):
                results[index] = await script(keys=keys, args=args)
        for result in results:
            if isinstance(result, Exception):
                raise result
        self._results = results

    def result(self, index: int) -> Any:
        if self._results is None:
            raise RuntimeError("the batch has not run yet")
        return self._results[index]
