"""Streamed text goes out in pieces of about 50 ms, not one per token.

A model streams a token every few milliseconds; a publish (a WebSocket frame, a Redis fan-out
message, a chat edit) per token costs CPU on every process it crosses and shows the reader
nothing a 50 ms batch would not. The first piece also waits its 50 ms: an answer that is complete
by then (a cached or offline answer, a short one) goes out as the final reply alone, not as
pieces and then the reply again, and 50 ms is below what a reader notices. Later pieces wait
until the interval has passed since the last send or the buffer holds `max_chars`, and a timer
sends a piece that would otherwise wait for a token that does not come. Once a piece went out,
`close` sends what is left, so the pieces add up to the streamed text; if none did, `close` drops
the buffer, since the final reply carries the whole text.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

__all__ = ["DeltaCoalescer"]

DEFAULT_INTERVAL_SECONDS = 0.05
DEFAULT_MAX_CHARS = 400


class DeltaCoalescer:
    def __init__(
        self,
        send: Callable[[str], Awaitable[None]],
        *,
        interval: float = DEFAULT_INTERVAL_SECONDS,
        max_chars: int = DEFAULT_MAX_CHARS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._send = send
        self._interval = interval
        self._max_chars = max_chars
        self._clock = clock
        self._buffer: list[str] = []
        self._size = 0
        #: when the last piece went out; before the first, when the first delta came
        self._last_sent: float | None = None
        self._sent_any = False
        self._timer: asyncio.TimerHandle | None = None
        self._timed_send: asyncio.Task[None] | None = None
        # Sends in order: a timed send and one from a new delta must not overtake each other.
        self._lock = asyncio.Lock()
        self._closed = False

    async def __call__(self, delta: str) -> None:
        if self._closed or not delta:
            return
        self._buffer.append(delta)
        self._size += len(delta)
        now = self._clock()
        if self._last_sent is None:
            self._last_sent = now  # the first piece waits its interval too
        waited = now - self._last_sent
        if waited >= self._interval or self._size >= self._max_chars:
            await self._flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._interval - waited, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._buffer and not self._closed:
            self._timed_send = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        async with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if not self._buffer:
                return
            text = "".join(self._buffer)
            self._buffer.clear()
            self._size = 0
            self._last_sent = self._clock()
            self._sent_any = True
            await self._send(text)

    async def close(self) -> None:
        """Stop; send what is buffered if a piece went out already. Call it before the final reply
        goes out, which carries the whole text."""
        if self._closed:
            return
        self._closed = True
        if self._timed_send is not None:
            await self._timed_send
        if self._sent_any:
            await self._flush()
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._buffer.clear()
        self._size = 0
