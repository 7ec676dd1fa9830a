"""Search of past conversations in the durable history, by user, channel and text.

Reads the history's `messages` table directly (the history store's seam has no search: turns
never need one). Matching is a case-insensitive substring on the user id and the text, exact on
the channel, newest first; the text match scans the messages of the operator's bots, so results
are capped (`limit` conversations, from the newest `scan` matching messages).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from core.errors import StoreError
from core.stores.sql import engine_for_url
from core.stores.sql_exec import SqlExecutor, executor_for
from core.stores.sql_schema import MESSAGES, utc

__all__ = ["ConversationHit", "HistorySearch", "SearchQuery"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SearchQuery:
    text: str = ""
    user: str = ""
    channel: str = ""
    #: the operator's bots (None: every bot)
    bots: Sequence[str] | None = None

    @property
    def empty(self) -> bool:
        return not (self.text.strip() or self.user.strip() or self.channel.strip())


@dataclass(frozen=True, slots=True, kw_only=True)
class ConversationHit:
    session_id: str
    bot: str
    channel: str
    user_id: str
    #: the newest matching message, and when it was written
    snippet: str
    last_at: datetime
    matches: int


class HistorySearch:
    def __init__(self, db: SqlExecutor, *, owns_db: bool = False) -> None:
        self._db = db
        self._owns_db = owns_db

    @classmethod
    def from_url(cls, database_url: str) -> HistorySearch:
        return cls(executor_for(engine_for_url(database_url)), owns_db=True)

    async def close(self) -> None:
        if self._owns_db:
            await self._db.close()

    async def search(self, query: SearchQuery, *, limit: int = 50, scan: int = 1000) -> list[ConversationHit]:
        """Conversations with messages matching every given criterion, newest first."""
        if query.empty or (query.bots is not None and not query.bots):
            return []
        statement: Any = select(
            MESSAGES.session_id, MESSAGES.bot, MESSAGES.channel, MESSAGES.user_id, MESSAGES.content, MESSAGES.created_at
        )
        if query.bots is not None:
            statement = statement.where(MESSAGES.bot.in_(list(query.bots)))
        if query.channel.strip():
            statement = statement.where(MESSAGES.channel == query.channel.strip())
        if query.user.strip():
            statement = statement.where(
                func.lower(MESSAGES.user_id).contains(query.user.strip().lower(), autoescape=True)
            )
        if query.text.strip():
            statement = statement.where(
                func.lower(MESSAGES.content).contains(query.text.strip().lower(), autoescape=True)
            )
        statement = statement.order_by(MESSAGES.created_at.desc(), MESSAGES.id.desc()).limit(scan)

        def run(conn: Connection) -> list[ConversationHit]:
            hits: dict[str, ConversationHit] = {}
            counts: dict[str, int] = {}
            for row in conn.execute(statement):
                counts[row.session_id] = counts.get(row.session_id, 0) + 1
                if row.session_id not in hits and len(hits) < limit:
                    hits[row.session_id] = ConversationHit(
                        session_id=row.session_id,
                        bot=row.bot,
                        channel=row.channel,
                        user_id=row.user_id,
                        snippet=row.content[:300],
                        last_at=utc(row.created_at),
                        matches=0,
                    )
            return [replace(hit, matches=counts[hit.session_id]) for hit in hits.values()]

        try:
            return await self._db.read(run)
        except SQLAlchemyError as exc:
            raise StoreError(f"searching the history failed: {exc}") from exc
