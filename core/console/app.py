"""The operator console as mounted on a relaybot process's HTTP app: the page (/console), sign-in,
the JSON API and the event stream.

Served by `relaybot run` (embedded) and by `relaybot serve console` (production, beside the
adapters and workers on one Redis). The operators table and the search read the history's
database through a connection of the console's own, opened when the app starts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog
from aiohttp import web

from core.clock import Clock
from core.console.accounts import OperatorAccounts
from core.console.api import ConsoleApi
from core.console.auth import ConsoleAuth
from core.console.search import HistorySearch
from core.console.sessions import ConsoleSessions, LoginLockout
from core.console.stream import ConsoleEvents
from core.errors import ConfigError, StoreError
from core.handoff.desk import DeskEvent, HandoffDesk
from core.outbound import OutboundSender
from core.settings import Settings
from core.stores.sql import engine_for_url
from core.stores.sql_exec import SqlExecutor, executor_for

__all__ = ["Console"]

_STATIC = Path(__file__).parent / "static"
#: the page's files: name -> content type (nothing from elsewhere: no CDN, no build step)
_FILES = {"console.js": "text/javascript", "console.css": "text/css"}


class Console:
    def __init__(
        self,
        *,
        settings: Settings,
        desk: HandoffDesk,
        outbound: OutboundSender,
        sessions: ConsoleSessions,
        lockout: LoginLockout,
        publish: Callable[[DeskEvent], Awaitable[None]],
        start_events: Callable[[], Awaitable[None]],
        heartbeat_seconds: float = 15.0,
        clock: Clock | None = None,
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        """`start_events` subscribes the process to the desk's events (so a page's stream misses
        nothing from its first frame on); `publish` sends one to every console."""
        self._settings = settings
        self._start_events = start_events
        self._log = logger or structlog.get_logger("relaybot.console")
        self._db: SqlExecutor = executor_for(engine_for_url(settings.effective_database_url))
        self.accounts = OperatorAccounts(self._db, rounds=settings.console.password_rounds)
        self._search = HistorySearch(self._db)
        self.auth = ConsoleAuth(
            accounts=self.accounts, sessions=sessions, lockout=lockout, settings=settings, logger=self._log
        )
        self.api = ConsoleApi(
            auth=self.auth, desk=desk, outbound=outbound, search=lambda: self._search, publish=publish, clock=clock
        )
        self.events = ConsoleEvents(auth=self.auth, desk=desk, heartbeat_seconds=heartbeat_seconds, logger=self._log)
        self._files: dict[str, bytes] = {}

    def register(self, app: web.Application) -> None:
        app.router.add_get("/console", self._page)
        app.router.add_get("/console/", self._page)
        app.router.add_get("/console/{name:console\\.(js|css)}", self._file)
        app.router.add_post("/console/login", self.auth.login)
        app.router.add_post("/console/logout", self.auth.logout)
        app.router.add_get("/console/api/events", self.events.stream)
        app.router.add_routes(self.api.routes())
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._on_shutdown)
        app.on_cleanup.append(self._on_cleanup)

    async def _on_startup(self, app: web.Application) -> None:
        await self.accounts.create_schema()
        try:
            await self._start_events()
        except StoreError as exc:
            # Redis is down: the process still starts; the first page that asks for events
            # subscribes (and until then, pages retry every few seconds).
            await self._log.awarning("console_events_unavailable", error=str(exc))

    async def _on_shutdown(self, app: web.Application) -> None:
        await self.events.close()

    async def _on_cleanup(self, app: web.Application) -> None:
        await self._db.close()

    async def _page(self, request: web.Request) -> web.Response:
        return await self._serve("index.html", "text/html")

    async def _file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        return await self._serve(name, _FILES[name])

    async def _serve(self, name: str, content_type: str) -> web.Response:
        if name not in self._files:
            try:
                self._files[name] = await asyncio.to_thread((_STATIC / name).read_bytes)
            except OSError as exc:
                raise ConfigError(f"the console's {name} is missing from {_STATIC}: reinstall relaybot") from exc
        return web.Response(
            body=self._files[name],
            content_type=content_type,
            charset="utf-8",
            headers={
                # The page runs only our own script and talks only to us.
                "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
                "form-action 'self'",
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "same-origin",
                "Cache-Control": "no-cache",
            },
        )
