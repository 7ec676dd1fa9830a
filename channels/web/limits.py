"""The widget's limits at the edge: checked before a message is queued or anything is stored.

A widget user is whoever opens a socket, so per-user limits alone cost nothing to escape (a new
connection is a new user). These limits hold per client address (new sessions and messages per
minute), per socket (messages per minute), and per bot (tokens of every user together per UTC
day). Counts live in the runtime's limiter, so every web process on one Redis shares them. The
client address is the socket's peer, or the X-Forwarded-For entry added by the last of the
configured trusted proxies, never a header a client could simply send.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from aiohttp import web

from core.bots import BotConfig
from core.clientaddr import ClientAddress
from core.clock import Clock
from core.pipeline.stages import bot_usage_key
from core.ratelimit.base import RateDecision, RateLimiter, RateLimits
from core.ratelimit.memory import seconds_to_utc_midnight
from core.settings import WebSettings

__all__ = ["ConnectionRate", "EdgeLimits"]

_MINUTE = 60.0
_NO_LIMIT = 10**9


@dataclass(slots=True)
class ConnectionRate:
    """One socket's messages of the last minute (a socket lives in one process)."""

    sent: deque[float] = field(default_factory=deque)


class EdgeLimits:
    def __init__(self, limiter: RateLimiter, settings: WebSettings, clock: Clock) -> None:
        self._limiter = limiter
        self._clock = clock
        self._settings = settings
        self._client_address = ClientAddress(settings.trusted_proxies)

    def client_address(self, request: web.Request) -> str:
        return self._client_address(request)

    async def new_session(self, address: str) -> RateDecision:
        limit = self._settings.new_sessions_per_minute_per_ip
        return await self._limiter.hit(f"web:new-session:{address}", RateLimits(limit, limit * 60, _NO_LIMIT))

    async def message(self, address: str, connection: ConnectionRate, bot: BotConfig) -> RateDecision:
        now = time.monotonic()
        while connection.sent and connection.sent[0] <= now - _MINUTE:
            connection.sent.popleft()
        if len(connection.sent) >= self._settings.messages_per_minute_per_connection:
            return RateDecision(False, retry_after=connection.sent[0] + _MINUTE - now, window="minute")
        used = await self._limiter.tokens_today(bot_usage_key(bot.name))
        if used >= bot.limits.bot_tokens_per_day:
            return RateDecision(False, retry_after=seconds_to_utc_midnight(self._clock.now().timestamp()), window="day")
        limit = self._settings.messages_per_minute_per_ip
        decision = await self._limiter.hit(f"web:ip:{address}", RateLimits(limit, limit * 60, _NO_LIMIT))
        if decision.allowed:
            connection.sent.append(now)
        return decision
