"""Streamed text goes out in pieces of about 50 ms, not one per token.

A model streams a token every few milliseconds; a publish (a WebSocket frame, a Redis fan-out
message, a chat edit) per token costs CPU on every process it crosses and shows the reader
nothing a 50 ms batch would not. The first piece goes at once (time to first token is what a
person notices); later ones wait until the interval has passed since the last send or the
buffer holds `max_chars`, and a timer sends a piece that would otherwise wait for a token that
does not come. `close` sends what is left, so the pieces always add up to the streamed text.
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
        self._last_sent: float | None = None
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
        waited = self._clock() - self._last_sent if self._last_sent is not None else self._interval
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
            await self._send(text)

    async def close(self) -> None:
        """Send what is buffered and stop; call it before the final reply goes out."""
        if self._closed:
            return
        self._closed = True
        if self._timed_send is not None:
            await self._timed_send
        await self._flush()
