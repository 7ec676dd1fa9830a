"""Showing "typing…" in a chat from the moment its message is accepted until the answer starts arriving.

Telegram shows a chat action for 5 seconds at a time, so it is sent again every 4.5 s, until the
first delivery for the chat (a streamed fragment or the reply), or after typing_max_seconds.
Streamed fragments reach every Telegram process, so whichever took the message stops here.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import structlog

from channels.telegram.inbound import Click, Inbound
from channels.telegram.outbound import TelegramSender
from core.envelope import Reply
from core.errors import DeliveryError

_TYPING_REFRESH_SECONDS = 4.5


class TypingIndicator:
    def __init__(
        self,
        *,
        sender: Callable[[], Awaitable[TelegramSender]],
        max_seconds: float,
        logger: structlog.typing.FilteringBoundLogger,
    ) -> None:
        self._sender = sender
        self._max_seconds = max_seconds
        self._log = logger
        self._answering: dict[str, asyncio.Event] = {}

    async def show(self, inbound: Inbound | Click) -> None:
        """Show "typing…" until the answer starts arriving in this chat (run it as a task)."""
        address = inbound.conversation_id
        answered = self._answering.setdefault(address, asyncio.Event())
        deadline = time.monotonic() + self._max_seconds
        try:
            while not answered.is_set() and time.monotonic() < deadline:
                try:
                    await (await self._sender()).typing(inbound.chat_id, inbound.thread_id)
                except DeliveryError as exc:
                    await self._log.adebug("typing_not_shown", error=str(exc))
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(answered.wait(), _TYPING_REFRESH_SECONDS)
        finally:
            if self._answering.get(address) is answered:
                del self._answering[address]

    def answered(self, reply: Reply) -> None:
        """The answer for the reply's chat is arriving: stop showing "typing…" there."""
        event = self._answering.get(reply.reply_to)
        if event is not None:
            event.set()
