"""The durable transcript in SQL: SQLite when embedded, PostgreSQL in production, same models.

Each message is one row keyed by (session_id, seq). A turn inserts only its new rows, and every
read walks the (session_id, seq) index from one end, so neither grows with the conversation.
Memory keeps two small tables beside it: `user_facts` (one row per bot, user and key, replaced in
place) and `session_summaries` (one row per session); both are written with one upsert statement.
The tables and the statements every turn runs are in `core.stores.sql_schema`, and where the SQL
runs (SQLite's writes in place and reads on a thread, asyncpg for PostgreSQL) in
`core.stores.sql_exec`; this module is the store: URLs and engines, appends (group-committed), reads
and upserts, each written once as a plain function of a connection.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    create_engine,
    delete,
    event,
    literal,
    select,
    union_all,
)
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from core.errors import ConfigError, StoreError
from core.stores.base import Role, StoredMessage, Summary, UserFact
from core.stores.sql_exec import SqlExecutor, executor_for
from core.stores.sql_schema import (
    FACTS,
    MESSAGES,
    MESSAGES_BETWEEN,
    RECENT,
    RECORDED_TURNS,
    SUMMARY,
    AppendInserts,
    Base,
    FactRecord,
    MessageRecord,
    RecordedTurn,
    SummaryRecord,
    Upserts,
    last_seq_query,
    to_message,
    utc,
)

__all__ = ["Base", "FactRecord", "MessageRecord", "RecordedTurn", "SqlHistoryStore", "SummaryRecord", "engine_for_url"]

# Concurrent writers to one session are serialized by the conversation lock upstream; retries only
# cover the rare writer that slips past it (e.g. a lock that expired). Each failed try means some
# other writer succeeded, so N racing writers all finish within N tries.
_APPEND_ATTEMPTS = 5

_DB_ERRORS = (SQLAlchemyError, OSError)

#: conversations whose last seq a store remembers (the most recently written)
_LAST_SEQS_KEPT = 10_000

# Plain schemes as users paste them (and as hosting providers hand them out), mapped to the driver
# relaybot runs: asyncpg for PostgreSQL; for SQLite the standard library's, run by `core.stores.sql_exec`
# (sqlite+aiosqlite URLs, which earlier versions documented, mean the same database).
_DRIVERS = {
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "sqlite": "sqlite+pysqlite",
    "sqlite+aiosqlite": "sqlite+pysqlite",
}


@dataclass(slots=True, kw_only=True)
class _Append:
    session_id: str
    bot: str
    channel: str
    user_id: str
    messages: Sequence[StoredMessage]
    #: the inbound message's key: stored once per session and key (see HistoryStore.append)
    turn_key: str | None = None
    #: set while the request waits for a group commit
    done: asyncio.Future[list[StoredMessage]] | None = None


def database_kind(url: str) -> str:
    """ "PostgreSQL" or "SQLite", for messages that must name the kind of database but not where it is."""
    return "PostgreSQL" if _driver_url(url).get_backend_name() == "postgresql" else "SQLite"


def _driver_url(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"DATABASE_URL is not a valid database URL: {exc}") from exc
    drivername = _DRIVERS.get(parsed.drivername, parsed.drivername)
    if drivername.split("+")[0] not in {"postgresql", "sqlite"}:
        raise ConfigError(
            f"DATABASE_URL uses {parsed.drivername!r}; relaybot supports "
            f"postgresql://user:password@host/database and sqlite:///path/to/file.db"
        )
    parsed = parsed.set(drivername=drivername)
    if drivername == "postgresql+asyncpg" and "sslmode" in parsed.query:
        # Hosted PostgreSQL URLs carry libpq's `sslmode`; asyncpg takes the same values as `ssl`.
        parsed = parsed.difference_update_query(["sslmode"]).update_query_dict({"ssl": parsed.query["sslmode"]})
    return parsed


def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # WAL lets readers (the web channel, exports) run while a turn writes, without losing crash safety.
        cursor.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL syncs at checkpoints, not at every commit: a crash of the process loses
        # nothing and the file never corrupts; a power cut may lose the last commits, as it loses
        # what the embedded queue held in memory and Redis's last second (appendfsync everysec).
        # FULL spent more CPU in fsync than the whole append.
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def engine_for_url(url: str) -> Engine | AsyncEngine:
    """The engine for DATABASE_URL (plain postgresql:// and sqlite:// URLs get relaybot's drivers):
    a sync SQLite engine (see `core.stores.sql_exec` for where its SQL runs), or an async engine on asyncpg."""
    parsed = _driver_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            try:
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"cannot create the folder for the SQLite database {database!r} ({exc}): "
                    f"check DATABASE_URL and the folder's permissions"
                ) from exc
        # Other processes on the same file (relaybot chat beside relaybot run) wait, not fail (the loop's
        # own write connection sets its timeout to 0 instead, see core.stores.sqlite_inline). Each
        # connection is used by one thread at a time, but the loop's is closed on the store's thread.
        sqlite_engine = create_engine(parsed, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(sqlite_engine, "connect", _tune_sqlite)
        return sqlite_engine
    # No overflow: reads beyond the pool's 20 at once wait for a connection rather than open one. An
    # overflow connection is a new PostgreSQL backend, opened and closed again for every few messages
    # once a worker runs more turns than the pool holds (64 by default): the server's CPU per message
    # was 0.43-0.49 ms with 20 more on overflow and 0.18 ms without (bench/distributed_throughput.py).
    # No pre-ping: a dropped connection is retried once instead (see AsyncEngineExecutor).
    return create_async_engine(parsed, pool_size=20, max_overflow=0)


class SqlHistoryStore:
    """`HistoryStore` on a SQLAlchemy engine: a sync SQLite engine (writes in place, reads on a thread)
    or an async engine (PostgreSQL on asyncpg). `from_url` builds the right one from DATABASE_URL."""

    def __init__(self, engine: Engine | AsyncEngine) -> None:
        self._db: SqlExecutor = executor_for(engine)
        self._dialect = engine.dialect.name
        self._queued: list[_Append] = []
        self._last_seqs: OrderedDict[str, int] = OrderedDict()
        self._committer: asyncio.Task[None] | None = None
        self._where = engine.url.render_as_string(hide_password=True)
        self._statements = Upserts.for_dialect(self._dialect)
        self._inserts = AppendInserts.for_dialect(engine.dialect)

    @property
    def sync_engine(self) -> Engine:
        """The engine the store's SQL runs on (for event listeners: statements, commits)."""
        return self._db.sync_engine

    @classmethod
    def from_url(cls, url: str) -> SqlHistoryStore:
        """The store for DATABASE_URL; plain postgresql:// and sqlite:// URLs get relaybot's drivers."""
        return cls(engine_for_url(url))

    def _failure(self, action: str, exc: Exception) -> StoreError:
        # DBAPIError's own text repeats the SQL and parameters; the driver's message is the useful part.
        cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
        return StoreError(
            f"history database at {self._where} failed while {action}: {cause}. "
            f"Check that the database server is running, that DATABASE_URL points at it, "
            f"and that the schema exists (SqlHistoryStore.create_schema)"
        )

    async def create_schema(self) -> None:
        attempts = 5
        for attempt in range(attempts):
            try:
                await self._db.write(Base.metadata.create_all)
                return
            except _DB_ERRORS as exc:
                # Two processes starting at once (an adapter and a worker on one SQLite file) both
                # see no table, and the slower CREATE fails; the next try sees the table and skips it.
                # Or SQLite answers one of them "database is locked" (two connections on a new
                # file both wanting the lock to set it up; seen in 5 of 200 such starts); the next
                # try, once the other has committed, finds the tables made.
                if attempt < attempts - 1 and ("already exists" in str(exc) or "database is locked" in str(exc)):
                    await asyncio.sleep(0.1 * (attempt + 1))
                    continue
                raise self._failure("creating the schema", exc) from exc

    async def append(
        self,
        *,
        session_id: str,
        bot: str,
        channel: str,
        user_id: str,
        messages: Sequence[StoredMessage],
        turn_key: str | None = None,
    ) -> list[StoredMessage]:
        if not messages:
            return []
        request = _Append(
            session_id=session_id, bot=bot, channel=channel, user_id=user_id, messages=messages, turn_key=turn_key
        )
        return await self._group_commit(request)

    async def _append_alone(self, request: _Append, *, check_recorded: bool = False) -> list[StoredMessage]:
        attempts_left = _APPEND_ATTEMPTS
        while True:
            try:
                [saved] = await self._insert([request], check_recorded=check_recorded)
                return saved
            except IntegrityError as exc:
                # Another writer took these seq numbers first, or this turn was recorded before (its
                # key is taken): the next try reads the new maximum and looks the turn up first.
                check_recorded = True
                attempts_left -= 1
                if attempts_left == 0:
                    raise StoreError(
                        f"could not append to session {request.session_id!r} in the history database at "
                        f"{self._where}: other writers took the next sequence number "
                        f"{_APPEND_ATTEMPTS} times in a row. Is more than one worker handling this "
                        f"conversation without holding its lock?"
                    ) from exc
            except _DB_ERRORS as exc:
                raise self._failure("appending messages", exc) from exc

    async def _group_commit(self, request: _Append) -> list[StoredMessage]:
        """Appends that queue behind a commit in flight go in together: one transaction and one
        commit for the lot, instead of one each. SQLite has one writer, so this saves an fsync per
        turn; on PostgreSQL it halves the server's CPU per message (0.43 -> 0.22 ms measured with
        bench/distributed_throughput.py) and the worker's round trips. Each caller still returns
        only once its rows are committed."""
        request.done = asyncio.get_running_loop().create_future()
        self._queued.append(request)
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_queued(), name="relaybot-history-group-commit")
        return await request.done

    async def _commit_queued(self) -> None:
        while self._queued:
            batch, self._queued = self._queued, []
            try:
                try:
                    results = await self._insert(batch, check_recorded=False)
                except _DB_ERRORS:
                    # One request may be at fault (a writer outside this process took its seq):
                    # each on its own, so the others still land and the culprit gets its error.
                    for one in batch:
                        await self._settle_alone(one)
                    continue
                for one, saved in zip(batch, results, strict=True):
                    if one.done is not None and not one.done.done():
                        one.done.set_result(saved)
            except BaseException as exc:
                for one in batch:
                    if one.done is not None and not one.done.done():
                        one.done.set_exception(self._failure("appending messages", StoreError(str(exc))))
                raise

    async def _settle_alone(self, request: _Append) -> None:
        try:
            saved = await self._append_alone(request, check_recorded=True)
        except Exception as exc:
            if request.done is not None and not request.done.done():
                request.done.set_exception(exc)
            return
        if request.done is not None and not request.done.done():
            request.done.set_result(saved)

    async def _insert(self, batch: Sequence[_Append], *, check_recorded: bool) -> list[list[StoredMessage]]:
        """Insert every request's messages in one transaction, each session numbered on from its last seq.

        The last seq of a session this process wrote lately is remembered, so a busy conversation's
        append is one INSERT. If another writer appended meanwhile, the remembered seq is taken (seqs
        have no gaps), the unique index refuses the insert, and the retry reads the real one.

        A turn run again is rare (a crash, a store error), so the first try does not look for what
        it recorded before (`check_recorded`): the recorded turn's key refuses the insert, and the
        retry, which looks, returns what was stored then. Looking every time was half the cost of
        an append.
        """
        sessions = list(dict.fromkeys(r.session_id for r in batch))
        known = {s: self._last_seqs[s] for s in sessions if s in self._last_seqs}
        try:
            results, last = await self._db.write(
                lambda conn: _insert_rows(conn, self._inserts, batch, known, check_recorded)
            )
        except BaseException:
            for session_id in sessions:
                self._last_seqs.pop(session_id, None)
            raise
        for session_id in sessions:
            self._last_seqs[session_id] = last[session_id]
            self._last_seqs.move_to_end(session_id)
        while len(self._last_seqs) > _LAST_SEQS_KEPT:
            self._last_seqs.popitem(last=False)
        return results

    async def recent(self, session_id: str, limit: int) -> list[StoredMessage]:
        if limit <= 0:
            return []
        try:
            rows = await self._db.read(
                lambda conn: conn.execute(RECENT, {"session_id": session_id, "limit": limit}).all()
            )
        except _DB_ERRORS as exc:
            raise self._failure("reading recent messages", exc) from exc
        return [to_message(row) for row in reversed(rows)]

    async def after(
        self, session_id: str, seq: int, *, role: Role | None = None, last: int | None = None
    ) -> list[StoredMessage]:
        query = select(*MessageRecord.__table__.c).where(MESSAGES.session_id == session_id, MESSAGES.seq > seq)
        if role is not None:
            query = query.where(MESSAGES.role == role)
        if last is not None:
            query = query.order_by(MESSAGES.seq.desc()).limit(max(0, last))
        else:
            query = query.order_by(MESSAGES.seq)
        try:
            rows = await self._db.read(lambda conn: conn.execute(query).all())
        except _DB_ERRORS as exc:
            raise self._failure("reading messages", exc) from exc
        return [to_message(row) for row in (reversed(rows) if last is not None else rows)]

    async def _write(self, statement: Any, params: Any = None) -> int:
        """Run one writing statement in a transaction of its own; the rows it touched."""
        return await self._db.write(lambda conn: int(getattr(conn.execute(statement, params), "rowcount", 0) or 0))

    async def remember(self, *, bot: str, user_id: str, facts: Sequence[UserFact]) -> None:
        if not facts:
            return
        # One row per key: if a batch names a key twice, the newest wins before the database sees it.
        latest: dict[str, UserFact] = {}
        for fact in facts:
            if fact.key not in latest or latest[fact.key].updated_at <= fact.updated_at:
                latest[fact.key] = fact
        rows = [
            {
                "bot": bot,
                "user_id": user_id,
                "key": f.key,
                "value": f.value,
                "source": f.source,
                "updated_at": utc(f.updated_at),
            }
            for f in latest.values()
        ]
        try:
            await self._write(self._statements.remember, rows)
        except _DB_ERRORS as exc:
            raise self._failure("storing user facts", exc) from exc

    async def facts(self, bot: str, user_id: str) -> list[UserFact]:
        try:
            return await self._db.read(lambda conn: _read_facts(conn, bot, user_id))
        except _DB_ERRORS as exc:
            raise self._failure("reading user facts", exc) from exc

    async def forget(self, bot: str, user_id: str, keys: Sequence[str] | None = None) -> int:
        statement = delete(FactRecord).where(FactRecord.bot == bot, FactRecord.user_id == user_id)
        if keys is not None:
            if not keys:
                return 0
            statement = statement.where(FactRecord.key.in_(list(keys)))
        try:
            return await self._write(statement)
        except _DB_ERRORS as exc:
            raise self._failure("forgetting user facts", exc) from exc

    async def summary(self, session_id: str) -> Summary | None:
        try:
            return await self._db.read(lambda conn: _read_summary(conn, session_id))
        except _DB_ERRORS as exc:
            raise self._failure("reading the session summary", exc) from exc

    async def facts_and_summary(self, bot: str, user_id: str, session_id: str) -> tuple[list[UserFact], Summary | None]:
        try:
            return await self._db.read(lambda conn: (_read_facts(conn, bot, user_id), _read_summary(conn, session_id)))
        except _DB_ERRORS as exc:
            raise self._failure("reading user facts and the session summary", exc) from exc

    async def save_summary(self, session_id: str, summary: Summary) -> bool:
        row = {
            "session_id": session_id,
            "text": summary.text,
            "through_seq": summary.through_seq,
            "updated_at": utc(summary.updated_at),
        }
        try:
            return await self._write(self._statements.save_summary, row) > 0
        except _DB_ERRORS as exc:
            raise self._failure("storing the session summary", exc) from exc

    async def ping(self) -> None:
        try:
            await self._db.read(lambda conn: conn.exec_driver_sql("SELECT 1"))
        except _DB_ERRORS as exc:
            raise self._failure("checking the connection", exc) from exc

    async def close(self) -> None:
        if self._committer is not None:
            # Appends already accepted are committed before the engine goes away.
            await asyncio.gather(self._committer, return_exceptions=True)
        await self._db.close()


def _insert_rows(
    conn: Connection, inserts: AppendInserts, batch: Sequence[_Append], known: dict[str, int], check_recorded: bool
) -> tuple[list[list[StoredMessage]], dict[str, int]]:
    """`SqlHistoryStore._insert`'s work in the transaction: each request's stored messages, and
    each session's last seq after the batch. `known`: the last seqs the store remembers."""
    last = dict(known)
    unknown = list(dict.fromkeys(r.session_id for r in batch if r.session_id not in last))
    recorded = _recorded_turns(conn, batch) if check_recorded else {}
    if unknown:
        # One statement for the rest, each session's last seq read from the end of its index.
        lookups = [
            select(literal(s).label("session_id"), last_seq_query(s).scalar_subquery().label("seq")) for s in unknown
        ]
        lookup = lookups[0] if len(lookups) == 1 else union_all(*lookups)
        last.update({s: seq or 0 for s, seq in conn.execute(lookup).all()})
    results: list[list[StoredMessage]] = []
    rows: list[tuple[Any, ...]] = []
    turns: list[tuple[Any, ...]] = []
    for request in batch:
        turn = (request.session_id, request.turn_key) if request.turn_key is not None else None
        if turn is not None and turn in recorded:
            # This turn ran before (a crash, a store error): what it stored is the answer.
            results.append(recorded[turn])
            continue
        start = last[request.session_id] + 1
        saved = [
            m.restamped(seq=start + i, created_at=utc(m.created_at), meta=dict(m.meta))
            for i, m in enumerate(request.messages)
        ]
        last[request.session_id] = start + len(saved) - 1
        results.append(saved)
        if turn is not None:
            recorded[turn] = saved
            turns.append((request.session_id, request.turn_key, start, len(saved)))
        # In MESSAGE_COLUMNS order.
        rows.extend(
            (
                request.session_id,
                m.seq,
                request.bot,
                request.channel,
                request.user_id,
                m.role,
                m.content,
                m.ref,
                m.meta,
                m.created_at,
            )
            for m in saved
        )
    if rows:
        inserts.messages.run(conn, rows)
    if turns:
        inserts.turns.run(conn, turns)
    return results, last


def _recorded_turns(conn: Connection, batch: Sequence[_Append]) -> dict[tuple[str, str], list[StoredMessage]]:
    """What the batch's keyed turns stored before, if they ran before (rare: a re-run)."""
    keys = sorted({(r.session_id, r.turn_key) for r in batch if r.turn_key is not None})
    if not keys:
        return {}
    recorded: dict[tuple[str, str], list[StoredMessage]] = {}
    for session_id, turn_key, first_seq, count in conn.execute(RECORDED_TURNS, {"keys": keys}).all():
        stored = conn.execute(
            MESSAGES_BETWEEN, {"session_id": session_id, "first": first_seq, "end": first_seq + count}
        ).all()
        recorded[(session_id, turn_key)] = [to_message(row) for row in stored]
    return recorded


def _read_facts(conn: Connection, bot: str, user_id: str) -> list[UserFact]:
    return [
        UserFact(key=row.key, value=row.value, source=row.source, updated_at=utc(row.updated_at))
        for row in conn.execute(FACTS, {"bot": bot, "user_id": user_id})
    ]


def _read_summary(conn: Connection, session_id: str) -> Summary | None:
    row = conn.execute(SUMMARY, {"session_id": session_id}).first()
    if row is None:
        return None
    return Summary(text=row.text, through_seq=row.through_seq, updated_at=utc(row.updated_at))
