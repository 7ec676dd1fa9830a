"""Fixtures shared by the whole suite. Servers start once per session and are stopped by PID."""

from __future__ import annotations

import os

# Before anything can import an embedding library: nothing in the tests may reach the network.
os.environ["HF_HUB_OFFLINE"] = "1"

from collections.abc import Iterator

# Imported now, while the stack is shallow: hypothesis's pytest plugin imports it lazily at the
# end of a run that never used it, deep in pytest's hooks, where CPython 3.11.7's parser fails with
# "SystemError: AST constructor recursion depth mismatch" and the run exits 1 after passing.
import hypothesis  # noqa: F401
import pytest
import redis
import structlog

from core.logsink import LineSink
from tests.support.servers import PostgresServer, RedisServer, start_postgres, start_redis


@pytest.fixture(scope="session")
def redis_server(request: pytest.FixtureRequest) -> RedisServer:
    server = start_redis()
    request.addfinalizer(server.stop)
    return server


@pytest.fixture(scope="session")
def postgres_server(request: pytest.FixtureRequest) -> PostgresServer:
    server = start_postgres()
    request.addfinalizer(server.stop)
    return server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """The shared server's URL, emptied first so no test sees another's keys."""
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    yield redis_server.url


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """A test that runs the CLI in-process configures logging onto that test's captured stderr,
    which pytest closes afterwards: later tests would log into a closed file. Its writer thread
    (core.logsink) is stopped with it."""
    yield
    factory = structlog.get_config().get("logger_factory")
    if isinstance(getattr(factory, "sink", None), LineSink):
        factory.sink.close()
    structlog.reset_defaults()
