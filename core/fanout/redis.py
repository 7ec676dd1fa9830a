"""Fan-out over Redis pub/sub: each process subscribes to the topics of the channels it hosts."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import redis.asyncio as aioredis
import structlog

from core.fanout.base import FanoutHandler
from core.redisio import describe, redis_errors, text


class RedisFanout:
    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "relaybot",
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._where = describe(client)
        self._handlers: dict[str, list[FanoutHandler]] = {}
        self._pubsub: Any = None
        self._listener: asyncio.Task[None] | None = None
        self._closing = False
        self._log = logger or structlog.get_logger("relaybot.fanout")

    def _channel(self, topic: str) -> str:
        return f"{self._prefix}:fanout:{topic}"

    async def publish(self, topic: str, payload: str) -> int:
        with redis_errors(self._where, "publishing to subscribers", prefix=self._prefix):
            return int(await self._client.publish(self._channel(topic), payload))

    async def subscribe(self, topic: str, handler: FanoutHandler) -> None:
        if self._pubsub is None:
            self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        if topic not in self._handlers:
            with redis_errors(self._where, "subscribing", prefix=self._prefix):
                await self._pubsub.subscribe(self._channel(topic))
        # Only once subscribed: after a failure (Redis down) the next call subscribes again.
        self._handlers.setdefault(topic, []).append(handler)
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen(), name="relaybot-fanout")

    async def _listen(self) -> None:
        offset = len(self._prefix) + len(":fanout:")
        while not self._closing:
            try:
                message = await self._pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Redis went away: pub/sub is best effort; keep trying until it comes back.
                await self._log.awarning("fanout_listen_failed", error=str(exc))
                await asyncio.sleep(0.5)
                continue
            if message is None or message.get("type") != "message":
                continue
            topic = text(message["channel"])[offset:]
            for handler in self._handlers.get(topic, ()):
                try:
                    await handler(text(message["data"]))
                except Exception as exc:
                    await self._log.aexception("fanout_handler_failed", topic=topic, error=str(exc))

    async def close(self) -> None:
        # A flag as well as cancellation: redis-py can absorb a CancelledError mid-read.
        self._closing = True
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._listener, 3)
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
        self._handlers.clear()
