"""Where the history's SQL runs: for SQLite, writes on the event loop's own connection and reads on a
thread of their own; for PostgreSQL, the async driver.

A SQLite statement costs tens of microseconds. Through aiosqlite and SQLAlchemy's async layer each
statement, fetch, BEGIN and COMMIT was a hop to a pool thread and back (about ten for one append),
and the hops, the pool's check-out and reset-on-return cost ten times what SQLite did. Here a unit
of work (an append with its checks, one read) is a plain function of a `Connection`: SQLite runs a
read in one hop on a connection its thread keeps open, and a write in place
(`core.stores.sqlite_inline`). PostgreSQL runs the same function through `AsyncConnection.run_sync`
on asyncpg, so both databases share one body of SQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core.stores.sqlite_inline import DatabaseLocked, InlineWriter, can_write_inline

__all__ = ["AsyncEngineExecutor", "SqlExecutor", "SqliteThread", "Work", "executor_for"]

T = TypeVar("T")
A = TypeVar("A")
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


class WriteBatches:
    """Writes that arrive while others are being written wait for them, then go together: one
    transaction and one commit (the summary and fact upserts of a turn join the history's own
    group commit). `write_together` runs works in one transaction and returns what each returned;
    if a batch's transaction fails, each of its writes runs again on its own, so every write gets
    its own outcome and one bad write costs the others nothing."""

    def __init__(self, write_together: Callable[[list[Work[Any]]], Awaitable[list[Any]]]) -> None:
        self._write_together = write_together
        self._waiting: list[tuple[Work[Any], asyncio.Future[Any]]] = []
        self._sender: asyncio.Task[None] | None = None

    async def write(self, work: Work[T]) -> T:
        result: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._waiting.append((work, result))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_waiting(), name="relaybot-sql-writes")
        return await result

    async def drain(self) -> None:
        """Wait for the writes already accepted."""
        if self._sender is not None:
            await asyncio.gather(self._sender, return_exceptions=True)

    async def _send_waiting(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            if len(batch) > 1:
                try:
                    values = await self._write_together([work for work, _ in batch])
                except Exception:  # rolled back: each write runs again alone below
                    pass
                except BaseException as exc:
                    _fail(batch, exc)
                    raise
                else:
                    _deliver(batch, values)
                    continue
            for work, result in batch:
                try:
                    values = await self._write_together([work])
                except BaseException as exc:
                    _fail([(work, result)], exc)
                    if not isinstance(exc, Exception):
                        raise
                else:
                    _deliver([(work, result)], values)


def _deliver(batch: list[tuple[Work[Any], asyncio.Future[Any]]], values: list[Any]) -> None:
    for (_, result), value in zip(batch, values, strict=True):
        if not result.done():  # a caller that stopped waiting: the write still ran
            result.set_result(value)


def _fail(batch: list[tuple[Work[Any], asyncio.Future[Any]]], error: BaseException) -> None:
    for _, result in batch:
        if not result.done():
            result.set_exception(error)


@dataclass(frozen=True, slots=True)
class _Call:
    """A blocking call for the thread, and where its outcome goes back to."""

    fn: Callable[[Any], Any]
    arg: Any
    result: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


def _settle(result: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if result.done():  # the caller was cancelled: the call ran anyway, nobody waits for it
        return
    if error is None:
        result.set_result(value)
    else:
        result.set_exception(error)


class CallThread:
    """One thread that runs blocking calls in the order they came, each outcome handed back to the
    caller's event loop. A one-worker ThreadPoolExecutor does the same through a concurrent future,
    two locks, a work item and a wrapping asyncio future per call: 31 µs of CPU per round trip
    against 20 µs here, measured with a call that does nothing."""

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        # A daemon: a process that never closed its store must still exit. A write cut off by the exit
        # is a transaction SQLite rolls back.
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._closed = False

    async def run(self, fn: Callable[[A], T], arg: A) -> T:
        if self._closed:
            raise RuntimeError("the SQLite thread is closed")
        if not self._thread.is_alive():
            self._thread.start()
        loop = asyncio.get_running_loop()
        result: asyncio.Future[T] = loop.create_future()
        self._calls.put(_Call(fn, arg, result, loop))
        return await result

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            try:
                value, error = call.fn(call.arg), None
            except BaseException as exc:  # handed to the caller, as an executor would
                value, error = None, exc
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits for it
                call.loop.call_soon_threadsafe(_settle, call.result, value, error)

    async def close(self) -> None:
        """Run the calls already queued, then stop the thread."""
        if self._closed:
            return
        self._closed = True
        if self._thread.is_alive():
            self._calls.put(None)
            await asyncio.to_thread(self._thread.join)


class SqliteThread:
    """Reads on one thread and one SQLite connection it keeps open; writes on the event loop's own
    thread (`core.stores.sqlite_inline`), except when another process holds the write lock: those
    run on the thread, which waits for it. The thread also runs the WAL checkpoints, one after each
    `checkpoint_seconds` of writes, which the loop's connection never does itself.
    """

    def __init__(self, engine: Engine, *, checkpoint_seconds: float = 1.0) -> None:
        self._engine = engine
        self._thread = CallThread("relaybot-sqlite")
        self._conn: Connection | None = None  # used on the thread only
        self._writes = WriteBatches(self._write_together)
        self._inline = InlineWriter(engine) if can_write_inline(engine) else None
        self._checkpoint_seconds = checkpoint_seconds
        self._next_checkpoint = 0.0
        self._checkpointing: asyncio.Task[None] | None = None
        #: checkpoints run, and writes that found the database locked (tests read them)
        self.checkpoints = 0
        self.writes_on_thread = 0

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

    def _write_all_now(self, works: list[Work[Any]]) -> list[Any]:
        conn = self._connection()
        try:
            with conn.begin():
                return [work(conn) for work in works]
        except BaseException:
            self._drop_connection()
            raise

    async def read(self, work: Work[T]) -> T:
        return await self._thread.run(self._read_now, work)

    async def write(self, work: Work[T]) -> T:
        """Writes queued before the batch is written go together (`WriteBatches`): one transaction."""
        return await self._writes.write(work)

    async def _write_together(self, works: list[Work[Any]]) -> list[Any]:
        if self._inline is not None:
            try:
                values = self._inline.write_all(works)
            except DatabaseLocked:
                pass  # another process is writing: wait for it on the thread, never on the loop
            else:
                self._checkpoint_soon()
                return values
        self.writes_on_thread += 1
        return await self._thread.run(self._write_all_now, works)

    def _checkpoint_soon(self) -> None:
        now = time.monotonic()
        if now < self._next_checkpoint or (self._checkpointing is not None and not self._checkpointing.done()):
            return
        self._next_checkpoint = now + self._checkpoint_seconds
        self._checkpointing = asyncio.create_task(self._checkpoint(), name="relaybot-sqlite-checkpoint")

    async def _checkpoint(self) -> None:
        try:
            await self._thread.run(self._checkpoint_now, None)
        except Exception:
            # The WAL only grows until the next one; the store's own errors surface on its writes.
            return
        self.checkpoints += 1

    def _checkpoint_now(self, _: None) -> None:
        conn = self._connection()
        try:
            # RESTART, not PASSIVE: under steady writes a passive checkpoint never catches up with the
            # log's end, so the log is never restarted and grows for ever. RESTART holds new writers
            # back while it copies (the loop's writes then find the file locked and queue here, behind
            # it), and the next write starts the log from its beginning.
            conn.exec_driver_sql("PRAGMA wal_checkpoint(RESTART)")
            conn.rollback()
        except BaseException:
            self._drop_connection()
            raise

    async def close(self) -> None:
        await self._writes.drain()
        if self._checkpointing is not None:
            await asyncio.gather(self._checkpointing, return_exceptions=True)
        if self._inline is not None and (inline := self._inline.detach()) is not None:
            # Closed on the thread: the last connection's close checkpoints, and that syncs the file.
            await self._thread.run(lambda conn: conn.close(), inline)
        await self._thread.run(lambda _: self._drop_connection(), None)
        await self._thread.close()
        self._engine.dispose()


class AsyncEngineExecutor:
    """Units of work on an async engine (PostgreSQL on asyncpg), each through `run_sync`.

    Reads take a pooled connection each. Writes go together (`WriteBatches`) on one connection
    this executor keeps: a pool check-out and check-in cost about as much CPU as the transaction
    they carry (650 → 500 µs for a two-insert transaction, measured), and the batches run one at a
    time anyway.

    Connections are not pinged before use (a ping is three round trips with asyncpg: BEGIN,
    SELECT 1, ROLLBACK, on every transaction). A connection the server dropped (a restart, an idle
    timeout, a failover) fails its first statement instead; it is then replaced, and the work runs
    once more on a fresh connection. Running it again is safe: appends are keyed per turn and
    sequence number, and the other writes are upserts and deletes.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._writer: AsyncConnection | None = None
        self._writes = WriteBatches(self._write_together)

    @property
    def sync_engine(self) -> Engine:
        return self._engine.sync_engine

    async def read(self, work: Work[T]) -> T:
        return await _again_if_dropped(self._read_once, work)

    async def write(self, work: Work[T]) -> T:
        return await self._writes.write(work)

    async def _read_once(self, work: Work[T]) -> T:
        async with self._engine.connect() as conn:
            return await conn.run_sync(work)

    async def _write_together(self, works: list[Work[Any]]) -> list[Any]:
        return await _again_if_dropped(self._write_all_once, works)

    async def _write_all_once(self, batch: list[Work[Any]]) -> list[Any]:
        if self._writer is None or self._writer.closed or self._writer.invalidated:
            self._writer = await self._engine.connect()
        conn = self._writer
        try:
            async with conn.begin():
                return await conn.run_sync(lambda sync_conn: [work(sync_conn) for work in batch])
        except DBAPIError as exc:
            if exc.connection_invalidated:
                await self._drop_writer()
            raise

    async def _drop_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            # Already failing: the original error is the one to report.
            with contextlib.suppress(Exception):
                await writer.close()

    async def close(self) -> None:
        await self._writes.drain()
        await self._drop_writer()
        await self._engine.dispose()


async def _again_if_dropped(run: Callable[[A], Awaitable[T]], arg: A) -> T:
    """`run(arg)`, once more on a fresh connection if the one it used turned out to be dead."""
    try:
        return await run(arg)
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        return await run(arg)


def executor_for(engine: Engine | AsyncEngine) -> SqlExecutor:
    """Where units of work on `engine` run: the async driver's pool, or a SQLite thread of their own."""
    return AsyncEngineExecutor(engine) if isinstance(engine, AsyncEngine) else SqliteThread(engine)
