"""The widget's limits at the edge: checked before a message is queued or anything is stored.

A widget user is whoever opens a socket, so per-user limits alone cost nothing to escape (a new
connection is a new user). These limits hold per client address (new sessions and messages per
minute), per socket (messages per minute), and per bot (tokens of every user together per UTC
day). Counts live in the runtime's limiter, so every web process on one Redis shares them. The
client address is the socket's peer, or the X-Forwarded-For entry added by the last of the
configured trusted proxies, never a header a client could simply send.
"""

from __future__ import annotations

import ipaddress
import time
from collections import deque
from dataclasses import dataclass, field

from aiohttp import web

from core.bots import BotConfig
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
    def __init__(self, limiter: RateLimiter, settings: WebSettings) -> None:
        self._limiter = limiter
        self._settings = settings
        self._proxies = [ipaddress.ip_network(p, strict=False) for p in settings.trusted_proxies]

    def client_address(self, request: web.Request) -> str:
        peer = request.remote or "unknown"
        if not self._proxies or not self._trusted(peer):
            return peer
        # Walk back from the nearest hop: the first address not one of our proxies is the client.
        hops = [h.strip() for v in request.headers.getall("X-Forwarded-For", []) for h in v.split(",") if h.strip()]
        for hop in reversed(hops):
            if not self._trusted(hop):
                return hop
        return hops[0] if hops else peer

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._proxies)

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
            return RateDecision(False, retry_after=seconds_to_utc_midnight(time.time()), window="day")
        limit = self._settings.messages_per_minute_per_ip
        decision = await self._limiter.hit(f"web:ip:{address}", RateLimits(limit, limit * 60, _NO_LIMIT))
        if decision.allowed:
            connection.sent.append(now)
        return decision
