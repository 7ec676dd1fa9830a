"""Chats whose user blocked the bot: recorded in the conversation's durable history.

Telegram answers 403 "bot was blocked by the user" to every send until the user unblocks the bot
(and a user who blocked a bot cannot write to it). So the block is a fact about the conversation,
and it is recorded where the conversation lives: a `system` notice in the history store (SQL,
shared by every process), which the pipeline keeps out of the model's context. A chat counts as
blocked while its newest block notice is newer than both its newest unblock notice (a
`my_chat_member` update) and the newest message the user sent: writing again means unblocked.
"""

from __future__ import annotations

from datetime import UTC, datetime

from core.stores.base import HistoryStore, StoredMessage

EVENT = "telegram_membership"
BLOCKED = "blocked"
UNBLOCKED = "unblocked"
#: how far back to look; a blocked chat gets no new assistant messages, so the notice stays near the end
WINDOW = 20


class BlockedChats:
    def __init__(self, history: HistoryStore) -> None:
        self._history = history

    async def is_blocked(self, session_id: str) -> bool:
        blocked_at: datetime | None = None
        open_at: datetime | None = None
        for message in await self._history.recent(session_id, WINDOW):
            state = message.meta.get(EVENT)
            if state == BLOCKED:
                blocked_at = max(blocked_at or message.created_at, message.created_at)
            elif state == UNBLOCKED or message.role == "user":
                open_at = max(open_at or message.created_at, message.created_at)
        return blocked_at is not None and (open_at is None or blocked_at > open_at)

    async def record(self, *, session_id: str, bot: str, user_id: str, blocked: bool, detail: str = "") -> None:
        text = (
            f"Delivery stopped: the user blocked the bot on Telegram ({detail or 'membership: kicked'})."
            if blocked
            else "The user unblocked the bot on Telegram: delivery resumes."
        )
        notice = StoredMessage(
            role="system",
            content=text,
            created_at=datetime.now(UTC),
            meta={"kind": "notice", EVENT: BLOCKED if blocked else UNBLOCKED},
        )
        await self._history.append(
            session_id=session_id, bot=bot, channel="telegram", user_id=user_id, messages=[notice]
        )
