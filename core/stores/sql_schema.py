"""The tables of the durable history, and the statements read on every turn, built once.

`core.stores.sql` is the store on top of them; this module holds only what the database looks like.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Insert,
    Integer,
    Select,
    String,
    Table,
    Text,
    UniqueConstraint,
    bindparam,
    insert,
    select,
    tuple_,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from core.stores.base import Role, StoredMessage

__all__ = [
    "FACTS",
    "MESSAGES",
    "MESSAGES_BETWEEN",
    "MESSAGE_COLUMNS",
    "RECENT",
    "RECORDED_TURNS",
    "SUMMARY",
    "TURN_COLUMNS",
    "AppendInserts",
    "Base",
    "BulkInsert",
    "FactRecord",
    "MessageRecord",
    "RecordedTurn",
    "SummaryRecord",
    "Upserts",
    "last_seq_query",
    "to_message",
    "utc",
]


class Base(DeclarativeBase):
    """Metadata for every relaybot table, public so later tables and migrations can share it."""


class MessageRecord(Base):
    __tablename__ = "messages"
    # The unique index doubles as the read path: every query is "this session, by seq", so a
    # separate index on session_id alone would only slow writes down.
    __table_args__ = (UniqueConstraint("session_id", "seq", name="uq_messages_session_seq"),)

    # SQLite only autoincrements an INTEGER PRIMARY KEY; PostgreSQL gets 64 bits.
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    session_id: Mapped[str] = mapped_column(String())
    seq: Mapped[int] = mapped_column(Integer())
    bot: Mapped[str] = mapped_column(String())
    channel: Mapped[str] = mapped_column(String())
    user_id: Mapped[str] = mapped_column(String())
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text())
    ref: Mapped[str | None] = mapped_column(String())
    meta: Mapped[dict[str, str]] = mapped_column(JSON().with_variant(JSONB(), "postgresql"), default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class FactRecord(Base):
    """What a user told a bot about themselves: one row per (bot, user, key), replaced in place."""

    __tablename__ = "user_facts"
    __table_args__ = (UniqueConstraint("bot", "user_id", "key", name="uq_user_facts_bot_user_key"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    bot: Mapped[str] = mapped_column(String())
    user_id: Mapped[str] = mapped_column(String())
    key: Mapped[str] = mapped_column(String(64))
    value: Mapped[str] = mapped_column(Text())
    source: Mapped[str] = mapped_column(Text())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RecordedTurn(Base):
    """What one inbound message's turn stored, so that running the turn again stores nothing."""

    __tablename__ = "recorded_turns"

    session_id: Mapped[str] = mapped_column(String(), primary_key=True)
    turn_key: Mapped[str] = mapped_column(String(), primary_key=True)
    first_seq: Mapped[int] = mapped_column(Integer())
    count: Mapped[int] = mapped_column(Integer())


class SummaryRecord(Base):
    """A session's running summary of the messages that left its history window."""

    __tablename__ = "session_summaries"

    session_id: Mapped[str] = mapped_column(String(), primary_key=True)
    text: Mapped[str] = mapped_column(Text())
    through_seq: Mapped[int] = mapped_column(Integer())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


def utc(value: datetime) -> datetime:
    # SQLite hands datetimes back naive; everything relaybot stores is UTC, so naive means UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def to_message(row: Any) -> StoredMessage:
    """A stored message from an ORM record or a Core row of the messages table."""
    return StoredMessage(
        role=cast(Role, row.role),  # only ever written from a StoredMessage's Role
        content=row.content,
        created_at=utc(row.created_at),
        ref=row.ref,
        seq=row.seq,
        meta=dict(row.meta or {}),
    )


def last_seq_query(session_id: str) -> Select[int]:
    return (
        select(MessageRecord.seq)
        .where(MessageRecord.session_id == session_id)
        .order_by(MessageRecord.seq.desc())
        .limit(1)
    )


# Built once: a statement built per call spends more CPU computing its cache key than SQLite
# spends answering it. Core rows, not ORM objects: nothing here needs identity or change tracking.
MESSAGES = MessageRecord.__table__.c
RECENT = (
    select(MESSAGES.seq, MESSAGES.role, MESSAGES.content, MESSAGES.ref, MESSAGES.meta, MESSAGES.created_at)
    .where(MESSAGES.session_id == bindparam("session_id"))
    .order_by(MESSAGES.seq.desc())
    .limit(bindparam("limit"))
)
FACTS_TABLE = FactRecord.__table__.c
FACTS = (
    select(FACTS_TABLE.key, FACTS_TABLE.value, FACTS_TABLE.source, FACTS_TABLE.updated_at)
    .where(FACTS_TABLE.bot == bindparam("bot"), FACTS_TABLE.user_id == bindparam("user_id"))
    .order_by(FACTS_TABLE.key)
)
SUMMARIES = SummaryRecord.__table__.c
SUMMARY = select(SUMMARIES.text, SUMMARIES.through_seq, SUMMARIES.updated_at).where(
    SUMMARIES.session_id == bindparam("session_id")
)
RECORDED = RecordedTurn.__table__.c
RECORDED_TURNS = select(RECORDED.session_id, RECORDED.turn_key, RECORDED.first_seq, RECORDED.count).where(
    tuple_(RECORDED.session_id, RECORDED.turn_key).in_(bindparam("keys", expanding=True))
)
MESSAGES_BETWEEN = (
    select(*MESSAGES)
    .where(
        MESSAGES.session_id == bindparam("session_id"),
        MESSAGES.seq >= bindparam("first"),
        MESSAGES.seq < bindparam("end"),
    )
    .order_by(MESSAGES.seq)
)
#: the columns of a message row as `BulkInsert` takes it (the id is the database's)
MESSAGE_COLUMNS = ("session_id", "seq", "bot", "channel", "user_id", "role", "content", "ref", "meta", "created_at")
TURN_COLUMNS = ("session_id", "turn_key", "first_seq", "count")


@dataclass(frozen=True, slots=True)
class BulkInsert:
    """One INSERT of many rows, each a tuple of values in `columns` order, in one database's terms.

    On SQLite the rows go to the driver's executemany as they are, each value that needs it
    formatted by its column type's own bind processor, so it is stored exactly as SQLAlchemy stores
    it (dates as text, `meta` as JSON). SQLAlchemy's executemany built a dict of bound parameters
    for every row, about 4 µs a row, which was more than SQLite took to insert it. On PostgreSQL
    (asyncpg, whose driver SQL differs) the statement goes through SQLAlchemy as it did.
    """

    statement: Insert
    columns: tuple[str, ...]
    #: the driver's SQL on SQLite; None: through SQLAlchemy
    plain_sql: str | None
    #: (index, bind processor) of the columns whose values the driver cannot take as they are
    formats: tuple[tuple[int, Callable[[Any], Any]], ...]

    @classmethod
    def for_dialect(cls, table: Table, columns: tuple[str, ...], dialect: Dialect) -> BulkInsert:
        statement = insert(table)
        if dialect.name != "sqlite":
            return cls(statement=statement, columns=columns, plain_sql=None, formats=())
        formats = []
        for index, name in enumerate(columns):
            process = table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                formats.append((index, process))
        names = ", ".join(f'"{name}"' for name in columns)
        plain_sql = f'INSERT INTO "{table.name}" ({names}) VALUES ({", ".join("?" for _ in columns)})'
        return cls(statement=statement, columns=columns, plain_sql=plain_sql, formats=tuple(formats))

    def run(self, conn: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
        if self.plain_sql is None:
            conn.execute(self.statement, [dict(zip(self.columns, row, strict=True)) for row in rows])
            return
        plain: Sequence[Sequence[Any]] = rows
        if self.formats:
            formatted = []
            for row in rows:
                values = list(row)
                for index, process in self.formats:
                    values[index] = process(values[index])
                formatted.append(tuple(values))
            plain = formatted
        # Through the connection, not the driver's cursor: statement listeners still see it.
        conn.exec_driver_sql(self.plain_sql, plain)


@dataclass(frozen=True, slots=True)
class AppendInserts:
    """An append's two inserts, built once per store for its database."""

    messages: BulkInsert
    turns: BulkInsert

    @classmethod
    def for_dialect(cls, dialect: Dialect) -> AppendInserts:
        return cls(
            messages=BulkInsert.for_dialect(MessageRecord.__table__, MESSAGE_COLUMNS, dialect),  # type: ignore[arg-type]
            turns=BulkInsert.for_dialect(RecordedTurn.__table__, TURN_COLUMNS, dialect),  # type: ignore[arg-type]
        )


@dataclass(frozen=True, slots=True)
class Upserts:
    """The memory tables' upserts in one database's dialect (INSERT … ON CONFLICT DO UPDATE … WHERE:
    both backends speak it; one statement, no read-then-write race), built once per store."""

    remember: Insert
    save_summary: Insert

    @classmethod
    def for_dialect(cls, dialect: str) -> Upserts:
        insert_for = postgresql.insert if dialect == "postgresql" else sqlite.insert
        facts = FactRecord.__table__
        remember = insert_for(FactRecord)
        remember = remember.on_conflict_do_update(
            index_elements=[facts.c.bot, facts.c.user_id, facts.c.key],
            set_={
                "value": remember.excluded.value,
                "source": remember.excluded.source,
                "updated_at": remember.excluded.updated_at,
            },
            # A late extraction of an older message must not undo a newer statement.
            where=facts.c.updated_at <= remember.excluded.updated_at,
        )
        summaries = SummaryRecord.__table__
        save = insert_for(SummaryRecord)
        save = save.on_conflict_do_update(
            index_elements=[summaries.c.session_id],
            set_={
                "text": save.excluded.text,
                "through_seq": save.excluded.through_seq,
                "updated_at": save.excluded.updated_at,
            },
            # Summaries only move forward: a late fold of older messages never replaces a newer one.
            where=summaries.c.through_seq < save.excluded.through_seq,
        )
        return cls(remember=remember, save_summary=save)
