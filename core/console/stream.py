"""GET /console/api/events: the desk's events pushed to a signed-in operator's page (Server-Sent
Events), for the conversations of their bots only.

The desk's event hub holds one subscription per process (Redis pub/sub, or in memory when
embedded) and gives each page a queue of its own, so a hundred open consoles cost one Redis
subscription. The first frame, `ready`, comes once the page's queue is registered: a page loads
the queue after it, so nothing happening in between is missed. A comment line every
`heartbeat_seconds` keeps proxies from closing an idle stream and notices a sign-in that ended.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog
from aiohttp import web

from core.console.api import bot_of
from core.console.auth import ConsoleAuth
from core.errors import StoreError
from core.handoff.desk import DeskEvent, HandoffDesk
from core.handoff.events import event_to_json

__all__ = ["ConsoleEvents"]


class ConsoleEvents:
    def __init__(
        self,
        *,
        auth: ConsoleAuth,
        desk: HandoffDesk,
        heartbeat_seconds: float = 15.0,
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self._auth = auth
        self._desk = desk
        self._heartbeat = heartbeat_seconds
        self._open = 0
        self._closing = asyncio.Event()
        self._log = logger or structlog.get_logger("relaybot.console")

    @property
    def open_streams(self) -> int:
        return self._open

    async def stream(self, request: web.Request) -> web.StreamResponse:
        signed = await self._auth.signed_in(request, state_changing=False)
        operator = signed.operator
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache, no-store",
                # nginx would otherwise hold the events back in its buffer
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        events = self._desk.events()
        self._open += 1
        closing: asyncio.Future[Any] = asyncio.ensure_future(self._closing.wait())
        pending: asyncio.Future[DeskEvent] | None = None
        try:
            await response.write(b"retry: 2000\nevent: ready\ndata: {}\n\n")
            while not self._closing.is_set():
                if pending is None:
                    pending = asyncio.ensure_future(anext(events))
                waiting: set[asyncio.Future[Any]] = {pending, closing}
                done, _ = await asyncio.wait(waiting, timeout=self._heartbeat, return_when=asyncio.FIRST_COMPLETED)
                if pending not in done:
                    if self._closing.is_set():
                        break
                    if not await self._auth.still_signed_in(signed.token):
                        await response.write(b"event: signed_out\ndata: {}\n\n")
                        break
                    await response.write(b": ping\n\n")
                    continue
                event, pending = pending.result(), None
                if not operator.serves(bot_of(event.session_id)):
                    continue
                await response.write(f"event: {event.kind}\ndata: {event_to_json(event)}\n\n".encode())
        except ConnectionError:
            pass  # the page went away
        except StoreError as exc:
            # Redis is unreachable: the page reconnects after `retry` and reloads what it shows.
            await self._log.awarning("console_events_unavailable", error=str(exc))
            with contextlib.suppress(ConnectionError):
                await response.write(b"event: unavailable\ndata: {}\n\n")
        finally:
            self._open -= 1
            for future in (pending, closing):  # type: asyncio.Future[Any] | None
                if future is not None:
                    future.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await future
            close = getattr(events, "aclose", None)
            if close is not None:
                await close()
        return response

    async def close(self) -> None:
        """End every open stream (the server is shutting down; pages reconnect to another)."""
        self._closing.set()
