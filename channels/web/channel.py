"""The web channel: a demo page, an embeddable widget script, and the widget's WebSocket.

Protocol (docs/widget.md documents it for widget authors):
  server → {"type":"session","session_id","token"}    first frame; keep the token to resume
  client → {"type":"message","id":CLIENT_ID,"text"}   a resent CLIENT_ID is not answered twice
  client → {"type":"action","id":CLIENT_ID,"action"}  a click on a button of the session's last offer;
                                                      answered like a message (its text: the label)
  server → {"type":"ack","id"}                        at once (with "duplicate": true for a resend)
  server → {"type":"delta","reply_to","text"}         streamed text, where the provider streams
  server → {"type":"reply","reply_to","seq","text"[,"sources"][,"actions"][,"card"]}   the whole reply,
                                                      numbered within the session; sources: the knowledge
                                                      passages it was given; actions: buttons {id,label,style?}
  server → {"type":"error","code","message"[,"id"]}   bad input (id: the message it concerns); still usable
Reconnecting with `?token=…&after=SEQ` keeps the session and replays the replies above SEQ (the newest
RELAYBOT_WEB__RESUME_REPLIES of them).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
from collections import deque
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from channels.web.limits import ConnectionRate, EdgeLimits
from channels.web.tokens import SessionTokens
from core.actions import Action, Button, Card, offer_from_meta
from core.channel import Capabilities, ChannelContext, DeliveryResult
from core.envelope import Envelope, Reply, session_id_for
from core.errors import StoreError
from core.offers import last_offer
from core.secrets import WEB_SESSION_TOKENS, derive_key
from core.settings import Settings

MAX_CLIENT_ID = 128
MAX_ACTION_ID = 64  # core.actions: a button id is at most 64 characters
#: a resent click is looked for among the session's newest user messages (a client resends only its last few)
_RESEND_LOOK_BACK = 10
#: frames waiting for one socket at most; a client that falls this far behind is dropped and
#: resumes with `after=` (its replies are in the history), so it never holds up anyone else
MAX_QUEUED_FRAMES = 256
_STATIC = "static"  # channels/web/static/, shipped as package data


@dataclass(eq=False, slots=True)
class _Connection:
    """One open socket. Frames go through its own queue, written by its own task, in order."""

    ws: web.WebSocketResponse
    #: the socket's TCP transport: aborted when a send stalls (see WebChannel._watch_sends)
    transport: asyncio.Transport | None
    session_id: str
    conversation_id: str
    bot: str
    last_seq: int = 0
    #: held while replaying the history, so a live reply is not sent before older ones (or twice)
    replay_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    queued: deque[str] = field(default_factory=deque)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    dropped: bool = False
    #: when the writer started the send in progress (loop time); None while it waits for frames
    sending_since: float | None = None
    #: the client's address (see EdgeLimits.client_address) and this socket's recent messages
    address: str = ""
    rate: ConnectionRate = field(default_factory=ConnectionRate)


def _offer_frame(buttons: tuple[Button, ...], card: Card | None) -> dict[str, Any]:
    """A reply frame's buttons and card. A button's `value` stays on the server: a click names only the id."""
    frame: dict[str, Any] = {}
    if buttons:
        frame["actions"] = [_button_frame(b) for b in buttons]
    if card is not None:
        frame["card"] = {
            "title": card.title,
            "text": card.text,
            "image_url": card.image_url,
            "fields": [{"label": f.label, "value": f.value} for f in card.fields],
            "actions": [_button_frame(b) for b in card.actions],
        }
    return frame


def _button_frame(button: Button) -> dict[str, str]:
    data = {"id": button.id, "label": button.label}
    if button.style is not None:
        data["style"] = button.style
    return data


class FrameError(Exception):
    """An inbound frame we answer with an error frame (the connection stays open)."""

    def __init__(self, code: str, message: str, *, id: str | None = None, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.id = id
        self.retry_after = retry_after

    @classmethod
    def rate_limited(cls, what: str, retry_after: float, *, id: str | None = None) -> FrameError:
        seconds = max(1, round(retry_after))
        return cls("rate_limited", f"too many {what}; try again in {seconds} seconds", id=id, retry_after=seconds)

    def frame(self) -> dict[str, Any]:
        frame: dict[str, Any] = {"type": "error", "code": self.code, "message": str(self)}
        if self.id is not None:
            frame["id"] = self.id
        if self.retry_after is not None:
            frame["retry_after"] = self.retry_after
        return frame


class WebChannel:
    channel_names = ("web",)
    capabilities = Capabilities(
        max_message_length=100_000,
        markdown="commonmark",
        can_edit=True,
        can_stream=True,
        can_show_typing=True,
        broadcast=True,  # sockets live in one process; every web process gets each reply
    )

    def __init__(self, ctx: ChannelContext) -> None:
        self._ctx = ctx
        self._web = ctx.settings.web
        self._tokens = SessionTokens(
            derive_key(ctx.secret, WEB_SESSION_TOKENS), ttl_seconds=self._web.token_ttl_seconds
        )
        self._limits = EdgeLimits(ctx.limiter, self._web, ctx.clock)
        self._connections: dict[str, set[_Connection]] = {}
        self._send_watch: asyncio.Task[None] | None = None
        self._static: dict[str, str] = {}
        self._log = ctx.logger.bind(channel="web")

    @staticmethod
    def is_configured(settings: Settings) -> bool:
        return True

    def register(self, app: web.Application) -> None:
        app.router.add_get("/", self._index)
        app.router.add_get("/widget.js", self._widget)
        app.router.add_get("/ws", self._websocket)
        app.on_shutdown.append(self._on_shutdown)

    # --- pages -------------------------------------------------------------------------------

    async def _asset(self, name: str) -> str:
        if name not in self._static:
            path = resources.files("channels.web").joinpath(_STATIC, name)
            self._static[name] = await asyncio.to_thread(path.read_text, encoding="utf-8")
        return self._static[name]

    def _bot_or_404(self, request: web.Request) -> str:
        name = request.query.get("bot") or self._ctx.bots.default
        if name not in self._ctx.bots:
            raise web.HTTPNotFound(
                text=json.dumps({"error": "unknown_bot", "message": f"no bot named {name!r}"}),
                content_type="application/json",
            )
        return name

    async def _index(self, request: web.Request) -> web.Response:
        bot = self._bot_or_404(request)
        title = html.escape(self._ctx.bots.require(bot).display_name, quote=True)
        page = (await self._asset("index.html")).replace("{{BOT}}", bot).replace("{{TITLE}}", title)
        return web.Response(
            text=page,
            content_type="text/html",
            headers={
                "Content-Security-Policy": (
                    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                    "connect-src 'self' ws: wss:; img-src 'self' data:; base-uri 'none'; "
                    "frame-ancestors 'self'"
                ),
                "X-Content-Type-Options": "nosniff",
            },
        )

    async def _widget(self, request: web.Request) -> web.Response:
        return web.Response(
            text=await self._asset("widget.js"),
            content_type="application/javascript",
            headers={"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"},
        )

    # --- WebSocket ---------------------------------------------------------------------------

    def _origin_allowed(self, request: web.Request) -> bool:
        allowed = self._web.allowed_origins
        origin = request.headers.get("Origin")
        # Non-browser clients send no Origin; browsers always do, and only they carry a user's cookies.
        return "*" in allowed or origin is None or origin in allowed

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        bot = self._bot_or_404(request)
        if not self._origin_allowed(request):
            raise web.HTTPForbidden(text="origin not allowed")
        ws = web.WebSocketResponse(heartbeat=self._web.heartbeat_seconds, max_msg_size=self._web.max_frame_bytes)
        await ws.prepare(request)

        # A forged, expired or foreign token gets a fresh session, never an error and never another's.
        session = self._tokens.verify(request.query.get("token", ""), bot=bot)
        resumed = session is not None
        address = self._limits.client_address(request)
        if not resumed:
            decision = await self._limits.new_session(address)
            if not decision.allowed:
                # A new session per connection would reset every per-user limit: they are counted per address.
                refused = FrameError.rate_limited("new sessions from your address", decision.retry_after)
                await ws.send_json(refused.frame())
                await ws.close(code=1013, message=b"too many new sessions; try again later")
                return ws
        # Every connection renews the token, so an active conversation does not expire.
        session, token = self._tokens.renew(session) if session else self._tokens.new_session(bot)
        conn = _Connection(
            ws,
            request.transport,
            session_id_for(bot, "web", session.session_id),
            session.session_id,
            bot,
            address=address,
        )
        self._connections.setdefault(conn.session_id, set()).add(conn)
        if self._send_watch is None or self._send_watch.done():
            self._send_watch = asyncio.create_task(self._watch_sends(), name="relaybot-web-send-watch")
        writer = asyncio.create_task(self._write_frames(conn), name="relaybot-web-writer")
        try:
            self._send(conn, {"type": "session", "session_id": session.session_id, "token": token})
            if resumed:
                await self._replay(conn, request.query.get("after", "0"))
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    await self._on_text(conn, message.data)
                elif message.type == WSMsgType.BINARY:
                    self._send_error(conn, FrameError("binary_not_supported", "send JSON text frames"))
                elif message.type == WSMsgType.ERROR:
                    await self._log.ainfo("ws_closed_on_error", error=str(ws.exception()))
                    break
        finally:
            peers = self._connections.get(conn.session_id)
            if peers is not None:
                peers.discard(conn)
                if not peers:
                    del self._connections[conn.session_id]
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        return ws

    async def _replay(self, conn: _Connection, after_raw: str) -> None:
        try:
            after = max(0, int(after_raw))
        except ValueError:
            after = 0
        async with conn.replay_lock:
            missed = await self._ctx.history.after(
                conn.session_id, after, role="assistant", last=self._web.resume_replies
            )
            for message in missed:
                buttons, card = offer_from_meta(message.meta)
                frame = {"type": "reply", "reply_to": message.ref, "seq": message.seq, "text": message.content}
                self._send(conn, {**frame, **_offer_frame(buttons, card)})
                conn.last_seq = max(conn.last_seq, message.seq or 0)

    async def _on_text(self, conn: _Connection, data: str) -> None:
        try:
            frame = self._parse(data)
            if frame["type"] == "ping":
                self._send(conn, {"type": "pong"})
                return
            if frame["type"] == "action":
                await self._accept_action(conn, frame["id"], frame["action"])
                return
            await self._accept_message(conn, frame["id"], frame["text"])
        except FrameError as exc:
            self._send_error(conn, exc)

    def _parse(self, data: str) -> dict[str, Any]:
        try:
            frame = orjson.loads(data)
        except ValueError as exc:
            raise FrameError("bad_json", "frames must be JSON objects") from exc
        if not isinstance(frame, dict):
            raise FrameError("bad_json", "frames must be JSON objects")
        kind = frame.get("type")
        if kind == "ping":
            return frame
        if kind not in ("message", "action"):
            raise FrameError("unknown_type", f"unknown frame type {kind!r}; send type 'message' or 'action'")
        client_id, text = frame.get("id"), frame.get("text")
        if not isinstance(client_id, str) or not 0 < len(client_id) <= MAX_CLIENT_ID:
            raise FrameError("bad_id", f"'id' must be a string of 1 to {MAX_CLIENT_ID} characters")
        if kind == "action":
            action = frame.get("action")
            if not isinstance(action, str) or not 0 < len(action) <= MAX_ACTION_ID:
                raise FrameError(
                    "bad_action", f"'action' must be a button id of 1 to {MAX_ACTION_ID} characters", id=client_id
                )
            return frame
        if not isinstance(text, str):
            raise FrameError("bad_type", f"'text' must be a string, not {type(text).__name__}", id=client_id)
        if not text.strip():
            raise FrameError("empty_text", "'text' must be a non-empty string", id=client_id)
        if len(text) > self._web.max_text_chars:
            raise FrameError(
                "text_too_long",
                f"messages are limited to {self._web.max_text_chars} characters; this one has {len(text)}",
                id=client_id,
            )
        return frame

    async def _accept_action(self, conn: _Connection, client_id: str, action_id: str) -> None:
        """A click: only on a button of the session's last offer; a forged or stale id queues nothing."""
        await self._check_limits(conn, client_id)  # counted first: a flood of forged clicks never reads the history
        try:
            offer = await last_offer(self._ctx.history, conn.session_id)
            button = offer.find(action_id)
            # A resend of a click already answered (the widget resends unacked frames on reconnect):
            # its reply changed the offer, but it is a duplicate, not a forgery.
            resent = button is None and await self._recorded(conn, client_id)
        except StoreError as exc:
            await self._log.aerror("offer_lookup_failed", error=str(exc))
            raise FrameError(
                "unavailable", "the assistant cannot take messages right now; send it again shortly", id=client_id
            ) from exc
        if resent:
            self._send(conn, {"type": "ack", "id": client_id, "duplicate": True})
            return
        if button is None:
            offered = ", ".join(offer.ids) or "none"
            raise FrameError(
                "unknown_action",
                f"{action_id!r} is not a button of the last reply (it offered: {offered}); type your answer instead",
                id=client_id,
            )
        await self._accept_message(conn, client_id, button.label, action=offer.click(button))

    async def _recorded(self, conn: _Connection, client_id: str) -> bool:
        recent = await self._ctx.history.after(conn.session_id, 0, role="user", last=_RESEND_LOOK_BACK)
        return any(message.ref == client_id for message in recent)

    async def _check_limits(self, conn: _Connection, client_id: str) -> None:
        decision = await self._limits.message(conn.address, conn.rate, self._ctx.bots.require(conn.bot))
        if not decision.allowed:
            # Refused before anything is queued or stored.
            what = "today's usage of this assistant" if decision.window == "day" else "messages"
            raise FrameError.rate_limited(what, decision.retry_after, id=client_id)

    async def _accept_message(
        self, conn: _Connection, client_id: str, text: str, *, action: Action | None = None
    ) -> None:
        if action is None:  # a click was counted before its offer was read
            await self._check_limits(conn, client_id)
        envelope = Envelope.create(
            bot=conn.bot,
            channel="web",
            channel_message_id=client_id,
            conversation_id=conn.conversation_id,
            user_id=f"web:{conn.conversation_id}",
            text=text,
            reply_to=conn.conversation_id,
            action=action,
        )
        try:
            accepted = await self._ctx.bus.publish(envelope)
        except StoreError as exc:
            await self._log.aerror("publish_failed", error=str(exc))
            raise FrameError(
                "unavailable", "the assistant cannot take messages right now; send it again shortly", id=client_id
            ) from exc
        if not accepted:
            self._send(conn, {"type": "ack", "id": client_id, "duplicate": True})
            return
        self._send(conn, {"type": "ack", "id": client_id})

    # --- delivery ----------------------------------------------------------------------------

    async def deliver(self, reply: Reply) -> DeliveryResult:
        peers = list(self._connections.get(reply.session_id, ()))
        if not reply.final:
            frame: dict[str, Any] = {"type": "delta", "reply_to": reply.in_reply_to, "text": reply.text}
            queued = [self._send(conn, frame) for conn in peers]
            return DeliveryResult(delivered=any(queued))
        frame = {"type": "reply", "reply_to": reply.in_reply_to, "seq": reply.seq, "text": reply.text}
        if reply.sources:
            frame["sources"] = list(reply.sources)
        frame.update(_offer_frame(reply.actions, reply.card))
        sent = 0
        for conn in peers:
            async with conn.replay_lock:
                # A resumed connection may already have replayed this reply from the history.
                if reply.seq is not None and reply.seq <= conn.last_seq:
                    continue
                if self._send(conn, frame):
                    sent += 1
                    conn.last_seq = max(conn.last_seq, reply.seq or 0)
        ids = (str(reply.seq),) if reply.seq is not None else ()
        if sent:
            return DeliveryResult(delivered=True, channel_message_ids=ids)
        return DeliveryResult(delivered=False, channel_message_ids=ids, detail="no open connection; kept for resume")

    def _send(self, conn: _Connection, frame: dict[str, Any]) -> bool:
        """Queue a frame for the connection's writer; False if the connection is gone or was dropped."""
        if conn.dropped or conn.ws.closed:
            return False
        if len(conn.queued) >= MAX_QUEUED_FRAMES:
            self._drop(conn, f"{MAX_QUEUED_FRAMES} frames waiting: the client is not reading")
            return False
        # orjson: a fifth of the standard library's time for a frame, and every message sends two.
        conn.queued.append(orjson.dumps(frame).decode())
        conn.wakeup.set()
        return True

    def _drop(self, conn: _Connection, why: str) -> None:
        # The client resumes from its last seq on reconnect; everything it missed is in the history.
        conn.dropped = True
        conn.queued.clear()
        conn.wakeup.set()
        self._log.info("ws_dropped", session_id=conn.session_id, reason=why)

    async def _write_frames(self, conn: _Connection) -> None:
        """The connection's writer: sends queued frames in order. A send that stalls past the send
        timeout is ended by `_watch_sends`, which drops the client."""
        loop = asyncio.get_running_loop()
        try:
            while not conn.dropped:
                if not conn.queued:
                    conn.wakeup.clear()
                    await conn.wakeup.wait()
                    continue
                # Whatever queued up meanwhile goes out under one deadline, kept by the watch.
                conn.sending_since = loop.time()
                while conn.queued and not conn.dropped:
                    await conn.ws.send_str(conn.queued.popleft())
                conn.sending_since = None
        except (ConnectionError, RuntimeError) as exc:
            self._drop(conn, repr(exc))
        if not conn.ws.closed:
            await conn.ws.close()

    async def _watch_sends(self) -> None:
        """Drop every client whose send has stalled for the send timeout: its writer is waiting for
        a socket buffer the client does not read. One watch for every socket, rather than a timer
        armed around each send: a timer costs more CPU (about 6 µs) than the frame it guards, and a
        stall is rare. A stall is caught between one and 1.25 send timeouts after it began."""
        loop = asyncio.get_running_loop()
        timeout = self._web.send_timeout_seconds
        while self._connections:
            await asyncio.sleep(timeout / 4)
            now = loop.time()
            for peers in list(self._connections.values()):
                for conn in list(peers):
                    if conn.sending_since is not None and now - conn.sending_since >= timeout and not conn.dropped:
                        self._drop(conn, f"a send stalled for {timeout:g} s: the client is not reading")
                        if conn.transport is not None:
                            # Ends the stalled send (the writer sees the connection reset) and the socket.
                            conn.transport.abort()

    def _send_error(self, conn: _Connection, error: FrameError) -> None:
        self._send(conn, error.frame())

    async def _on_shutdown(self, app: web.Application) -> None:
        await self.close()

    async def start(self) -> None:
        """Nothing to start: messages arrive through routes."""

    async def close(self) -> None:
        if self._send_watch is not None:
            self._send_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._send_watch
        for peers in list(self._connections.values()):
            for conn in list(peers):
                await conn.ws.close(code=1001, message=b"server shutting down")
