"""Runs a handler over a queue: at most one entry per partition at a time, in ticket order.

For each entry, `start` on the queue checks its turn and claims its partition in one step: when
its partition's last done ticket is the one before it, it handles the entry, and `finish` marks
it done, gives the claim back and acknowledges it in one step; if it was done already, it is a
redelivery (acknowledge, do nothing); if an earlier ticket is still in flight (here or in another
process), or another consumer holds the partition, it waits for the partition's next notice
without holding a handler slot, so entries waiting on each other can never fill every slot.
Entries whose handler keeps failing are dead-lettered after the queue's max attempts, in their
turn, so the partition moves on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import structlog

from core.backoff import Backoff
from core.errors import PoisonMessage, StoreError
from core.queue.base import OrderedQueue, QueueClosed, QueueEntry

Handler = Callable[[QueueEntry], Awaitable[None]]

#: entries read ahead per handler slot: waiting entries are cheap, and reading ahead in stream
#: order is what lets a predecessor start while its successors wait
READ_AHEAD = 4
#: how often an entry waiting for its predecessor looks again without being woken (a safety net:
#: finishing an entry wakes its successors, in this process directly and in others by notice)
PROGRESS_RECHECK_SECONDS = 1.0


class OrderedConsumer:
    def __init__(
        self,
        queue: OrderedQueue,
        handler: Handler,
        *,
        name: str,
        concurrency: int = 16,
        visibility_timeout: float = 30.0,
        order_wait_seconds: float = 300.0,
        on_dead_letter: Callable[[], None] | None = None,
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self._on_dead_letter = on_dead_letter
        self._queue = queue
        self._handler = handler
        self._name = name
        self._running = asyncio.Semaphore(concurrency)
        self._read_ahead_limit = concurrency * READ_AHEAD
        self._capacity = asyncio.Event()
        self._reclaim_every = visibility_timeout / 3
        self._touch_every = visibility_timeout / 3
        self._order_wait = order_wait_seconds
        self._progress: dict[str, asyncio.Event] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        #: entries being handled, touched together by one keeper task (not one task per entry)
        self._held: dict[str, QueueEntry] = {}
        self._log = logger or structlog.get_logger(f"relaybot.{name}")

    async def run(self) -> None:
        """Consume until the queue is closed, then wait for the entries in flight.

        If the queue's backend goes away (Redis restarting), keep trying with backoff: entries
        are safe in the queue, and the ones in flight are retried by their own handlers.
        """
        consumed = asyncio.Event()
        keeper = asyncio.create_task(self._keep_visible(consumed), name=f"{self._name}:keeper")
        listener = asyncio.create_task(self._hear_progress(), name=f"{self._name}:progress")
        try:
            await self._consume()
        finally:
            consumed.set()
            for task in (keeper, listener):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _hear_progress(self) -> None:
        """Wake the entries waiting on a partition when another process moves it on."""
        backoff = Backoff()
        while True:
            try:
                async for partition in self._queue.progress():
                    self._wake(partition)
                    backoff.reset()
            except StoreError as exc:
                # Waiters still re-check now and then; notices resume once the backend is back.
                delay = backoff.next()
                await self._log.awarning("progress_unavailable", queue=self._name, retry_in=delay, error=str(exc))
                await asyncio.sleep(delay)
                continue
            await asyncio.sleep(backoff.next())

    async def _consume(self) -> None:
        backoff = Backoff()
        next_reclaim = 0.0
        while True:
            try:
                # Taken-over entries come first and whatever the read-ahead: they are often the
                # predecessors that the entries already here are waiting for.
                if time.monotonic() >= next_reclaim:
                    reclaimed = await self._queue.reclaim(self._read_ahead_limit)
                    for entry in reclaimed:
                        self._spawn(entry)
                    next_reclaim = time.monotonic() + (0 if reclaimed else self._reclaim_every)
                free = self._read_ahead_limit - len(self._tasks)
                if free > 0:
                    # Read only as many as can start now: each is touched from the moment it is read.
                    for entry in await self._queue.read(free):
                        self._spawn(entry)
                else:
                    await self._wait_for_capacity(self._reclaim_every)
                backoff.reset()
            except QueueClosed:
                break
            except StoreError as exc:
                delay = backoff.next()
                await self._log.awarning("queue_unavailable", queue=self._name, retry_in=delay, error=str(exc))
                await asyncio.sleep(delay)
        await self.drain()

    def _spawn(self, entry: QueueEntry) -> None:
        task = asyncio.create_task(self._handle(entry), name=f"{self._name}:{entry.id}")
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._capacity.set()

    async def _wait_for_capacity(self, within: float) -> None:
        self._capacity.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await self._capacity.wait()

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
        self._held[entry.id] = entry
        try:
            finished = await self._in_order(entry, self._handle_or_bury)
            if not finished:
                await self._queue.ack(entry)  # handled before (a redelivery): nothing more to do
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
                attempt=self._held.get(entry.id, entry).attempt,
                error=str(exc),
            )
            with contextlib.suppress(Exception):
                await self._queue.fail(entry, f"{type(exc).__name__}: {exc}")
        finally:
            self._held.pop(entry.id, None)

    async def _handle_or_bury(self, entry: QueueEntry) -> None:
        """Handle the entry, or dead-letter it: past its last attempt, or if it can never be handled
        (while its partition is still held, so the next entry waits for this one to be settled)."""
        if entry.attempt > self._queue.max_attempts:
            await self._dead_letter(entry, f"gave up after {entry.attempt - 1} attempts")
            return
        try:
            await self._handler(entry)
        except PoisonMessage as exc:
            await self._dead_letter(entry, f"unprocessable: {exc}")

    async def _dead_letter(self, entry: QueueEntry, reason: str) -> None:
        await self._queue.dead_letter(entry, reason)
        if self._on_dead_letter is not None:
            self._on_dead_letter()
        await self._log.aerror("entry_dead_lettered", entry_id=entry.id, partition=entry.partition, error=reason)

    async def _keep_visible(self, consumed: asyncio.Event) -> None:
        """Touch every entry in hand once per third of the visibility timeout, so none is taken
        over while it is still being handled (or waits for its turn)."""
        # Stops on `consumed`, not only on cancellation: redis-py can absorb a CancelledError that
        # lands mid-command, and a keeper that kept looping would never let `run` return.
        while not consumed.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(consumed.wait(), self._touch_every)
            for entry in list(self._held.values()):
                if consumed.is_set():
                    return
                if entry.id not in self._held:
                    continue  # finished while an earlier touch was on its way
                try:
                    await self._queue.touch(entry)
                except Exception as exc:
                    await self._log.awarning("touch_failed", entry_id=entry.id, error=str(exc))

    async def _in_order(self, entry: QueueEntry, action: Handler) -> bool:
        """Run `action` on the entry in its turn, holding its partition; True once it is finished
        (done and acknowledged), False if it had been handled before (the caller acknowledges)."""
        deadline = time.monotonic() + self._order_wait
        unavailable = Backoff()
        while True:
            # Listen before looking: a predecessor finishing between the look and the wait still wakes us.
            progress = self._progress.get(entry.partition)
            if progress is None:
                progress = self._progress[entry.partition] = asyncio.Event()
            try:
                start = await self._queue.start(entry, force=time.monotonic() > deadline)
            except StoreError as exc:
                if time.monotonic() > deadline:
                    raise
                # Not claimed, so not an attempt: failing the entry here would leave it for the
                # visibility timeout (30 s by default) after a Redis blip the next try rides out.
                delay = unavailable.next()
                await self._log.awarning("claim_unavailable", entry_id=entry.id, retry_in=delay, error=str(exc))
                await asyncio.sleep(delay)
                continue
            if start.state == "done":
                return False
            if start.state in ("run", "late"):
                # Counted as it was claimed: the handler (and the dead-letter check) see this attempt.
                entry = entry.with_attempt(start.attempt)
                self._held[entry.id] = entry
                break
            # Woken when the partition moves on, here or (by the queue's notices) in another process;
            # the timeout only covers a notice lost while the queue's backend reconnected.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PROGRESS_RECHECK_SECONDS):  # no task of its own, as wait_for makes
                    await progress.wait()
        try:
            async with self._running:
                if start.state == "late":
                    await self._log.awarning("late_entry_handled", entry_id=entry.id, ticket=entry.ticket)
                elif entry.ticket != start.done + 1:
                    await self._log.aerror(
                        "order_gap_skipped", partition=entry.partition, ticket=entry.ticket, done=start.done
                    )
                await action(entry)
        except BaseException:
            # Not done: give the partition back (the entry is retried, dead-lettered or handed over).
            with contextlib.suppress(Exception):
                await self._queue.finish(entry, handled=False)
            self._wake(entry.partition)
            raise
        if not await self._queue.finish(entry, handled=True):
            # We stalled past the claim's TTL and another consumer may have run this same entry. Its
            # effects are idempotent (the outbox takes one reply per message), and nobody can have
            # moved past it, so recording it as done is safe.
            await self._log.awarning("claim_lost_during_entry", entry_id=entry.id, partition=entry.partition)
        self._wake(entry.partition)
        return True

    def _wake(self, partition: str) -> None:
        event = self._progress.pop(partition, None)
        if event is not None:
            event.set()
