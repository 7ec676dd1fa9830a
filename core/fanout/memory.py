"""In-process fan-out: subscribers are called directly."""

from __future__ import annotations

import structlog

from core.fanout.base import FanoutHandler


class MemoryFanout:
    def __init__(self, *, logger: structlog.typing.FilteringBoundLogger | None = None) -> None:
        self._handlers: dict[str, list[FanoutHandler]] = {}
        self._log = logger or structlog.get_logger("relaybot.fanout")

    async def publish(self, topic: str, payload: str) -> int:
        handlers = self._handlers.get(topic, ())
        for handler in handlers:
            try:
                await handler(payload)
            except Exception as exc:
                await self._log.aexception("fanout_handler_failed", topic=topic, error=str(exc))
        return len(handlers)

    async def subscribe(self, topic: str, handler: FanoutHandler) -> None:
        self._handlers.setdefault(topic, []).append(handler)

    async def close(self) -> None:
        self._handlers.clear()
