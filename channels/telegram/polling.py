"""Long polling (`getUpdates`): receiving without a public URL, for local development.

Updates are confirmed (the next `offset`) only once `accept` has handed them to the bus, so a
failing bus means Telegram returns them again rather than losing them. Errors that retrying at
once cannot heal (a wrong token, another poller or a webhook: 409) are logged and retried slowly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta

import structlog
from telegram import Bot, Update
from telegram.error import Conflict, Forbidden, InvalidToken, RetryAfter, TelegramError, TimedOut

from core.backoff import Backoff
from core.errors import StoreError

_REFUSED_PAUSE_SECONDS = 30.0
_MAX_BACKOFF_SECONDS = 30.0


class Poller:
    def __init__(
        self,
        *,
        bot: Callable[[], Awaitable[Bot]],
        accept: Callable[[Update], Awaitable[None]],
        timeout: int,
        allowed_updates: list[str],
        logger: structlog.typing.FilteringBoundLogger,
    ) -> None:
        self._bot = bot
        self._accept = accept
        self._timeout = timeout
        self._allowed = allowed_updates
        self._log = logger

    async def run(self) -> None:
        """Poll until cancelled."""
        offset: int | None = None
        backoff = Backoff(first=1.0, ceiling=_MAX_BACKOFF_SECONDS)
        webhook_removed = False
        while True:
            try:
                bot = await self._bot()
                if not webhook_removed:
                    # getUpdates and a webhook exclude each other (409 Conflict).
                    await bot.delete_webhook()
                    webhook_removed = True
                    await self._log.ainfo("polling_started")
                updates = await bot.get_updates(offset=offset, timeout=self._timeout, allowed_updates=self._allowed)
                backoff.reset()
            except RetryAfter as exc:
                wait = exc.retry_after
                await asyncio.sleep(wait.total_seconds() if isinstance(wait, timedelta) else float(wait))
                continue
            except TimedOut:
                continue
            except (InvalidToken, Forbidden, Conflict) as exc:
                await self._log.aerror("polling_refused", error=str(exc), retry_in=_REFUSED_PAUSE_SECONDS)
                await asyncio.sleep(_REFUSED_PAUSE_SECONDS)
                continue
            except TelegramError as exc:
                delay = backoff.next()
                await self._log.awarning("polling_failed", error=str(exc), retry_in=delay)
                await asyncio.sleep(delay)
                continue
            for update in updates:
                try:
                    await self._accept(update)
                except (StoreError, TelegramError) as exc:
                    # Not confirmed (offset unchanged): the next getUpdates returns it again.
                    await self._log.aerror("publish_failed", update_id=update.update_id, error=str(exc))
                    await asyncio.sleep(backoff.next())
                    break
                except Exception as exc:
                    # A bug must not stop polling, nor bring the same update back forever: skipped, logged.
                    await self._log.aexception("update_failed", update_id=update.update_id, error=repr(exc))
                offset = update.update_id + 1
