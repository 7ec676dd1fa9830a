"""Runs a handler over a queue: at most one entry per partition at a time, in ticket order.

For each entry: hold the partition's lock; if its ticket is the next one, handle it and mark it
done; if it was already done, it is a redelivery (acknowledge, do nothing); if an earlier ticket
is still in flight, let go of the lock and wait for it. Entries whose handler keeps failing are
dead-lettered after the queue's max attempts, in their turn, so the partition moves on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import structlog

from core.errors import PoisonMessage
from core.locks.base import ConversationLocks
from core.queue.base import OrderedQueue, QueueEntry

Handler = Callable[[QueueEntry], Awaitable[None]]


class OrderedConsumer:
    def __init__(
        self,
        queue: OrderedQueue,
        locks: ConversationLocks,
        handler: Handler,
        *,
        name: str,
        concurrency: int = 16,
        visibility_timeout: float = 30.0,
        order_wait_seconds: float = 300.0,
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self._queue = queue
        self._locks = locks
        self._handler = handler
        self._name = name
        self._slots = asyncio.Semaphore(concurrency)
        self._touch_every = visibility_timeout / 3
        self._order_wait = order_wait_seconds
        self._tasks: set[asyncio.Task[None]] = set()
        self._log = logger or structlog.get_logger(f"relaybot.{name}")

    async def run(self) -> None:
        """Consume until the queue is closed, then wait for the entries in flight."""
        async for entry in self._queue.entries():
            await self._slots.acquire()
            task = asyncio.create_task(self._handle(entry), name=f"{self._name}:{entry.id}")
            self._tasks.add(task)
            task.add_done_callback(self._finished)
        await self.drain()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def stop(self, grace: float) -> None:
        """Stop taking entries; give entries in flight `grace` seconds, then hand them back."""
        await self._queue.close()
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in late:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*late, return_exceptions=True)

    async def _handle(self, entry: QueueEntry) -> None:
        keeper = asyncio.create_task(self._keep_visible(entry))
        try:
            if entry.attempt > self._queue.max_attempts:
                await self._in_order(entry, self._dead_letter)
            else:
                await self._in_order(entry, self._handler)
            await self._queue.ack(entry)
        except PoisonMessage as exc:
            reason = f"unprocessable: {exc}"
            await self._in_order(entry, lambda e: self._queue.dead_letter(e, reason))
            await self._log.aerror("entry_dead_lettered", entry_id=entry.id, partition=entry.partition, error=reason)
        except asyncio.CancelledError:
            # Shutting down mid-entry: hand it back so another consumer takes it now.
            with contextlib.suppress(Exception):
                await self._queue.release(entry)
            raise
        except Exception as exc:
            await self._log.aexception(
                "entry_failed",
                entry_id=entry.id,
                partition=entry.partition,
                attempt=entry.attempt,
                error=str(exc),
            )
            with contextlib.suppress(Exception):
                await self._queue.fail(entry, f"{type(exc).__name__}: {exc}")
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper

    async def _dead_letter(self, entry: QueueEntry) -> None:
        await self._queue.dead_letter(entry, f"gave up after {entry.attempt - 1} attempts")
        await self._log.aerror("entry_dead_lettered", entry_id=entry.id, partition=entry.partition)

    async def _keep_visible(self, entry: QueueEntry) -> None:
        while True:
            await asyncio.sleep(self._touch_every)
            try:
                await self._queue.touch(entry)
            except Exception as exc:
                await self._log.awarning("touch_failed", entry_id=entry.id, error=str(exc))

    async def _in_order(self, entry: QueueEntry, action: Handler) -> None:
        deadline = time.monotonic() + self._order_wait
        delay = 0.005
        while True:
            async with self._locks.hold(f"{self._name}:{entry.partition}") as lease:
                done = await self._queue.last_done(entry.partition)
                if entry.ticket <= done:
                    if await self._queue.take_skipped(entry.partition, entry.ticket):
                        await self._log.awarning("late_entry_handled", entry_id=entry.id, ticket=entry.ticket)
                        await action(entry)
                    return
                late = time.monotonic() > deadline
                if entry.ticket == done + 1 or late:
                    if late:
                        await self._log.aerror(
                            "order_gap_skipped", partition=entry.partition, ticket=entry.ticket, done=done
                        )
                    await action(entry)
                    if not await lease.still_held():
                        # Someone took over while we stalled; their run owns the progress marker.
                        raise RuntimeError(f"lost the lock of {entry.partition!r} while handling {entry.id}")
                    await self._queue.mark_done(entry.partition, entry.ticket)
                    return
            # An earlier entry of this partition is still being handled elsewhere: wait for it.
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)
