"""Where the SQLite history's SQL runs (core.stores.sql_exec): the call thread (calls in the order
they came, outcomes back on the caller's loop, a cancelled caller costs nobody else, close runs what
was queued before it), and writes on the loop's own connection that never wait there (a locked file
sends the write to the thread, checkpoints run on the thread), against real SQLite files."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from core.stores.sql import engine_for_url
from core.stores.sql_exec import CallThread, SqliteThread


async def test_calls_run_on_one_other_thread_in_the_order_they_came() -> None:
    thread = CallThread("test-sql")
    seen: list[tuple[int, str]] = []

    def record(n: int) -> int:
        seen.append((n, threading.current_thread().name))
        return n * 10

    try:
        results = await asyncio.gather(*(thread.run(record, n) for n in range(50)))
    finally:
        await thread.close()

    assert results == [n * 10 for n in range(50)]
    assert [n for n, _ in seen] == list(range(50))
    assert {name for _, name in seen} == {"test-sql"}


async def test_an_error_reaches_its_caller_and_the_next_call_still_runs() -> None:
    thread = CallThread("test-sql")

    def fail(_: None) -> None:
        raise ValueError("disk I/O error")

    try:
        with pytest.raises(ValueError, match="disk I/O error"):
            await thread.run(fail, None)
        assert await thread.run(lambda x: x + 1, 1) == 2
    finally:
        await thread.close()


async def test_a_cancelled_caller_leaves_the_call_to_finish_and_the_thread_usable() -> None:
    thread = CallThread("test-sql")
    release = threading.Event()
    ran: list[str] = []

    def slow(_: None) -> str:
        release.wait(5)
        ran.append("slow")
        return "late"

    try:
        waiting = asyncio.ensure_future(thread.run(slow, None))
        await asyncio.sleep(0.01)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        release.set()
        assert await thread.run(lambda x: x, "next") == "next"
        assert ran == ["slow"]
    finally:
        await thread.close()


async def test_close_runs_the_calls_queued_before_it_and_refuses_later_ones() -> None:
    thread = CallThread("test-sql")
    ran: list[int] = []
    queued = [asyncio.ensure_future(thread.run(ran.append, n)) for n in range(5)]
    await asyncio.sleep(0)  # the calls are on the thread's queue
    await thread.close()

    await asyncio.gather(*queued)
    assert ran == [0, 1, 2, 3, 4]
    with pytest.raises(RuntimeError, match="closed"):
        await thread.run(ran.append, 5)


# --- SqliteThread: writes on the loop's own connection, never waiting there --------------------------


def _engine(path: Path) -> Engine:
    engine = engine_for_url(f"sqlite:///{path}")
    assert isinstance(engine, Engine)
    return engine


def _create(conn: Connection) -> None:
    conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT)")


def _insert(body: str) -> Callable[[Connection], int]:
    def work(conn: Connection) -> int:
        return int(conn.execute(text("INSERT INTO notes (body) VALUES (:b) RETURNING id"), {"b": body}).scalar_one())

    return work


def _bodies(conn: Connection) -> list[str]:
    return [row[0] for row in conn.execute(text("SELECT body FROM notes ORDER BY id"))]


async def test_a_write_that_finds_the_file_locked_waits_on_the_thread_not_on_the_loop(tmp_path: Path) -> None:
    db = SqliteThread(_engine(tmp_path / "history.db"))
    await db.write(_create)
    # Another process's writer, as `relaybot chat` beside `relaybot run`: it holds the write lock.
    other = sqlite3.connect(tmp_path / "history.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO notes (body) VALUES ('from the other process')")
    try:
        writing = asyncio.ensure_future(db.write(_insert("from relaybot")))
        ticks = 0
        for _ in range(20):  # the loop keeps running while the write waits
            await asyncio.sleep(0.01)
            ticks += 1
        assert not writing.done()
        other.execute("COMMIT")
        await asyncio.wait_for(writing, 10)
        assert ticks == 20
        assert db.writes_on_thread == 1
        assert await db.read(_bodies) == ["from the other process", "from relaybot"]
        await db.write(_insert("back on the loop"))  # the lock is free: in place again
        assert db.writes_on_thread == 1
    finally:
        other.close()
        await db.close()


async def test_checkpoints_run_on_the_thread_and_keep_the_wal_small(tmp_path: Path) -> None:
    async def wal_after_writes(db: SqliteThread, name: str) -> int:
        await db.write(_create)
        for n in range(400):
            await db.write(_insert(f"{name} note {n} " + "x" * 2000))
            if n % 20 == 0:
                await asyncio.sleep(0.02)  # time for a checkpoint on the thread
        return (tmp_path / f"{name}.db-wal").stat().st_size

    often = SqliteThread(_engine(tmp_path / "often.db"), checkpoint_seconds=0.01)
    never = SqliteThread(_engine(tmp_path / "never.db"), checkpoint_seconds=3600)
    try:
        often_wal = await wal_after_writes(often, "often")
        never_wal = await wal_after_writes(never, "never")
        assert often.checkpoints > 5
        assert never.checkpoints <= 1  # the first write's, before the hour began
        # Without checkpoints every page ever written stays in the WAL (about 1 MB of notes here).
        assert never_wal > 800_000
        assert often_wal < never_wal / 4, (often_wal, never_wal)
    finally:
        await often.close()
        await never.close()


async def test_what_was_written_is_in_the_file_after_close(tmp_path: Path) -> None:
    db = SqliteThread(_engine(tmp_path / "history.db"))
    await db.write(_create)
    await asyncio.gather(*(db.write(_insert(f"note {n}")) for n in range(30)))
    await db.close()

    reopened = sqlite3.connect(tmp_path / "history.db")
    try:
        assert [r[0] for r in reopened.execute("SELECT body FROM notes ORDER BY id")] == [
            f"note {n}" for n in range(30)
        ]
    finally:
        reopened.close()


async def test_an_in_memory_database_writes_on_the_thread_where_its_reads_are() -> None:
    # A second connection to ":memory:" would be another, empty database.
    engine = engine_for_url("sqlite://")
    assert isinstance(engine, Engine)
    db = SqliteThread(engine)
    try:
        await db.write(_create)
        await db.write(_insert("kept"))
        assert await db.read(_bodies) == ["kept"]
        assert db.writes_on_thread == 2
    finally:
        await db.close()
