"""Streaming by editing one message: post the first words, then edit as more arrive.

For platforms without a streaming API (Slack `chat.update`, Telegram `editMessageText`). The
first message goes up `open_after` seconds after the first words arrive: an answer complete by
then (a fast model, a cached answer, a handler) is posted once, whole, instead of posted and
edited, which halves the API calls (and the rate-limit budget) of every fast reply. Edits
are throttled (platforms rate-limit edits, about one a second per chat), fragments are best
effort (an error only delays the next edit), and only one process shows a given reply (the
`StreamRegistry` claim). The final reply, delivered through the outbox by any process, calls
`finish` and edits the same message with the complete text, so a stream always ends whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from channels.formatting import render_parts
from core.channel import DeliveryResult, MarkdownDialect
from core.envelope import Reply
from core.errors import DeliveryError, StoreError
from core.streams import StreamRegistry

CURSOR = " …"


class EditOps(Protocol):
    """The two platform calls a streamed message needs; errors are DeliveryError."""

    async def post(self, reply: Reply, text: str) -> str:
        """Post `text` (already rendered) where the reply goes; returns the message's reference."""
        ...

    async def edit(self, reply: Reply, message_ref: str, text: str) -> None: ...


@dataclass(slots=True)
class _Stream:
    reply: Reply
    text: str = ""
    shown: str = ""
    ref: str | None = None
    foreign: bool = False  # another process shows this stream
    done: bool = False
    not_before: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    flush: asyncio.Task[None] | None = None
    #: waits out `open_after` before the first post; None once the post is under way
    opener: asyncio.Task[None] | None = None


class EditStreamer:
    def __init__(
        self,
        registry: StreamRegistry,
        ops: EditOps,
        *,
        dialect: MarkdownDialect,
        limit: int,
        interval: float = 1.0,
        open_after: float = 0.0,
        keep: int = 1000,
        key_prefix: str = "",
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        """`key_prefix` keeps apart two streamers of one channel that show the same reply differently."""
        self._registry = registry
        self._ops = ops
        self._dialect: MarkdownDialect = dialect
        self._limit = limit
        self._interval = interval
        self._open_after = open_after
        self._keep = keep
        self._prefix = key_prefix
        self._streams: OrderedDict[str, _Stream] = OrderedDict()
        self._log = logger or structlog.get_logger("relaybot.streaming")

    def _render(self, text: str) -> str:
        return render_parts(text.strip(), self._dialect, self._limit - len(CURSOR))[0] + CURSOR

    async def fragment(self, reply: Reply) -> DeliveryResult:
        """Show a streamed fragment (`reply.text` is the new delta). Never raises."""
        stream = self._streams.get(reply.envelope_id)
        if stream is None:
            stream = self._streams[reply.envelope_id] = _Stream(reply=reply)
            while len(self._streams) > self._keep:
                _, old = self._streams.popitem(last=False)
                for task in (old.flush, old.opener):
                    if task is not None:
                        task.cancel()
        if stream.done or stream.foreign:
            return DeliveryResult(delivered=False, detail="stream shown elsewhere or finished")
        stream.text += reply.text
        if stream.ref is None:
            if self._open_after > 0:
                if stream.opener is None:
                    stream.opener = asyncio.create_task(self._open_later(stream))
                return DeliveryResult(delivered=True, detail="the first words go up shortly")
            async with stream.lock:
                if stream.ref is None and not stream.done and not stream.foreign:
                    await self._open(stream)
            return DeliveryResult(delivered=stream.ref is not None, channel_message_ids=_ids(stream.ref))
        if stream.flush is None:
            stream.flush = asyncio.create_task(self._flush_later(stream))
        return DeliveryResult(delivered=True, channel_message_ids=_ids(stream.ref))

    async def _open_later(self, stream: _Stream) -> None:
        await asyncio.sleep(self._open_after)
        async with stream.lock:
            stream.opener = None  # from here on `finish` waits for the post instead of cancelling it
            if stream.ref is None and not stream.done and not stream.foreign:
                await self._open(stream)
        if stream.ref is not None and stream.text != stream.shown and stream.flush is None and not stream.done:
            stream.flush = asyncio.create_task(self._flush_later(stream))

    async def _open(self, stream: _Stream) -> None:
        key = self._prefix + stream.reply.envelope_id
        try:
            if not await self._registry.claim(key):
                stream.foreign = True
                return
            if (await self._registry.get(key)).closed:
                stream.done = True
                return
            text = stream.text
            stream.ref = await self._ops.post(stream.reply, self._render(text))
            stream.shown = text
            stream.not_before = time.monotonic() + self._interval
            await self._registry.set_ref(key, stream.ref)
        except (DeliveryError, StoreError) as exc:
            # Without a first message there is nothing to edit: the final reply is posted as usual.
            stream.done = True
            await self._log.awarning("stream_not_shown", reply_key=key, error=str(exc))

    async def _flush_later(self, stream: _Stream) -> None:
        try:
            while not stream.done and stream.text != stream.shown:
                await asyncio.sleep(max(0.0, stream.not_before - time.monotonic()))
                async with stream.lock:
                    if stream.done or stream.ref is None:
                        return
                    await self._edit(stream)
        finally:
            stream.flush = None

    async def _edit(self, stream: _Stream) -> None:
        key = self._prefix + stream.reply.envelope_id
        assert stream.ref is not None
        text = stream.text
        try:
            if (await self._registry.get(key)).closed:
                stream.done = True
                return
            await self._ops.edit(stream.reply, stream.ref, self._render(text))
            stream.shown = text
            stream.not_before = time.monotonic() + self._interval
            state = await self._registry.get(key)
            if state.closed and state.final_text:
                # The final reply landed while this edit was in flight: put the complete text back.
                stream.done = True
                await self._ops.edit(stream.reply, stream.ref, state.final_text)
        except DeliveryError as exc:
            stream.not_before = time.monotonic() + max(self._interval, exc.retry_after or 0.0)
            if not exc.retryable:
                stream.done = True
            await self._log.ainfo("stream_edit_skipped", reply_key=key, error=str(exc))
        except StoreError as exc:
            stream.done = True
            await self._log.awarning("stream_edit_skipped", reply_key=key, error=str(exc))

    async def finish(self, reply: Reply, final_text: str) -> str | None:
        """End the reply's stream; returns the message to edit with `final_text`, or None to post anew."""
        state = await self._registry.close(self._prefix + reply.envelope_id, final_text)
        stream = self._streams.pop(reply.envelope_id, None)
        if stream is not None:
            stream.done = True
            if stream.opener is not None:
                # Still waiting to post the first words: the whole answer is posted instead.
                stream.opener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await stream.opener
            if stream.flush is not None:
                stream.flush.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await stream.flush
            async with stream.lock:  # an edit in flight lands before the final one
                pass
            return stream.ref or state.message_ref
        return state.message_ref

    async def close(self) -> None:
        for stream in self._streams.values():
            stream.done = True
            for task in (stream.flush, stream.opener):
                if task is not None:
                    task.cancel()
        self._streams.clear()


def _ids(ref: str | None) -> tuple[str, ...]:
    return (ref,) if ref is not None else ()
