"""The composition root: builds every service from settings and wires them together.

`relaybot run` uses one Runtime for the whole process: the channels that are configured, the
bus, a worker and the outbox. Nothing else in relaybot constructs services.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

import structlog
from aiohttp import web

from core.bots import BotRegistry
from core.bus.memory import MemoryBus
from core.channel import ChannelAdapter, ChannelContext, ChannelFactory
from core.dedupe.memory import MemoryDedupeStore
from core.delivery.outbox import Outbox
from core.errors import StoreError
from core.llm.base import LLMProvider
from core.llm.offline import OfflineProvider
from core.locks.memory import MemoryConversationLocks
from core.pipeline.pipeline import Pipeline
from core.pipeline.stages import (
    AssembleContextStage,
    GenerateStage,
    HistoryWindowStage,
    LoadSessionStage,
    LogTurnStage,
    RateLimitStage,
    RecordStage,
)
from core.plugins import channel_names, load_channel_factory
from core.ratelimit.memory import MemoryRateLimiter
from core.secrets import load_or_create_secret
from core.settings import Settings
from core.stores.base import HistoryStore, SessionStore
from core.stores.memory import MemorySessionStore
from core.stores.redis import RedisSessionStore
from core.stores.sql import SqlHistoryStore
from core.worker import Worker


def build_provider(settings: Settings) -> LLMProvider:
    # Real providers and the fallback chain arrive with the LLM layer; until then every bot
    # answers through the offline provider, which says plainly that no model is configured.
    return OfflineProvider()


class Runtime:
    def __init__(
        self,
        *,
        settings: Settings,
        bots: BotRegistry,
        sessions: SessionStore,
        history: HistoryStore,
        secret: bytes,
        provider: LLMProvider,
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self.settings = settings
        self.bots = bots
        self.sessions = sessions
        self.history = history
        self.secret = secret
        self.log = logger or structlog.get_logger("relaybot")
        self.bus = MemoryBus()
        self.dedupe = MemoryDedupeStore()
        self.locks = MemoryConversationLocks()
        self.limiter = MemoryRateLimiter()
        self.provider = provider
        self.channels: dict[str, ChannelAdapter] = {}
        self.outbox = Outbox(self.channels)
        self.pipeline = Pipeline(
            stages=[
                RateLimitStage(self.limiter),
                LoadSessionStage(sessions, history),
                HistoryWindowStage(sessions),
                AssembleContextStage(),
                GenerateStage(provider),
            ],
            closing=[RecordStage(sessions, history), LogTurnStage()],
        )
        self.worker = Worker(
            bus=self.bus,
            pipeline=self.pipeline,
            bots=bots,
            locks=self.locks,
            dedupe=self.dedupe,
            outbox=self.outbox,
            concurrency=settings.worker_concurrency,
        )
        self._worker_task: asyncio.Task[None] | None = None

    @classmethod
    async def from_settings(cls, settings: Settings) -> Runtime:
        bots = BotRegistry.from_dir(settings.bots_dir, default=settings.default_bot)
        sessions: SessionStore
        if settings.redis_url:
            sessions = RedisSessionStore.from_url(
                settings.redis_url, ttl_seconds=settings.session_ttl_seconds
            )
        else:
            sessions = MemorySessionStore(ttl_seconds=settings.session_ttl_seconds)
        history = SqlHistoryStore.from_url(settings.effective_database_url)
        try:
            await history.create_schema()
            secret = (
                settings.secret_key.get_secret_value().encode()
                if settings.secret_key
                else await load_or_create_secret(settings.data_dir / "secret_key")
            )
        except BaseException:
            await history.close()
            await sessions.close()
            raise
        return cls(
            settings=settings,
            bots=bots,
            sessions=sessions,
            history=history,
            secret=secret,
            provider=build_provider(settings),
        )

    def channel_context(self) -> ChannelContext:
        return ChannelContext(
            settings=self.settings,
            bots=self.bots,
            bus=self.bus,
            dedupe=self.dedupe,
            history=self.history,
            secret=self.secret,
            logger=self.log,
        )

    def add_channel(self, adapter: ChannelAdapter) -> ChannelAdapter:
        for name in adapter.channel_names:
            self.channels[name] = adapter
        return adapter

    def add_configured_channels(self, names: Iterable[str] | None = None) -> list[str]:
        """Start the named adapters, or every installed one whose settings are present."""
        started: list[str] = []
        for name in names if names is not None else channel_names():
            factory: ChannelFactory = load_channel_factory(name)
            if names is None and not factory.is_configured(self.settings):
                continue
            self.add_channel(factory(self.channel_context()))
            started.append(name)
        return started

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=self.settings.max_body_bytes)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        for adapter in {id(a): a for a in self.channels.values()}.values():
            adapter.register(app)
        return app

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, request: web.Request) -> web.Response:
        checks: dict[str, str] = {}
        for name, store in (("sessions", self.sessions), ("history", self.history)):
            try:
                await store.ping()
                checks[name] = "ok"
            except StoreError as exc:
                checks[name] = str(exc)
        ok = all(v == "ok" for v in checks.values())
        return web.json_response(
            {"status": "ok" if ok else "unavailable", "checks": checks}, status=200 if ok else 503
        )

    async def start(self) -> None:
        if self._worker_task is None:
            self._worker_task = asyncio.create_task(self.worker.run(), name="relaybot-worker")

    async def close(self, *, grace: float = 10.0) -> None:
        """Stop taking work, let turns in flight finish within `grace`, then release everything."""
        await self.bus.close()
        if self._worker_task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._worker_task), grace)
            except TimeoutError:
                await self.worker.stop()
                self._worker_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._worker_task
        for adapter in {id(a): a for a in self.channels.values()}.values():
            await adapter.close()
        await self.sessions.close()
        await self.history.close()
