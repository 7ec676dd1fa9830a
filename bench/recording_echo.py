"""A hand-written WebSocket echo that does the durable part of a turn: the baseline for what the
guarantees themselves cost.

Per message, the least a server that keeps relaybot's promises on the widget must do, written
directly on aiohttp and sqlite3 with nothing else in between:

- **dedupe**: a message id seen before on the session is acknowledged as a duplicate, not answered;
- **ack**: an `ack` frame as soon as the message is taken;
- **order**: one message of a session at a time, in arrival order (the closed-loop client sends the
  next only after the reply, and the handler awaits each in turn);
- **record**: the message and its reply appended to a SQLite history (WAL, synchronous=NORMAL, the
  same `messages` table shape and unique (session_id, seq) index as relaybot's) on one writer
  thread, with appends that arrive while a commit is running committed together, before the reply
  frame is sent.

No rate limits, session window, memory, metrics, logs, model call or delivery records: those are the
framework's own cost. Runs on uvloop, as `relaybot run` does. Used by `bench/ws_throughput.py` as its
second baseline (`--recording-echo-server PORT DB` there).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import WSMsgType, web

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    session_id VARCHAR NOT NULL,
    seq INTEGER NOT NULL,
    role VARCHAR(16) NOT NULL,
    content TEXT NOT NULL,
    ref VARCHAR,
    created_at DATETIME NOT NULL,
    UNIQUE (session_id, seq)
)
"""
_INSERT = "INSERT INTO messages (session_id, seq, role, content, ref, created_at) VALUES (?, ?, ?, ?, ?, ?)"

Row = tuple[str, int, str, str, str, str]


class GroupCommitter:
    """Appends rows on one thread; appends that arrive during a commit go in the next one, together."""

    def __init__(self, path: Path) -> None:
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="echo-sqlite")
        self._path = path
        self._db: sqlite3.Connection | None = None
        self._waiting: list[tuple[list[Row], asyncio.Future[None]]] = []
        self._running = False

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = sqlite3.connect(self._path, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
        return self._db

    def _commit(self, rows: list[Row]) -> None:
        db = self._connect()
        with db:
            db.executemany(_INSERT, rows)

    async def append_exchange(self, conversation: str, seq: int, text: str, ref: str) -> None:
        """Commit a message and its echoed reply as seqs `seq - 1` and `seq`; returns once committed."""
        now = datetime.now(UTC).isoformat(sep=" ")
        rows = [(conversation, seq - 1, "user", text, ref, now), (conversation, seq, "assistant", text, ref, now)]
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((rows, done))
        if not self._running:
            self._running = True
            asyncio.get_running_loop().create_task(self._commit_waiting())
        await done

    async def _commit_waiting(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                try:
                    await loop.run_in_executor(self._thread, self._commit, [r for rows, _ in batch for r in rows])
                except Exception as exc:
                    for _, done in batch:
                        done.set_exception(exc)
                else:
                    for _, done in batch:
                        done.set_result(None)
        finally:
            self._running = False


def build_app(path: Path) -> web.Application:
    history = GroupCommitter(path)
    next_session = iter(range(1, 1_000_000_000))

    async def websocket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        session_id = f"support:web:{next(next_session)}"
        await ws.send_json({"type": "session", "session_id": session_id, "token": session_id})
        seen: set[str] = set()
        seq = 0
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue
            frame = json.loads(message.data)
            if frame.get("type") == "ping":
                await ws.send_json({"type": "pong"})
                continue
            client_id, text = frame["id"], frame["text"]
            if client_id in seen:
                await ws.send_json({"type": "ack", "id": client_id, "duplicate": True})
                continue
            seen.add(client_id)
            await ws.send_json({"type": "ack", "id": client_id})
            seq += 2
            await history.append_exchange(session_id, seq, text, client_id)
            await ws.send_json({"type": "reply", "reply_to": client_id, "seq": seq, "text": text})
        return ws

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/ws", websocket)
    app.router.add_get("/healthz", healthz)
    return app


def run_recording_echo_server(port: int, path: Path) -> None:
    try:
        import uvloop
    except ImportError:
        loop_factory = None
    else:
        loop_factory = uvloop.new_event_loop
    runner = asyncio.Runner(loop_factory=loop_factory)
    web.run_app(build_app(path), host="127.0.0.1", port=port, print=None, handle_signals=True, loop=runner.get_loop())
