"""Display names from `users.info`, cached (bounded, with a TTL) and never allowed to delay the ack."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import structlog
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

# A failed lookup is remembered briefly, so a user whose lookup fails does not cost a call per message.
_NEGATIVE_TTL = 60.0


def display_name(user: dict[str, Any]) -> str | None:
    profile = user.get("profile") or {}
    for value in (profile.get("display_name"), profile.get("real_name"), user.get("real_name"), user.get("name")):
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


class UserNames:
    def __init__(
        self,
        client: AsyncWebClient,
        *,
        size: int,
        ttl_seconds: float,
        timeout_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self._client = client
        self._size = size
        self._ttl = ttl_seconds
        self._timeout = timeout_seconds
        self._clock = clock
        self._names: OrderedDict[str, tuple[float, str | None]] = OrderedDict()
        # Concurrent messages from one user share one lookup.
        self._pending: dict[str, asyncio.Future[str | None]] = {}
        self._log = logger or structlog.get_logger("relaybot.slack")

    async def get(self, user_id: str) -> str | None:
        """The user's display name, or None when Slack does not say in time (the name is optional)."""
        cached = self._names.get(user_id)
        if cached is not None and cached[0] > self._clock():
            self._names.move_to_end(user_id)
            return cached[1]
        pending = self._pending.get(user_id)
        if pending is None:
            pending = self._pending[user_id] = asyncio.ensure_future(self._lookup(user_id))
            pending.add_done_callback(lambda _: self._pending.pop(user_id, None))
        try:
            # shield: one caller timing out must not cancel the lookup another caller waits on
            return await asyncio.wait_for(asyncio.shield(pending), self._timeout)
        except TimeoutError:
            await self._log.ainfo("slack_user_lookup_slow", user=user_id, timeout=self._timeout)
            return None

    async def _lookup(self, user_id: str) -> str | None:
        name: str | None = None
        ttl = self._ttl
        try:
            response = await self._client.users_info(user=user_id)
            user = response.get("user")
            name = display_name(user) if isinstance(user, dict) else None
        except (SlackApiError, OSError, TimeoutError) as exc:
            ttl = min(ttl, _NEGATIVE_TTL)
            await self._log.ainfo("slack_user_lookup_failed", user=user_id, error=str(exc))
        self._names[user_id] = (self._clock() + ttl, name)
        self._names.move_to_end(user_id)
        while len(self._names) > self._size:
            self._names.popitem(last=False)
        return name

    def __len__(self) -> int:
        return len(self._names)

    async def close(self) -> None:
        for pending in list(self._pending.values()):
            pending.cancel()
        self._pending.clear()
