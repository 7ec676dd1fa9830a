"""The composition root: builds every service from settings and wires them together.

One Runtime per process. `relaybot run` hosts the configured channels and a worker; with
`RELAYBOT_BUS=redis`, `relaybot serve CHANNEL` hosts only adapters (and delivers their replies)
and `relaybot worker` only turns envelopes into replies. Nothing else in relaybot builds services.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import Iterable, Sequence

import redis.asyncio as aioredis
import structlog
from aiohttp import web

from core.bots import BotRegistry
from core.bus.queue import QueueBus
from core.channel import ChannelAdapter, ChannelContext, ChannelFactory
from core.clock import Clock, SystemClock
from core.console.app import Console
from core.console.sessions import (
    MemoryConsoleSessions,
    MemoryLoginLockout,
    RedisConsoleSessions,
    RedisLoginLockout,
)
from core.dedupe.base import DedupeStore
from core.dedupe.memory import MemoryDedupeStore
from core.dedupe.redis import RedisDedupeStore
from core.delivery.outbox import InlineOutbox, Outbox, QueueOutbox, deliver_topic, fragments_topic
from core.delivery.records import DeliveryRecords
from core.delivery.records.memory import MemoryDeliveryRecords
from core.delivery.records.redis import RedisDeliveryRecords
from core.delivery.sender import ReplySender
from core.delivery.worker import DeliveryWorker
from core.envelope import Reply, register_channel_names
from core.errors import ConfigError, StoreError
from core.fanout.base import Fanout, FanoutHandler
from core.fanout.memory import MemoryFanout
from core.fanout.redis import RedisFanout
from core.handlers import HandlerCatalog, HandlerStage
from core.handlers.actions import ActionStage
from core.handlers.commands import CommandStage
from core.handlers.llm_tools import LLMTools
from core.handoff.desk import HandoffDesk
from core.handoff.events import DeskEventHub
from core.handoff.index import HandoffIndex, MemoryHandoffIndex
from core.handoff.redis import RedisHandoffIndex
from core.handoff.service import SessionHandoffDesk
from core.handoff.stages import DeskNoticeStage, HeldStage, RequestStage, UserAsksStage
from core.intents import IntentStage, LLMIntentClassifier, LocalIntentClassifier
from core.knowledge.errors import KnowledgeError
from core.knowledge.service import KnowledgeService
from core.knowledge.stage import RetrieveStage
from core.llm.factory import ChainFactory
from core.memory.llm import ChainFactExtractor, ChainSummarizer, has_model
from core.memory.stages import ExtractFactsStage, FoldSummaryStage, MemoryCommandStage
from core.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from core.metrics import Metrics
from core.outbound import OutboundSender
from core.pipeline.closing import SaveTurnStage
from core.pipeline.opening import OpenTurnStage
from core.pipeline.pipeline import Pipeline, Stage
from core.pipeline.stages import (
    AssembleContextStage,
    GenerateStage,
    LogTurnStage,
    MetricsStage,
)
from core.plugins import channel_names, installed_capabilities, installed_reply_windows, load_channel_factory
from core.queue.base import OrderedQueue
from core.queue.memory import MemoryQueue
from core.queue.redis import RedisQueue
from core.ratelimit.base import RateLimiter
from core.ratelimit.memory import MemoryRateLimiter
from core.ratelimit.redis import RedisRateLimiter
from core.redisio import client_from_url, round_trips
from core.secrets import server_secret
from core.settings import Settings, environment
from core.stores.base import HistoryStore, SessionStore
from core.stores.cached import CachedHistoryStore
from core.stores.memory import MemoryReadCache, MemorySessionStore
from core.stores.redis import RedisReadCache, RedisSessionStore
from core.stores.sql import SqlHistoryStore, database_kind
from core.streams import StreamRegistry
from core.streams.memory import MemoryStreamRegistry
from core.streams.redis import RedisStreamRegistry
from core.tools import ToolExecutor
from core.worker import Worker


class Runtime:
    def __init__(
        self,
        *,
        settings: Settings,
        bots: BotRegistry,
        sessions: SessionStore,
        history: HistoryStore,
        secret: bytes,
        chains: ChainFactory,
        redis: aioredis.Redis | None = None,
        logger: structlog.typing.FilteringBoundLogger | None = None,
        knowledge: KnowledgeService | None = None,
        clock: Clock | None = None,
        observers: Sequence[Stage] = (),
    ) -> None:
        """`clock` is the time every part of a turn reads (the system's; conversation tests give their
        own); `observers` are closing stages run after the turn is logged (how a test reads each turn)."""
        if settings.bus == "redis" and redis is None:
            raise ConfigError("RELAYBOT_BUS=redis needs REDIS_URL (the Redis that adapters and workers share)")
        self.settings = settings
        self.bots = bots
        self.clock: Clock = clock or SystemClock()
        self.sessions = sessions
        # Facts and summaries are read on every turn and written every few: served from a cache
        # shared like the sessions are (Redis when there is one), dropped on every write.
        self.history: HistoryStore = CachedHistoryStore(
            history,
            RedisReadCache(redis) if redis is not None else MemoryReadCache(),
            ttl_seconds=settings.session_ttl_seconds,
        )
        self.secret = secret
        self.redis = redis
        self.distributed = settings.bus == "redis"
        self.log = logger or structlog.get_logger("relaybot")
        self._queues: dict[str, OrderedQueue] = {}
        self.bus = QueueBus(self.queue("bus"))
        # Shared whenever Redis is there, so two `relaybot run` behind one balancer agree too.
        self.dedupe: DedupeStore = RedisDedupeStore(redis) if redis is not None else MemoryDedupeStore()
        # Redis limits run on Redis's own clock, so workers on hosts with skewed clocks agree.
        self.limiter: RateLimiter = (
            RedisRateLimiter(redis) if redis is not None else MemoryRateLimiter(clock=self.clock)
        )
        self.records: DeliveryRecords = RedisDeliveryRecords(redis) if redis is not None else MemoryDeliveryRecords()
        self.fanout: Fanout = RedisFanout(redis) if self.distributed and redis is not None else MemoryFanout()
        self.streams: StreamRegistry = (
            RedisStreamRegistry(redis) if self.distributed and redis is not None else MemoryStreamRegistry()
        )
        self.channels: dict[str, ChannelAdapter] = {}
        self.metrics = Metrics()
        if redis is not None:
            client = redis
            self.metrics.count_redis_round_trips(lambda: round_trips(client))
        self.sender = ReplySender(self.channels, self.records, metrics=self.metrics)
        self.outbox: Outbox = (
            QueueOutbox(
                queue_for=lambda channel: self.queue(f"outbox:{channel}"),
                capabilities=installed_capabilities(),
                fanout=self.fanout,
                dedupe=self.dedupe,
                records=self.records,
            )
            if self.distributed
            else InlineOutbox(self.channels, self.sender)
        )
        # Desk events reach every process sharing the Redis (the console may run apart from the workers).
        self._desk_fanout: Fanout | None = RedisFanout(redis) if redis is not None and not self.distributed else None
        handoff_index: HandoffIndex = RedisHandoffIndex(redis) if redis is not None else MemoryHandoffIndex()
        self.desk_events = DeskEventHub(self._desk_fanout or self.fanout)
        self.desk = SessionHandoffDesk(
            sessions=sessions,
            history=self.history,
            index=handoff_index,
            events=self.desk_events,
            outbox=self.outbox,
            bots=bots,
            metrics=self.metrics,
            clock=self.clock,
        )
        self.outbound = OutboundSender(
            sessions=sessions,
            history=self.history,
            outbox=self.outbox,
            bots=bots,
            settings=settings,
            windows=installed_reply_windows(),
            clock=self.clock,
        )
        self.chains = chains
        # Opens chromadb and loads the embedding model on first use only; shared with the intent classifier.
        self.knowledge = knowledge or KnowledgeService.from_settings(settings)
        # Each bot's handlers.py, loaded (and checked against its bot.toml) once, at start-up.
        self.handlers = HandlerCatalog(bots)
        self.tools = ToolExecutor()
        self.intents = LocalIntentClassifier(self.knowledge.embedder)
        self.pipeline = Pipeline(
            stages=[
                OpenTurnStage(self.limiter, sessions, self.history, clock=self.clock),
                # While a person is asked for or holds the conversation, the bot stays silent.
                HeldStage(self.desk),
                MemoryCommandStage(self.history),
                CommandStage(self.handlers),
                ActionStage(self.handlers),
                IntentStage(self.intents, LLMIntentClassifier(chains.for_bot, self.intents)),
                RetrieveStage(self.knowledge),
                HandlerStage(self.handlers, sessions, self.tools, data_dir=settings.data_dir),
                UserAsksStage(),
                AssembleContextStage(clock=self.clock),
                GenerateStage(
                    chain_for=chains.for_bot,
                    tools_for=LLMTools(self.handlers, self.tools, data_dir=settings.data_dir).for_turn,
                ),
            ],
            closing=[
                RequestStage(self.desk),
                SaveTurnStage(sessions, self.history, self.limiter, clock=self.clock),
                DeskNoticeStage(self.desk),
                LogTurnStage(),
                MetricsStage(self.metrics),
                *observers,
            ],
            after=[
                ExtractFactsStage(self.history, ChainFactExtractor(chains.for_bot)),
                FoldSummaryStage(self.history, ChainSummarizer(chains.for_bot), clock=self.clock),
            ],
            # Facts and summaries call the bot's model when it has one; offline they are local.
            after_side_by_side=lambda turn: has_model(chains.for_bot(turn.bot)),
        )
        self.worker = Worker(
            queue=self.bus.queue,
            pipeline=self.pipeline,
            bots=bots,
            outbox=self.outbox,
            concurrency=settings.worker_concurrency,
            visibility_timeout=settings.visibility_timeout_seconds,
            on_dead_letter=self.metrics.dead_letters.labels("bus").inc,
        )
        self.delivery: DeliveryWorker | None = None
        self.console: Console | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    @classmethod
    async def from_settings(
        cls,
        settings: Settings,
        *,
        chains: ChainFactory | None = None,
        knowledge: KnowledgeService | None = None,
        clock: Clock | None = None,
        observers: Sequence[Stage] = (),
    ) -> Runtime:
        """Everything from `settings`; the keyword arguments replace a part (conversation tests do)."""
        bots = BotRegistry.from_dir(settings.bots_dir, default=settings.default_bot)
        redis = client_from_url(settings.redis_url) if settings.redis_url else None
        sessions: SessionStore = (
            RedisSessionStore(redis, ttl_seconds=settings.session_ttl_seconds)
            if redis is not None
            else MemorySessionStore(ttl_seconds=settings.session_ttl_seconds)
        )
        history = SqlHistoryStore.from_url(settings.effective_database_url)
        try:
            await history.create_schema()
            secret = await server_secret(settings)
            return cls(
                settings=settings,
                bots=bots,
                sessions=sessions,
                history=history,
                secret=secret,
                chains=chains or ChainFactory(settings, redis=redis, environ=environment()),
                redis=redis,
                knowledge=knowledge,
                clock=clock,
                observers=observers,
            )
        except BaseException:
            await history.close()
            await sessions.close()
            if redis is not None:
                await redis.aclose()
            raise

    @property
    def handoff_desk(self) -> HandoffDesk:
        """Where operators take conversations over (the console mounts on it)."""
        return self.desk

    def mount_console(self, *, heartbeat_seconds: float = 15.0) -> Console:
        """Serve the operator console (/console) on this process's app (`build_app`)."""
        if self.console is None:
            redis = self.redis
            self.console = Console(
                settings=self.settings,
                desk=self.desk,
                outbound=self.outbound,
                sessions=RedisConsoleSessions(redis) if redis is not None else MemoryConsoleSessions(),
                lockout=RedisLoginLockout(redis) if redis is not None else MemoryLoginLockout(),
                publish=self.desk_events.publish,
                start_events=self.desk_events.start,
                heartbeat_seconds=heartbeat_seconds,
                clock=self.clock,
                logger=self.log,
            )
        return self.console

    def queue(self, name: str) -> OrderedQueue:
        """The named queue ("bus", "outbox:<channel>"), one instance per process."""
        if name not in self._queues:
            s = self.settings
            self._queues[name] = (
                RedisQueue(
                    self.redis,
                    name,
                    visibility_timeout=s.visibility_timeout_seconds,
                    max_attempts=s.max_attempts,
                    claim_ttl=s.lock_ttl_seconds,
                )
                if self.distributed and self.redis is not None
                else MemoryQueue(max_attempts=s.max_attempts)
            )
        return self._queues[name]

    def channel_context(self) -> ChannelContext:
        return ChannelContext(
            settings=self.settings,
            bots=self.bots,
            bus=self.bus,
            history=self.history,
            secret=self.secret,
            logger=self.log,
            streams=self.streams,
            records=self.records,
            limiter=self.limiter,
            outbound=self.outbound,
            clock=self.clock,
        )

    def add_channel(self, adapter: ChannelAdapter) -> ChannelAdapter:
        register_channel_names(adapter.channel_names)
        for name in adapter.channel_names:
            self.channels[name] = adapter
        return adapter

    def add_configured_channels(self, names: Iterable[str] | None = None) -> list[str]:
        """Host the named adapters, or every installed one whose settings are present."""
        started: list[str] = []
        for name in names if names is not None else channel_names():
            try:
                factory: ChannelFactory = load_channel_factory(name)
            except ImportError as exc:
                if names is not None:
                    raise ConfigError(f"channel {name!r} cannot be loaded: {exc}") from exc
                self.log.warning("channel_unavailable", channel=name, error=str(exc))
                continue
            if names is None and not factory.is_configured(self.settings):
                continue
            self.add_channel(factory(self.channel_context()))
            started.append(name)
        return started

    def _adapters(self) -> list[ChannelAdapter]:
        return list({id(a): a for a in self.channels.values()}.values())

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=self.settings.max_body_bytes)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        for adapter in self._adapters():
            adapter.register(app)
        if self.console is not None:
            self.console.register(app)
        return app

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _metrics(self, request: web.Request) -> web.Response:
        token = self.settings.metrics_token
        if token is None and self.settings.env == "production":
            # The port is public in production: metrics (bot names, traffic, queue depths) are not.
            return web.Response(
                status=403, text="set RELAYBOT_METRICS_TOKEN to read /metrics in production (Authorization: Bearer)\n"
            )
        if token is not None:
            header = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
            given = header.encode("utf-8", "surrogateescape")  # bytes that are not UTF-8: a wrong token, not a 500
            if not hmac.compare_digest(given, token.get_secret_value().encode()):
                return web.Response(status=401, text="send RELAYBOT_METRICS_TOKEN as 'Authorization: Bearer TOKEN'\n")
        try:
            body = await self.metrics.render(self._queues)
        except StoreError as exc:
            await self.log.awarning("metrics_queues_unavailable", error=str(exc))
            return web.Response(status=503, text="# queues unavailable (the log says why)\n")
        return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})

    async def _readyz(self, request: web.Request) -> web.Response:
        checks: dict[str, str] = {}
        for name, store in (("sessions", self.sessions), ("history", self.history)):
            try:
                await store.ping()
                checks[name] = "ok"
            except StoreError as exc:
                checks[name] = await self._unready(name, exc)
        try:
            # Reported only when there is a store (a CHROMA_URL, or knowledge ingested here).
            if await self.knowledge.ping() is not None:
                checks["knowledge"] = "ok"
        except KnowledgeError as exc:
            checks["knowledge"] = await self._unready("knowledge", exc)
        if self.distributed:
            try:
                await self.bus.pending()
                checks["bus"] = "ok"
            except StoreError as exc:
                checks["bus"] = await self._unready("bus", exc)
        ok = all(v == "ok" for v in checks.values())
        return web.json_response({"status": "ok" if ok else "unavailable", "checks": checks}, status=200 if ok else 503)

    async def _unready(self, check: str, exc: Exception) -> str:
        """What /readyz says of a failing check: its kind of backend, never its address (the route is
        public); the whole error, with what to fix, goes to the log."""
        await self.log.awarning("readyz_check_failed", check=check, error=str(exc))
        backend = {
            "sessions": "Redis" if self.redis is not None else "memory",
            "bus": "Redis",
            "history": database_kind(self.settings.effective_database_url),
            "knowledge": "the knowledge store",
        }[check]
        return f"unavailable ({backend}); the log says why (event readyz_check_failed)"

    async def start(self, *, worker: bool = True, delivery: bool = True) -> None:
        """Start the worker (turns) and/or the delivery of replies to the channels hosted here."""
        if worker:
            await self._warm_intents()
            self._tasks.append(asyncio.create_task(self.worker.run(), name="relaybot-worker"))
            self._tasks.append(asyncio.create_task(self._sweep_handoffs(), name="relaybot-handoff-timeouts"))
        if delivery and self.distributed:
            await self._start_delivery()
        for adapter in self._adapters():
            await adapter.start()

    async def _sweep_handoffs(self) -> None:
        """Return conversations nobody took within their bot's timeout to the bot (every worker
        sweeps; each conversation moves once, whoever gets there first)."""
        interval = self.settings.handoff_sweep_seconds
        while not self._stopping.is_set():
            try:
                await self.desk.expire_waiting()
            except Exception as exc:
                await self.log.awarning("handoff_sweep_failed", error=f"{type(exc).__name__}: {exc}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), interval)

    async def _warm_intents(self) -> None:
        """Load the embedding model and embed every bot's intent examples now, not on a user's first message."""
        for bot in self.bots:
            if bot.intents.items:
                try:
                    await self.intents.warm(bot)
                except Exception as exc:
                    # Turns still work: the intent stage falls back to the default intent.
                    await self.log.awarning("intents_unavailable", bot=bot.name, error=f"{type(exc).__name__}: {exc}")

    async def _start_delivery(self) -> None:
        push: list[str] = []
        for name, adapter in self.channels.items():
            caps = adapter.capabilities
            if caps.broadcast:
                await self.fanout.subscribe(deliver_topic(name), self._deliverer(adapter))
            else:
                push.append(name)
            if caps.can_stream:
                await self.fanout.subscribe(fragments_topic(name), self._deliverer(adapter))
        if push:
            self.delivery = DeliveryWorker(
                channels=push,
                queue_for=lambda channel: self.queue(f"outbox:{channel}"),
                sender=self.sender,
                concurrency=self.settings.worker_concurrency,
                visibility_timeout=self.settings.visibility_timeout_seconds,
                on_dead_letter=lambda queue: self.metrics.dead_letters.labels(queue).inc(),
            )
            self._tasks.append(asyncio.create_task(self.delivery.run(), name="relaybot-delivery"))

    @staticmethod
    def _deliverer(adapter: ChannelAdapter) -> FanoutHandler:
        async def deliver(payload: str) -> None:
            await adapter.deliver(Reply.from_json(payload))

        return deliver

    async def close(self, *, grace: float | None = None) -> None:
        """Stop taking work, let turns and deliveries in flight finish within `grace`, release everything."""
        grace = self.settings.shutdown_grace_seconds if grace is None else grace
        self._stopping.set()
        await self.worker.stop(grace)
        if self.delivery is not None:
            await self.delivery.stop(grace)
        for queue in self._queues.values():
            await queue.close()
        for task in self._tasks:
            try:
                await asyncio.wait_for(task, 5)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            except Exception as exc:
                await self.log.aexception("task_failed_on_close", error=str(exc))
        await self.fanout.close()
        if self._desk_fanout is not None:
            await self._desk_fanout.close()
        for adapter in self._adapters():
            await adapter.close()
        await self.sessions.close()
        await self.history.close()
        await self.chains.aclose()
        await self.tools.aclose()
        await self.knowledge.close()
        if self.redis is not None:
            await self.redis.aclose()
