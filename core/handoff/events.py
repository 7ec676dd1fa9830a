"""Desk events across processes: published on the fan-out (Redis pub/sub in production), read as
async iterators by each console page (`HandoffDesk.events()`).

One subscription per process, whatever the number of pages: each iterator gets a bounded queue
of its own, and a page too slow to keep up loses its oldest events rather than holding the others.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import structlog

from core.fanout.base import Fanout
from core.handoff.desk import ConversationView, DeskEvent, DeskMessage, HandoffState

__all__ = ["DeskEventHub", "event_from_json", "event_to_json", "message_to_dict", "view_to_dict"]

TOPIC = "handoff"


def view_to_dict(view: ConversationView) -> dict[str, Any]:
    """A conversation's desk view as JSON-ready data: on the wire between processes and in the console's API."""
    return {
        "session_id": view.session_id,
        "bot": view.bot,
        "channel": view.channel,
        "user_id": view.user_id,
        "state": str(view.state),
        "requested_at": view.requested_at.isoformat() if view.requested_at else None,
        "reason": view.reason,
        "operator": view.operator,
        "summary": view.summary,
        "facts": dict(view.facts),
        "last_message_at": view.last_message_at.isoformat() if view.last_message_at else None,
    }


def _time(raw: str | None) -> datetime | None:
    return datetime.fromisoformat(raw) if raw else None


def _view_from_dict(data: dict[str, Any]) -> ConversationView:
    return ConversationView(
        session_id=data["session_id"],
        bot=data["bot"],
        channel=data["channel"],
        user_id=data["user_id"],
        state=HandoffState(data["state"]),
        requested_at=_time(data.get("requested_at")),
        reason=data.get("reason", ""),
        operator=data.get("operator"),
        summary=data.get("summary", ""),
        facts=dict(data.get("facts") or {}),
        last_message_at=_time(data.get("last_message_at")),
    )


def message_to_dict(message: DeskMessage) -> dict[str, Any]:
    """A desk message as JSON-ready data: on the wire between processes and in the console's API."""
    return {
        "session_id": message.session_id,
        "author": message.author,
        "text": message.text,
        "created_at": message.created_at.isoformat(),
        "seq": message.seq,
    }


def _message_from_dict(data: dict[str, Any]) -> DeskMessage:
    return DeskMessage(
        session_id=data["session_id"],
        author=data["author"],
        text=data["text"],
        created_at=datetime.fromisoformat(data["created_at"]),
        seq=data.get("seq"),
    )


def event_to_json(event: DeskEvent) -> str:
    return json.dumps(
        {
            "kind": event.kind,
            "session_id": event.session_id,
            "conversation": view_to_dict(event.conversation) if event.conversation else None,
            "message": message_to_dict(event.message) if event.message else None,
            "at": event.at.isoformat(),
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )


def event_from_json(raw: str) -> DeskEvent:
    data = json.loads(raw)
    return DeskEvent(
        kind=data["kind"],
        session_id=data["session_id"],
        conversation=_view_from_dict(data["conversation"]) if data.get("conversation") else None,
        message=_message_from_dict(data["message"]) if data.get("message") else None,
        at=datetime.fromisoformat(data["at"]),
    )


class DeskEventHub:
    """Publishes desk events to every process and hands them to this process's listeners."""

    def __init__(
        self,
        fanout: Fanout,
        *,
        buffer: int = 1000,
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self._fanout = fanout
        self._buffer = buffer
        self._listeners: set[_Listener] = set()
        self._subscribed = False
        self._lock = asyncio.Lock()
        self._log = logger or structlog.get_logger("relaybot.handoff")

    async def publish(self, event: DeskEvent) -> None:
        """Best effort: a page that misses an event reloads the queue when it reconnects."""
        try:
            await self._fanout.publish(TOPIC, event_to_json(event))
        except Exception as exc:
            await self._log.awarning("handoff_event_not_published", kind=event.kind, error=str(exc))

    async def start(self) -> None:
        """Subscribe now (else on the first listener's first read): events published from here on
        reach this process's listeners."""
        async with self._lock:
            if not self._subscribed:
                await self._fanout.subscribe(TOPIC, self._received)
                self._subscribed = True

    async def _received(self, payload: str) -> None:
        try:
            event = event_from_json(payload)
        except (ValueError, KeyError, TypeError) as exc:
            await self._log.awarning("handoff_event_unreadable", error=str(exc))
            return
        for listener in list(self._listeners):
            listener.put(event)

    def listen(self) -> AsyncIterator[DeskEvent]:
        """Every event from the moment of the call (once subscribed), until the iterator is closed."""
        listener = _Listener(self, self._buffer)
        self._listeners.add(listener)
        return listener

    def forget(self, listener: _Listener) -> None:
        self._listeners.discard(listener)


class _Listener:
    """One page's events: registered when created, so nothing published after that is missed."""

    def __init__(self, hub: DeskEventHub, buffer: int) -> None:
        self._hub = hub
        self._queue: asyncio.Queue[DeskEvent] = asyncio.Queue(buffer)
        self._closed = False

    def put(self, event: DeskEvent) -> None:
        if self._queue.full():
            self._queue.get_nowait()  # the oldest goes: this page is not keeping up
        self._queue.put_nowait(event)

    def __aiter__(self) -> _Listener:
        return self

    async def __anext__(self) -> DeskEvent:
        if self._closed:
            raise StopAsyncIteration
        await self._hub.start()
        return await self._queue.get()

    async def aclose(self) -> None:
        self._closed = True
        self._hub.forget(self)
