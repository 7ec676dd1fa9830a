"""Operator accounts: who may sign in to the console, and which bots they serve.

One row per operator in the `operators` table, beside the history in the same database (SQLite
embedded, PostgreSQL in production). Passwords are stored as bcrypt hashes only; hashing and
checking run on a thread (about 0.2 s of CPU at the default cost), never on the event loop.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import bcrypt
from sqlalchemy import JSON, DateTime, String, Table, delete, insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Mapped, mapped_column

from core.errors import RelaybotError, StoreError
from core.stores.sql import engine_for_url
from core.stores.sql_exec import SqlExecutor, executor_for
from core.stores.sql_schema import Base, utc

__all__ = [
    "AccountError",
    "Operator",
    "OperatorAccounts",
    "OperatorExists",
    "OperatorRecord",
    "PasswordRejected",
    "normalize_email",
]

#: bcrypt reads at most this many bytes of a password (bcrypt 5 refuses longer ones)
MAX_PASSWORD_BYTES = 72
MIN_PASSWORD_CHARS = 10
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


class AccountError(RelaybotError):
    """An account request that cannot be carried out; the message says why."""


class OperatorExists(AccountError):
    pass


class PasswordRejected(AccountError):
    """A new password that does not meet the rules (length)."""


class OperatorRecord(Base):
    __tablename__ = "operators"

    email: Mapped[str] = mapped_column(String(320), primary_key=True)
    password_hash: Mapped[str] = mapped_column(String(100))
    #: the bots this operator serves; NULL: every bot
    bots: Mapped[list[str] | None] = mapped_column(JSON(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


_TABLE = cast(Table, OperatorRecord.__table__)


@dataclass(frozen=True, slots=True, kw_only=True)
class Operator:
    email: str
    #: None: every bot
    bots: tuple[str, ...] | None
    created_at: datetime

    def serves(self, bot: str) -> bool:
        return self.bots is None or bot in self.bots

    def describe_bots(self) -> str:
        return "all bots" if self.bots is None else ", ".join(self.bots)


def normalize_email(email: str) -> str:
    """Emails compare case-insensitively and without surrounding spaces (what people type)."""
    return email.strip().lower()


def check_new_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_CHARS:
        raise PasswordRejected(f"the password must have at least {MIN_PASSWORD_CHARS} characters")
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise PasswordRejected(f"the password must be at most {MAX_PASSWORD_BYTES} bytes (bcrypt reads no more)")


def _row_to_operator(row: Any) -> Operator:
    return Operator(email=row.email, bots=None if row.bots is None else tuple(row.bots), created_at=utc(row.created_at))


class OperatorAccounts:
    """The operators table. `rounds` is the bcrypt cost of new hashes (checks use each hash's own)."""

    def __init__(self, db: SqlExecutor, *, rounds: int = 12, owns_db: bool = False) -> None:
        self._db = db
        self._rounds = rounds
        self._owns_db = owns_db
        self._dummy_hash: bytes | None = None

    @classmethod
    async def open(cls, database_url: str, *, rounds: int = 12) -> OperatorAccounts:
        """The accounts in the database at DATABASE_URL, on a connection of their own (table created)."""
        accounts = cls(executor_for(engine_for_url(database_url)), rounds=rounds, owns_db=True)
        try:
            await accounts.create_schema()
        except BaseException:
            await accounts.close()
            raise
        return accounts

    async def close(self) -> None:
        if self._owns_db:
            await self._db.close()

    async def create_schema(self) -> None:
        attempts = 5
        for attempt in range(attempts):
            try:
                await self._db.write(lambda conn: Base.metadata.create_all(conn, tables=[_TABLE]))
                return
            except SQLAlchemyError as exc:
                # Two processes starting at once: the slower CREATE fails on the table the other made.
                if "already exists" in str(exc):
                    return
                # SQLite may answer one of two processes starting on a new file "database is locked".
                if "database is locked" in str(exc) and attempt < attempts - 1:
                    await asyncio.sleep(0.1 * (attempt + 1))
                    continue
                raise StoreError(f"cannot create the operators table: {exc}") from exc

    async def add(self, email: str, password: str, *, bots: Sequence[str] | None = None) -> Operator:
        email = normalize_email(email)
        if not _EMAIL.match(email):
            raise AccountError(f"{email!r} is not an email address")
        check_new_password(password)
        hashed = await asyncio.to_thread(bcrypt.hashpw, password.encode(), bcrypt.gensalt(self._rounds))
        operator = Operator(
            email=email, bots=None if bots is None else tuple(bots), created_at=datetime.now(UTC).replace(microsecond=0)
        )
        row = {
            "email": email,
            "password_hash": hashed.decode(),
            "bots": None if operator.bots is None else list(operator.bots),
            "created_at": operator.created_at,
        }
        try:
            await self._db.write(lambda conn: conn.execute(insert(OperatorRecord), row))
        except IntegrityError as exc:
            raise OperatorExists(
                f"an operator {email!r} already exists (remove it first with `relaybot operator remove {email}`)"
            ) from exc
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot store the operator {email!r}: {exc}") from exc
        return operator

    async def get(self, email: str) -> Operator | None:
        row = await self._read_row(normalize_email(email))
        return None if row is None else _row_to_operator(row)

    async def verify(self, email: str, password: str) -> Operator | None:
        """The operator if the password is theirs, else None. An unknown email costs a bcrypt
        check too, so the time taken does not tell which emails have accounts."""
        row = await self._read_row(normalize_email(email))
        given = password.encode()
        if row is None:
            await asyncio.to_thread(self._check, given, await self._dummy())
            return None
        if not await asyncio.to_thread(self._check, given, row.password_hash.encode()):
            return None
        return _row_to_operator(row)

    @staticmethod
    def _check(password: bytes, hashed: bytes) -> bool:
        if len(password) > MAX_PASSWORD_BYTES:
            return False  # never a stored password (refused when it was set)
        return bcrypt.checkpw(password, hashed)

    async def _dummy(self) -> bytes:
        if self._dummy_hash is None:
            self._dummy_hash = await asyncio.to_thread(
                bcrypt.hashpw, b"not anyone's password", bcrypt.gensalt(self._rounds)
            )
        return self._dummy_hash

    async def list(self) -> list[Operator]:
        def read(conn: Connection) -> list[Operator]:
            rows = conn.execute(select(_TABLE.c.email, _TABLE.c.bots, _TABLE.c.created_at).order_by(_TABLE.c.email))
            return [_row_to_operator(r) for r in rows]

        try:
            return await self._db.read(read)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read the operators: {exc}") from exc

    async def remove(self, email: str) -> bool:
        email = normalize_email(email)
        statement = delete(OperatorRecord).where(_TABLE.c.email == email)
        try:
            removed = await self._db.write(lambda conn: conn.execute(statement).rowcount)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot remove the operator {email!r}: {exc}") from exc
        return bool(removed)

    async def _read_row(self, email: str) -> Any:
        query = select(_TABLE).where(_TABLE.c.email == email)
        try:
            return await self._db.read(lambda conn: conn.execute(query).first())
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read the operator {email!r}: {exc}") from exc
