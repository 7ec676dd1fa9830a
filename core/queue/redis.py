"""The production queue: a Redis Stream with one consumer group.

Keys (P = prefix, N = queue name):

    P:q:N                    STREAM  entries: p (partition), t (ticket), d (payload)
    P:q:N:dead               STREAM  dead letters: p, d, attempts, error, failed_at
    P:q:N:attempts / :errors HASH    times started (counted by `start`) and last error per entry id
    P:q:N:ticket:<partition> STRING  last ticket handed out in the partition
    P:q:N:done:<partition>   STRING  last ticket handled in the partition
    P:q:N:skipped:<partition> SET    tickets jumped over and still owed
    P:q:N:once:<key>         STRING  add-at-most-once claims
    P:q:N:claim:<partition>  STRING  the consumer token holding the partition (the conversation's
                                     lock), with the claim TTL; renewed by `touch`
    P:q:N:progress           PUBSUB  a partition's name each time an entry of it finishes or its
                                     claim is given back

Acknowledged entries are deleted, so the stream's length is the backlog. Entries left pending by
a consumer that died are taken over with XAUTOCLAIM once idle for the visibility timeout; a live
consumer `touch`es its entries to keep them. The partition counters expire after a week idle.
Redis must persist (AOF, `appendonly yes`) for the queue to survive a Redis restart; with
`appendfsync everysec` up to a second of queue operations can be lost in a crash of Redis itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from core.errors import StoreError
from core.queue.base import DeadEntry, QueueClosed, QueueEntry, Start, StartState
from core.redisio import describe, redis_errors, reply, text

PARTITION_TTL_SECONDS = 7 * 24 * 3600
ONCE_TTL_SECONDS = 7 * 24 * 3600
GROUP = "consumers"

# Ticket and entry are written together, so the stream's order within a partition is ticket order.
_ADD_LUA = """
if ARGV[4] ~= '' then
  if not redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[5]) then return 0 end
end
local t = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('XADD', KEYS[1], '*', 'p', ARGV[1], 't', t, 'd', ARGV[2])
return t
"""

# Recording a ticket as done never moves backwards; jumping ahead records the tickets in between
# as skipped (still owed handling). Shared by mark_done and finish.
_MARK_DONE_BODY = """
local function mark_done(done_key, skipped_key, ticket, ttl)
  local done = tonumber(redis.call('GET', done_key) or '0')
  if ticket <= done then return done end
  for i = done + 1, ticket - 1 do redis.call('SADD', skipped_key, i) end
  if ticket - 1 > done then redis.call('EXPIRE', skipped_key, ttl) end
  redis.call('SET', done_key, ticket, 'EX', ttl)
  return ticket
end
"""

_MARK_DONE_LUA = (
    _MARK_DONE_BODY
    + """
local result = mark_done(KEYS[1], KEYS[2], tonumber(ARGV[1]), ARGV[2])
redis.call('PUBLISH', KEYS[3], ARGV[3])
return result
"""
)

# KEYS: done, skipped, claim, attempts. ARGV: ticket, token, claim ttl ms, force, entry id.
# Returns {state, done, attempt}: a claimed entry's attempt is counted here, in the same round trip.
_START_LUA = """
local done = tonumber(redis.call('GET', KEYS[1]) or '0')
local ticket = tonumber(ARGV[1])
if ticket <= done then
  if redis.call('SISMEMBER', KEYS[2], ticket) == 0 then return {'done', done, 0} end
elseif ticket > done + 1 and ARGV[4] ~= '1' then
  return {'wait', done, 0}
end
if not redis.call('SET', KEYS[3], ARGV[2], 'NX', 'PX', ARGV[3]) then
  -- Ours already: the reply to an earlier try of this same start was lost on the way back.
  if redis.call('GET', KEYS[3]) ~= ARGV[2] then return {'busy', done, 0} end
  redis.call('PEXPIRE', KEYS[3], ARGV[3])
end
local attempt = redis.call('HINCRBY', KEYS[4], ARGV[5], 1)
if ticket <= done then
  redis.call('SREM', KEYS[2], ticket)
  return {'late', done, attempt}
end
return {'run', done, attempt}
"""

# KEYS: done, skipped, claim, progress channel, stream, attempts, errors.
# ARGV: ticket, token, partition ttl, partition, entry id, handled, group. Returns 1 if the claim was ours.
_FINISH_LUA = (
    _MARK_DONE_BODY
    + """
if ARGV[6] == '1' then
  mark_done(KEYS[1], KEYS[2], tonumber(ARGV[1]), ARGV[3])
  redis.call('XACK', KEYS[5], ARGV[7], ARGV[5])
  redis.call('XDEL', KEYS[5], ARGV[5])
  redis.call('HDEL', KEYS[6], ARGV[5])
  redis.call('HDEL', KEYS[7], ARGV[5])
end
local ours = 0
if redis.call('GET', KEYS[3]) == ARGV[2] then
  redis.call('DEL', KEYS[3])
  ours = 1
end
redis.call('PUBLISH', KEYS[4], ARGV[4])
return ours
"""
)

# KEYS: claim. ARGV: token, ttl ms. Renews the claim only if it is still ours.
_RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class RedisQueue:
    def __init__(
        self,
        client: aioredis.Redis,
        name: str,
        *,
        prefix: str = "relaybot",
        consumer: str | None = None,
        visibility_timeout: float = 30.0,
        max_attempts: int = 5,
        block_seconds: float = 1.0,
        claim_ttl: float = 30.0,
    ) -> None:
        self._client = client
        self._base = f"{prefix}:q:{name}"
        self._stream = self._base
        self._dead = f"{self._base}:dead"
        self._attempts = f"{self._base}:attempts"
        self._errors = f"{self._base}:errors"
        self._consumer = consumer or consumer_name()
        self._visibility_ms = int(visibility_timeout * 1000)
        self._max_attempts = max_attempts
        self._block_ms = int(block_seconds * 1000)
        self._where = describe(client)
        self._prefix = prefix
        self._add_script = client.register_script(_ADD_LUA)
        self._mark_done_script = client.register_script(_MARK_DONE_LUA)
        self._start_script = client.register_script(_START_LUA)
        self._finish_script = client.register_script(_FINISH_LUA)
        self._renew_script = client.register_script(_RENEW_LUA)
        self._claim_ttl_ms = int(claim_ttl * 1000)
        #: claims held by this consumer: entry id -> token
        self._claims: dict[str, str] = {}
        #: tokens of starts that failed on the way: entry id -> token, sent again by the next try
        self._unanswered: dict[str, str] = {}
        self._closed = asyncio.Event()
        self._group_ready = False
        self._reclaim_from = "0-0"
        self._progress_channel = f"{self._base}:progress"

    @property
    def max_attempts(self) -> int:
        return self._max_attempts

    @property
    def consumer(self) -> str:
        return self._consumer

    def _errors_ctx(self, action: str) -> AbstractContextManager[None]:
        return redis_errors(self._where, action, prefix=self._prefix)

    async def add(self, partition: str, payload: str, *, dedupe_key: str | None = None) -> int | None:
        keys = [self._stream, f"{self._base}:ticket:{partition}", f"{self._base}:once:{dedupe_key or ''}"]
        args: list[str | int] = [
            partition,
            payload,
            PARTITION_TTL_SECONDS,
            dedupe_key or "",
            ONCE_TTL_SECONDS,
        ]
        with self._errors_ctx("adding to the queue"):
            ticket = int(await self._add_script(keys=keys, args=args))
        return ticket or None

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        with self._errors_ctx("creating the consumer group"):
            try:
                await self._client.xgroup_create(self._stream, GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._group_ready = True

    @staticmethod
    def _entries(messages: list[tuple[Any, dict[Any, Any]]]) -> list[QueueEntry]:
        """Queue entries for what XREADGROUP or XAUTOCLAIM handed us (attempts are counted by
        `start`, when an entry is claimed: no round trip here)."""
        entries = []
        for entry_id, fields in messages:
            values = {text(k): text(v) for k, v in fields.items()}
            entries.append(
                QueueEntry(id=text(entry_id), partition=values["p"], ticket=int(values["t"]), payload=values["d"])
            )
        return entries

    def _claim_key(self, partition: str) -> str:
        return f"{self._base}:claim:{partition}"

    async def start(self, entry: QueueEntry, *, force: bool = False) -> Start:
        # A start whose reply was lost (the connection dropped) may have claimed the partition; the
        # next try sends the same token, so the script knows the claim for ours.
        token = self._unanswered.pop(entry.id, None) or uuid.uuid4().hex
        keys = [f"{self._base}:done:{entry.partition}", f"{self._base}:skipped:{entry.partition}"]
        keys += [self._claim_key(entry.partition), self._attempts]
        try:
            with self._errors_ctx("claiming a conversation"):
                state, done, attempt = await self._start_script(
                    keys=keys, args=[entry.ticket, token, self._claim_ttl_ms, "1" if force else "0", entry.id]
                )
        except StoreError:
            self._unanswered[entry.id] = token
            raise
        result = Start(cast(StartState, text(state)), int(done), int(attempt))
        if result.state in ("run", "late"):
            self._claims[entry.id] = token
        return result

    async def finish(self, entry: QueueEntry, *, handled: bool) -> bool:
        token = self._claims.pop(entry.id, "")
        keys = [
            f"{self._base}:done:{entry.partition}",
            f"{self._base}:skipped:{entry.partition}",
            self._claim_key(entry.partition),
            self._progress_channel,
            self._stream,
            self._attempts,
            self._errors,
        ]
        args: list[str | int] = [
            entry.ticket,
            token,
            PARTITION_TTL_SECONDS,
            entry.partition,
            entry.id,
            "1" if handled else "0",
            GROUP,
        ]
        with self._errors_ctx("finishing an entry"):
            return bool(await self._finish_script(keys=keys, args=args))

    async def reclaim(self, count: int) -> list[QueueEntry]:
        if self._closed.is_set():
            raise QueueClosed
        await self._ensure_group()
        with self._errors_ctx("reclaiming idle entries"):
            reclaimed: Any = await self._client.xautoclaim(
                self._stream, GROUP, self._consumer, self._visibility_ms, self._reclaim_from, count=count
            )
        self._reclaim_from = text(reclaimed[0])
        return self._entries([(entry_id, fields) for entry_id, fields in reclaimed[1] if fields])

    async def read(self, count: int) -> list[QueueEntry]:
        if self._closed.is_set():
            raise QueueClosed
        await self._ensure_group()
        with self._errors_ctx("reading the queue"):
            batches: Any = await self._client.xreadgroup(
                GROUP, self._consumer, {self._stream: ">"}, count=count, block=self._block_ms
            )
        return self._entries([message for _stream, messages in batches or () for message in messages])

    async def _forget(self, pipe: Any, entry_id: str) -> None:
        pipe.xack(self._stream, GROUP, entry_id)
        pipe.xdel(self._stream, entry_id)
        pipe.hdel(self._attempts, entry_id)
        pipe.hdel(self._errors, entry_id)

    async def ack(self, entry: QueueEntry) -> None:
        with self._errors_ctx("acknowledging an entry"):
            async with self._client.pipeline(transaction=True) as pipe:
                await self._forget(pipe, entry.id)
                await pipe.execute()

    async def fail(self, entry: QueueEntry, error: str) -> None:
        # Given up on here: a claim an unanswered start may have taken lapses with its TTL.
        self._unanswered.pop(entry.id, None)
        with self._errors_ctx("recording a failure"):
            await reply(self._client.hset(self._errors, entry.id, error[:2000]))

    async def touch(self, entry: QueueEntry) -> None:
        token = self._claims.get(entry.id)
        with self._errors_ctx("extending an entry's visibility"):
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.xclaim(self._stream, GROUP, self._consumer, 0, [entry.id], justid=True)
                if token is not None:
                    await self._renew_script(
                        keys=[self._claim_key(entry.partition)], args=[token, self._claim_ttl_ms], client=pipe
                    )
                await pipe.execute()

    async def release(self, entry: QueueEntry) -> None:
        self._unanswered.pop(entry.id, None)
        # Marked long idle, the next XAUTOCLAIM anywhere takes it; giving back is not an attempt.
        with self._errors_ctx("releasing an entry"):
            await self._client.xclaim(
                self._stream, GROUP, self._consumer, 0, [entry.id], idle=10 * self._visibility_ms, justid=True
            )
            await reply(self._client.hincrby(self._attempts, entry.id, -1))

    async def dead_letter(self, entry: QueueEntry, error: str) -> None:
        with self._errors_ctx("moving an entry to the dead letters"):
            last = await reply(self._client.hget(self._errors, entry.id))
            reason = f"{error}; last error: {text(last)}" if last else error
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.xadd(
                    self._dead,
                    {
                        "p": entry.partition,
                        "d": entry.payload,
                        "attempts": entry.attempt,
                        "error": reason,
                        "failed_at": datetime.now(UTC).isoformat(),
                    },
                )
                await self._forget(pipe, entry.id)
                await pipe.execute()

    async def dead(self, limit: int = 100) -> list[DeadEntry]:
        with self._errors_ctx("reading the dead letters"):
            rows: Any = await self._client.xrange(self._dead, count=limit)
        result = []
        for entry_id, fields in rows:
            values = {text(k): text(v) for k, v in fields.items()}
            result.append(
                DeadEntry(
                    id=text(entry_id),
                    partition=values["p"],
                    payload=values["d"],
                    attempts=int(values["attempts"]),
                    error=values["error"],
                    failed_at=datetime.fromisoformat(values["failed_at"]),
                )
            )
        return result

    async def replay(self, dead_id: str) -> bool:
        with self._errors_ctx("replaying a dead letter"):
            rows: Any = await self._client.xrange(self._dead, dead_id, dead_id)
            if not rows:
                return False
            values = {text(k): text(v) for k, v in rows[0][1].items()}
            await self.add(values["p"], values["d"])
            await self._client.xdel(self._dead, dead_id)
        return True

    async def last_done(self, partition: str) -> int:
        with self._errors_ctx("reading a conversation's progress"):
            value = await self._client.get(f"{self._base}:done:{partition}")
        return int(value) if value is not None else 0

    async def mark_done(self, partition: str, ticket: int) -> None:
        keys = [f"{self._base}:done:{partition}", f"{self._base}:skipped:{partition}", self._progress_channel]
        with self._errors_ctx("recording a conversation's progress"):
            await self._mark_done_script(keys=keys, args=[ticket, PARTITION_TTL_SECONDS, partition])

    async def progress(self) -> AsyncIterator[str]:
        pubsub = self._client.pubsub()
        try:
            with self._errors_ctx("listening for progress"):
                await pubsub.subscribe(self._progress_channel)
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        yield text(message["data"])
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def pending(self) -> int:
        with self._errors_ctx("measuring the backlog"):
            return int(await self._client.xlen(self._stream))

    async def lag(self) -> float:
        # Acknowledged entries are deleted, so the first entry is the oldest waiting one; its id
        # is its Redis-clock time in milliseconds.
        with self._errors_ctx("measuring the lag"):
            first: Any = await self._client.xrange(self._stream, count=1)
            if not first:
                return 0.0
            now_s, now_us = await self._client.time()
        added_ms = int(text(first[0][0]).split("-")[0])
        return max(0.0, (int(now_s) * 1000 + int(now_us) / 1000 - added_ms) / 1000)

    async def close(self) -> None:
        self._closed.set()
