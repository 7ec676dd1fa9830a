"""Streaming into a private chat's draft preview (`sendMessageDraft`) instead of editing a message.

Opt-in (RELAYBOT_TELEGRAM__DRAFTS_IN_PRIVATE_CHATS): the draft is an animated, ephemeral preview
that Telegram drops after about 30 s, and the answer itself is then sent as an ordinary message,
so the chat never holds a half-written message. It is the `EditStreamer` (one process shows a
reply, updates throttled, failures only end the preview) with "post" and "edit" both meaning
"send the draft again".
"""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable

import structlog

from channels.streaming import EditStreamer
from core.channel import DeliveryResult
from core.envelope import Reply
from core.errors import StoreError
from core.streams import StreamRegistry

#: (reply, draft id, rendered HTML) -> None; raises DeliveryError
SendDraft = Callable[[Reply, int, str], Awaitable[None]]


def draft_id(reply: Reply) -> int:
    """A non-zero id per reply, the same in every process (changes to one draft id are animated)."""
    return zlib.crc32(reply.envelope_id.encode()) or 1


class _DraftOps:
    def __init__(self, send: SendDraft) -> None:
        self._send = send

    async def post(self, reply: Reply, text: str) -> str:
        await self._send(reply, draft_id(reply), text)
        return str(draft_id(reply))

    async def edit(self, reply: Reply, message_ref: str, text: str) -> None:
        await self._send(reply, int(message_ref), text)


class DraftStreamer:
    def __init__(
        self,
        registry: StreamRegistry,
        send: SendDraft,
        *,
        limit: int,
        interval: float,
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self._log = logger or structlog.get_logger("relaybot.telegram.drafts")
        self._streamer = EditStreamer(
            registry,
            _DraftOps(send),
            dialect="telegram-html",
            limit=limit,
            interval=interval,
            key_prefix="telegram-draft:",
            logger=self._log,
        )

    async def fragment(self, reply: Reply) -> DeliveryResult:
        """Add a streamed fragment to the reply's draft. Never raises."""
        return await self._streamer.fragment(reply)

    async def finish(self, reply: Reply) -> None:
        """The answer is about to be sent as a message: stop updating its draft."""
        try:
            await self._streamer.finish(reply, "")
        except StoreError as exc:
            await self._log.awarning("draft_not_closed", error=str(exc))

    async def close(self) -> None:
        await self._streamer.close()
