"""The channel seam as the core sees it.

The core delivers through `DeliveryTarget` and the runtime drives `ChannelAdapter`s found by
entry point; both live here because `core/` never imports `channels/`. Adapters implement them
(one package per platform under `channels/`) and import them from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

import structlog
from aiohttp import web

from core.bots import BotRegistry
from core.bus.base import Bus
from core.clock import Clock, SystemClock
from core.envelope import Reply
from core.frozen import fast_init
from core.ratelimit.base import RateLimiter
from core.settings import Settings
from core.stores.base import HistoryStore
from core.streams import StreamRegistry

if TYPE_CHECKING:  # core.delivery and core.outbound import this module
    from core.delivery.records import DeliveryRecords
    from core.outbound import OutboundSender

MarkdownDialect = Literal["commonmark", "mrkdwn", "telegram-html", "whatsapp", "plain"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Capabilities:
    max_message_length: int
    markdown: MarkdownDialect = "commonmark"
    can_edit: bool = False
    can_stream: bool = False
    can_show_typing: bool = False
    #: connections live in one process (web sockets): every process hosting the channel is given
    #: each reply and delivers it to the connections it holds
    broadcast: bool = False
    #: the platform drops a repeated send (an idempotency key), so a send that timed out may be retried
    idempotent_sends: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplyWindow:
    """A channel that takes free-form messages only within `seconds` of the user's last message
    (WhatsApp: 24 hours). An adapter declares its windows as `reply_windows = {channel name: window}`;
    proactive messages (core.outbound) outside it send the bot's approved template, or are refused."""

    seconds: float
    #: the bot's approved template (an id the adapter sends instead), read from the settings; None: refuse
    template: Callable[[Settings, str], str | None]
    #: the setting that names the templates, for the refusal's message
    setting: str = ""


@fast_init
@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """What the channel did with a reply: sent now, or kept for the recipient to fetch later."""

    delivered: bool
    channel_message_ids: tuple[str, ...] = ()
    detail: str = ""


class DeliveryTarget(Protocol):
    @property
    def capabilities(self) -> Capabilities: ...

    async def deliver(self, reply: Reply) -> DeliveryResult:
        """Send a reply (or, with `final=False`, a streamed fragment).

        Raises core.errors.DeliveryError; `retryable` and `retry_after` steer the outbox.
        """
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelContext:
    """What an adapter may use: given by the runtime, so adapters never build their own services."""

    settings: Settings
    bots: BotRegistry
    #: publishing is also the dedupe: the bus takes a platform message id once, atomically
    bus: Bus
    history: HistoryStore
    secret: bytes
    logger: structlog.typing.FilteringBoundLogger
    #: which process shows a reply streamed by editing one message, shared by every adapter process
    streams: StreamRegistry
    #: what happened to each reply; adapters update it when the platform reports later (status callbacks)
    records: DeliveryRecords
    #: limits checked at the edge, before a message is queued (shared by every process on Redis)
    limiter: RateLimiter
    #: proactive messages to known users (POST /api/outbound); None where the process sends none
    outbound: OutboundSender | None = None
    #: the runtime's clock, for what an adapter tells users about time (when a daily limit resets)
    clock: Clock = field(default_factory=SystemClock)


class ChannelAdapter(DeliveryTarget, Protocol):
    """A channel adapter as the runtime drives it."""

    #: the envelope channel names this adapter delivers for (e.g. ("sms", "whatsapp"))
    channel_names: tuple[str, ...]

    def register(self, app: web.Application) -> None:
        """Add the adapter's routes to the shared aiohttp app."""
        ...

    async def start(self) -> None:
        """Begin receiving without webhooks, where the adapter does (long polling, Socket Mode).

        Called once the process is ready to take work; most adapters only receive through routes.
        """
        ...

    async def close(self) -> None: ...


class ChannelFactory(Protocol):
    """An adapter class as found through the `relaybot.channels` entry point."""

    def __call__(self, ctx: ChannelContext) -> ChannelAdapter: ...

    def is_configured(self, settings: Settings) -> bool:
        """Whether `relaybot run` should start this adapter with these settings."""
        ...
