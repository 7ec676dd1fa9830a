"""SQLite writes on the event loop's own thread, with what could stall the loop kept off it.

Handing each write to the SQLite thread cost more than the write: on a 2-core machine the woken
thread waited about as long for a CPU as it then ran, and a turn waited about 15 ms for its commit,
half its latency with 50 busy sessions (bench/README.md, sixth pass). Written in place, a batch of
appends costs its page writes and nothing else. Two things could still stall every socket, and this
connection is set up to refuse both rather than wait:

- a write lock held by another process (`relaybot chat` beside `relaybot run` on one file): the
  busy timeout is 0, and a write that finds the database locked raises `DatabaseLocked` at once,
  for the caller to run it on the thread, which waits;
- a checkpoint, which syncs the database file: automatic checkpoints are off on this connection,
  and the caller runs them on the thread (while one runs, writes find the file locked and wait
  for it there).

A commit in WAL mode with `synchronous=NORMAL` does not sync, so neither does a write here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError

__all__ = ["DatabaseLocked", "InlineWriter", "can_write_inline"]


class DatabaseLocked(Exception):
    """Another connection holds the database's write lock; nothing was written."""


def can_write_inline(engine: Engine) -> bool:
    """Only a database file can be shared by two connections: an in-memory database is private to
    the connection that opened it, so the thread's reads would never see these writes."""
    database = engine.url.database or ""
    return bool(database) and database != ":memory:" and "mode=memory" not in str(engine.url)


class InlineWriter:
    """Units of work in one transaction on a connection of the event loop's thread."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._conn: Connection | None = None

    def write_all(self, works: list[Callable[[Connection], Any]]) -> list[Any]:
        """Run `works` in one transaction and return what each returned; `DatabaseLocked` (rolled
        back, connection kept) if another connection holds the write lock."""
        conn = self._connection()
        try:
            with conn.begin():
                return [work(conn) for work in works]
        except BaseException as exc:
            if isinstance(exc, OperationalError) and _is_locked(exc):
                raise DatabaseLocked(str(exc.orig)) from exc
            # The connection may be unusable (a file that went away, a full disk): the next write opens
            # a fresh one rather than failing the same way for ever.
            self.close()
            raise

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # already failing or closing: nothing to add
                conn.close()

    def detach(self) -> Connection | None:
        """Hand the connection over (to be closed elsewhere: its close may checkpoint and sync)."""
        conn, self._conn = self._conn, None
        return conn

    def _connection(self) -> Connection:
        if self._conn is None or self._conn.closed or self._conn.invalidated:
            conn = self._engine.connect()
            conn.exec_driver_sql("PRAGMA busy_timeout=0")
            conn.exec_driver_sql("PRAGMA wal_autocheckpoint=0")
            conn.commit()
            self._conn = conn
        return self._conn


def _is_locked(exc: OperationalError) -> bool:
    name = getattr(exc.orig, "sqlite_errorname", "")
    return name.startswith("SQLITE_BUSY") or name.startswith("SQLITE_LOCKED") or "database is locked" in str(exc.orig)
