"""Where the history's SQL runs: a thread of its own for SQLite, the async driver for PostgreSQL.

A SQLite statement costs tens of microseconds. Through aiosqlite and SQLAlchemy's async layer each
statement, fetch, BEGIN and COMMIT was a hop to a pool thread and back (about ten for one append),
and the hops, the pool's check-out and reset-on-return cost ten times what SQLite did. Here a unit
of work (an append with its checks, one read) is a plain function of a `Connection`, and SQLite
runs it in one hop on a connection its thread keeps open. PostgreSQL runs the same function through
`AsyncConnection.run_sync` on asyncpg, so both databases share one body of SQL.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["AsyncEngineExecutor", "SqlExecutor", "SqliteThread", "Work", "executor_for"]

T = TypeVar("T")
#: one unit of work: runs on a connection, in a transaction when it writes
Work = Callable[[Connection], T]


class SqlExecutor(Protocol):
    @property
    def sync_engine(self) -> Engine:
        """The engine underneath (for event listeners: statement counts, commits)."""
        ...

    async def read(self, work: Work[T]) -> T:
        """Run `work` on a connection and return what it returned."""
        ...

    async def write(self, work: Work[T]) -> T:
        """Run `work` in one transaction, committed if it returns, rolled back if it raises."""
        ...

    async def close(self) -> None: ...


class SqliteThread:
    """Every unit of work on one thread and one SQLite connection it keeps open.

    One thread is also one writer: SQLite takes a single writer at a time anyway, and writes queued
    here wait in order instead of sleeping in SQLite's busy handler. Reads queue behind them; each
    is a few index lookups, far shorter than the hop that carries it.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="relaybot-sqlite")
        self._conn: Connection | None = None  # used on the thread only
        # Writes that arrived while others were on the thread: they go together next.
        self._waiting: list[tuple[Work[Any], asyncio.Future[Any]]] = []
        self._writing = False

    @property
    def sync_engine(self) -> Engine:
        return self._engine

    def _connection(self) -> Connection:
        if self._conn is None or self._conn.closed or self._conn.invalidated:
            self._conn = self._engine.connect()
        return self._conn

    def _drop_connection(self) -> None:
        # After an error the connection may be unusable (a file that went away, a full disk): the
        # next unit of work opens a fresh one rather than failing the same way for ever.
        conn, self._conn = self._conn, None
        if conn is not None:
            # Already failing: the original error is the one to report.
            with contextlib.suppress(Exception):
                conn.close()

    def _read_now(self, work: Work[T]) -> T:
        conn = self._connection()
        try:
            result = work(conn)
            # Ends the read's transaction, so its snapshot does not hold back WAL checkpoints.
            conn.rollback()
        except BaseException:
            self._drop_connection()
            raise
        return result

    def _write_now(self, work: Work[T]) -> T:
        conn = self._connection()
        try:
            with conn.begin():
                return work(conn)
        except BaseException:
            self._drop_connection()
            raise

    async def read(self, work: Work[T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._read_now, work)

    async def write(self, work: Work[T]) -> T:
        """Writes that arrive while another is on the thread wait for it, then go together: one
        hop, one transaction, one commit (the summary and fact upserts of a turn join the history's
        own group commit). If that transaction fails, each runs again on its own, so every write
        gets its own outcome and one bad write costs the others nothing."""
        loop = asyncio.get_running_loop()
        result: asyncio.Future[T] = loop.create_future()
        self._waiting.append((work, result))
        if not self._writing:
            self._send_waiting(loop)
        return await result

    def _send_waiting(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self._waiting = self._waiting, []
        try:
            done = loop.run_in_executor(self._thread, self._write_batch_now, [work for work, _ in batch])
        except RuntimeError as exc:  # the store was closed meanwhile
            for _, result in batch:
                if not result.done():
                    result.set_exception(exc)
            return
        self._writing = True
        done.add_done_callback(lambda outcome: self._settle(loop, batch, outcome))

    def _settle(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: list[tuple[Work[Any], asyncio.Future[Any]]],
        outcome: asyncio.Future[list[tuple[bool, Any]]],
    ) -> None:
        self._writing = False
        failure = outcome.exception() if not outcome.cancelled() else asyncio.CancelledError()
        for index, (_, result) in enumerate(batch):
            if result.done():
                continue  # its caller stopped waiting; the write still ran
            if failure is not None:
                result.set_exception(failure)
            elif outcome.result()[index][0]:
                result.set_result(outcome.result()[index][1])
            else:
                result.set_exception(outcome.result()[index][1])
        if self._waiting:
            self._send_waiting(loop)

    def _write_batch_now(self, batch: list[Work[Any]]) -> list[tuple[bool, Any]]:
        """Each write's (succeeded, result or error), in order."""
        if len(batch) > 1:
            conn = self._connection()
            try:
                with conn.begin():
                    results = [work(conn) for work in batch]
                return [(True, result) for result in results]
            except Exception:
                self._drop_connection()  # rolled back: nothing of the batch was written
        outcomes: list[tuple[bool, Any]] = []
        for work in batch:
            try:
                outcomes.append((True, self._write_now(work)))
            except Exception as exc:
                outcomes.append((False, exc))
        return outcomes

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._drop_connection)
        self._thread.shutdown(wait=True)
        self._engine.dispose()


class AsyncEngineExecutor:
    """Units of work on an async engine's pool (PostgreSQL on asyncpg), each through `run_sync`.

    Pooled connections are not pinged before use (a ping is three round trips with asyncpg:
    BEGIN, SELECT 1, ROLLBACK, on every transaction). A connection the server dropped (a restart,
    an idle timeout, a failover) fails its first statement instead; SQLAlchemy then discards the
    pool, and the work runs once more on a fresh connection. Running it again is safe: appends are
    keyed per turn and sequence number, and the other writes are upserts and deletes.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @property
    def sync_engine(self) -> Engine:
        return self._engine.sync_engine

    async def read(self, work: Work[T]) -> T:
        return await _again_if_dropped(self._read_once, work)

    async def write(self, work: Work[T]) -> T:
        return await _again_if_dropped(self._write_once, work)

    async def _read_once(self, work: Work[T]) -> T:
        async with self._engine.connect() as conn:
            return await conn.run_sync(work)

    async def _write_once(self, work: Work[T]) -> T:
        async with self._engine.begin() as conn:
            return await conn.run_sync(work)

    async def close(self) -> None:
        await self._engine.dispose()


async def _again_if_dropped(run: Callable[[Work[T]], Awaitable[T]], work: Work[T]) -> T:
    """`run(work)`, once more on a fresh connection if the pooled one turned out to be dead."""
    try:
        return await run(work)
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        return await run(work)


def executor_for(engine: Engine | AsyncEngine) -> SqlExecutor:
    """Where units of work on `engine` run: the async driver's pool, or a SQLite thread of their own."""
    return AsyncEngineExecutor(engine) if isinstance(engine, AsyncEngine) else SqliteThread(engine)
