"""The console's JSON API under /console/api, over the handoff desk.

Reads (GET) need a signed-in operator; changes (POST) also the session's CSRF token. An operator
sees and acts on the conversations of their own bots only: another bot's conversation is
answered as if it did not exist (404). Conversations are named by their session id
("bot:channel:conversation") in the query (GET) or the JSON body (POST).

    GET  /console/api/me                      who is signed in, their bots, the CSRF token
    GET  /console/api/queue                   conversations waiting for a person, and the live ones
    GET  /console/api/transcript?session_id=  the history of one conversation
    POST /console/api/take       {session_id}          take it over (409 if another operator was first)
    POST /console/api/reply      {session_id, text}    reply as a person, through its own channel
    POST /console/api/hand-back  {session_id}          back to the bot
    POST /console/api/close      {session_id}          done: back to the bot, recorded as closed
    POST /console/api/outbound   {session_id, text}    write first to a user (WhatsApp: 24-hour window)
    GET  /console/api/search?text=&user=&channel=      past conversations
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from aiohttp import web

from core.clock import Clock, SystemClock
from core.console.auth import ConsoleAuth, SignedIn, json_error
from core.console.search import ConversationHit, HistorySearch, SearchQuery
from core.errors import StoreError
from core.handoff.desk import (
    ConversationNotFound,
    ConversationView,
    DeskEvent,
    DeskMessage,
    HandoffConflict,
    HandoffDesk,
    HandoffError,
    HandoffState,
    NotHeld,
)
from core.handoff.events import message_to_dict, view_to_dict
from core.outbound import OutboundRefused, OutboundSender

__all__ = ["ConsoleApi", "bot_of"]

#: a person's reply or proactive message longer than this is refused (every channel splits less)
MAX_TEXT_CHARS = 4000

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def bot_of(session_id: str) -> str:
    return session_id.split(":", 1)[0]


def view_json(view: ConversationView, now: datetime) -> dict[str, Any]:
    """The desk's view of a conversation, with how long the user has waited by `now`."""
    wait = round((now - view.requested_at).total_seconds()) if view.requested_at else None
    return {**view_to_dict(view), "wait_seconds": wait}


def _hit_json(hit: ConversationHit) -> dict[str, Any]:
    return {
        "session_id": hit.session_id,
        "bot": hit.bot,
        "channel": hit.channel,
        "user_id": hit.user_id,
        "snippet": hit.snippet,
        "last_at": hit.last_at.isoformat(),
        "matches": hit.matches,
    }


class ConsoleApi:
    def __init__(
        self,
        *,
        auth: ConsoleAuth,
        desk: HandoffDesk,
        outbound: OutboundSender,
        search: Callable[[], HistorySearch],
        publish: Callable[[DeskEvent], Awaitable[None]],
        clock: Clock | None = None,
    ) -> None:
        """`search` gives the search once the console has opened the database; `publish` tells
        every console of a proactive message (the desk tells them of everything else)."""
        self._auth = auth
        self._desk = desk
        self._outbound = outbound
        self._search = search
        self._publish = publish
        self._clock: Clock = clock or SystemClock()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/console/api/me", self._guard(self.me)),
            web.get("/console/api/queue", self._guard(self.queue)),
            web.get("/console/api/transcript", self._guard(self.transcript)),
            web.get("/console/api/search", self._guard(self.search)),
            web.post("/console/api/take", self._guard(self.take, changes=True)),
            web.post("/console/api/reply", self._guard(self.reply, changes=True)),
            web.post("/console/api/hand-back", self._guard(self.hand_back, changes=True)),
            web.post("/console/api/close", self._guard(self.close, changes=True)),
            web.post("/console/api/outbound", self._guard(self.outbound, changes=True)),
        ]

    def _guard(
        self, handler: Callable[[web.Request, SignedIn], Awaitable[web.Response]], *, changes: bool = False
    ) -> Handler:
        """Sign-in (and CSRF for changes) first; the desk's refusals become JSON errors."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            try:
                signed = await self._auth.signed_in(request, state_changing=changes)
                return await handler(request, signed)
            except HandoffConflict as exc:
                raise json_error(409, "conflict", str(exc)) from exc
            except NotHeld as exc:
                raise json_error(409, "not_held", str(exc)) from exc
            except ConversationNotFound as exc:
                raise json_error(404, "not_found", str(exc)) from exc
            except HandoffError as exc:
                raise json_error(400, "refused", str(exc)) from exc
            except OutboundRefused as exc:
                raise json_error(exc.status, exc.code, str(exc)) from exc
            except StoreError as exc:
                raise json_error(503, "unavailable", f"a store is unavailable, try again shortly: {exc}") from exc

        return guarded

    # --- reads ----------------------------------------------------------------------------------

    async def me(self, request: web.Request, signed: SignedIn) -> web.Response:
        return web.json_response(self._auth.describe(signed.operator, signed.session))

    async def queue(self, request: web.Request, signed: SignedIn) -> web.Response:
        bots = signed.operator.bots
        views = await self._desk.queue(list(bots) if bots is not None else None)
        now = self._clock.now()
        waiting = sorted(
            (v for v in views if v.state is HandoffState.PENDING_HUMAN), key=lambda v: v.requested_at or now
        )
        live = [v for v in views if v.state is HandoffState.HUMAN]
        return web.json_response(
            {
                "waiting": [view_json(v, now) for v in waiting],
                "live": [view_json(v, now) for v in live],
                "now": now.isoformat(),
            }
        )

    async def transcript(self, request: web.Request, signed: SignedIn) -> web.Response:
        session_id = self._served(signed, request.query.get("session_id", ""))
        messages = await self._desk.transcript(session_id)
        state = await self._desk.state(session_id)
        return web.json_response(
            {"session_id": session_id, "state": str(state), "messages": [message_to_dict(m) for m in messages]}
        )

    async def search(self, request: web.Request, signed: SignedIn) -> web.Response:
        bots = signed.operator.bots
        query = SearchQuery(
            text=request.query.get("text", ""),
            user=request.query.get("user", ""),
            channel=request.query.get("channel", ""),
            bots=list(bots) if bots is not None else None,
        )
        if query.empty:
            raise json_error(400, "invalid_request", "search by text, user or channel (at least one)")
        hits = await self._search().search(query)
        return web.json_response({"results": [_hit_json(h) for h in hits]})

    # --- changes --------------------------------------------------------------------------------

    async def take(self, request: web.Request, signed: SignedIn) -> web.Response:
        body = await self._body(request)
        view = await self._desk.take(self._served(signed, body.get("session_id")), signed.operator.email)
        return web.json_response({"conversation": view_json(view, self._clock.now())})

    async def reply(self, request: web.Request, signed: SignedIn) -> web.Response:
        body = await self._body(request)
        session_id = self._served(signed, body.get("session_id"))
        message = await self._desk.reply(session_id, signed.operator.email, self._text(body))
        return web.json_response({"message": message_to_dict(message)})

    async def hand_back(self, request: web.Request, signed: SignedIn) -> web.Response:
        body = await self._body(request)
        await self._desk.hand_back(self._served(signed, body.get("session_id")), signed.operator.email)
        return web.json_response({"state": "bot"})

    async def close(self, request: web.Request, signed: SignedIn) -> web.Response:
        body = await self._body(request)
        session_id = self._served(signed, body.get("session_id"))
        await self._desk.hand_back(session_id, signed.operator.email, cause="closed")
        return web.json_response({"state": "bot"})

    async def outbound(self, request: web.Request, signed: SignedIn) -> web.Response:
        body = await self._body(request)
        session_id = self._served(signed, body.get("session_id"))
        text = self._text(body)
        sent = await self._outbound.send(session_id, text, author=signed.operator.email)
        said = DeskMessage(session_id=session_id, author=signed.operator.email, text=text, seq=sent.seq)
        await self._publish(DeskEvent(kind="message", session_id=session_id, message=said))
        return web.json_response(
            {"status": "queued", "reply_id": sent.reply_id, "session_id": sent.session_id, "template": sent.template},
            status=202,
        )

    # --- helpers --------------------------------------------------------------------------------

    @staticmethod
    def _served(signed: SignedIn, session_id: Any) -> str:
        """The session id if it names a conversation of one of the operator's bots; 404 otherwise
        (another bot's conversations are not even acknowledged)."""
        if not isinstance(session_id, str) or session_id.count(":") < 2:
            raise json_error(400, "invalid_request", "name the conversation: 'session_id' (bot:channel:conversation)")
        if not signed.operator.serves(bot_of(session_id)):
            raise json_error(404, "not_found", f"no conversation {session_id!r} among your bots")
        return session_id

    @staticmethod
    def _text(body: dict[str, Any]) -> str:
        text = body.get("text")
        if not isinstance(text, str) or not text.strip():
            raise json_error(400, "invalid_request", "the message is empty: write something to send")
        if len(text) > MAX_TEXT_CHARS:
            raise json_error(400, "invalid_request", f"the message is too long (at most {MAX_TEXT_CHARS} characters)")
        return text

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError as exc:
            raise json_error(400, "invalid_request", f"send a JSON object: {exc}") from exc
        if not isinstance(body, dict):
            raise json_error(400, "invalid_request", "send a JSON object")
        return body
