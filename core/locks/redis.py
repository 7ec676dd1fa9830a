"""Per-conversation locks on Redis, shared by every worker process.

A lock is `SET key token NX PX ttl`, renewed by its holder every third of the TTL while the
block runs, and released only by its holder (compare-and-delete). If the holder dies, the lock
expires after the TTL and another worker takes over. Each acquisition gets a fencing token
(INCR, in the same script as the SET), so a stalled former holder can tell (`still_held`) that
it must not commit. A worker that finds the lock taken waits for the release notice
(`<key>:released`, published by the release script), re-trying once a second in case the holder
died and its lock expired instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
import structlog

from core.redisio import describe, redis_errors

_RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', KEYS[2], '1')
  return 1
end
return 0
"""
_ACQUIRE_LUA = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return redis.call('INCR', KEYS[2]) end
return 0
"""
#: how long a waiter trusts the release notice before trying again (a dead holder publishes nothing)
RECHECK_SECONDS = 1.0


class RedisLease:
    def __init__(self, client: aioredis.Redis, key: str, token: str, fencing_token: int) -> None:
        self._client = client
        self._key = key
        self._token = token
        self.fencing_token = fencing_token
        self.lost = False

    async def still_held(self) -> bool:
        if self.lost:
            return False
        value = await self._client.get(self._key)
        held = value is not None and (value.decode() if isinstance(value, bytes) else value) == self._token
        self.lost = not held
        return held


class RedisConversationLocks:
    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "relaybot",
        ttl_seconds: float = 30.0,
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._ttl_ms = int(ttl_seconds * 1000)
        self._where = describe(client)
        self._renew = client.register_script(_RENEW_LUA)
        self._release = client.register_script(_RELEASE_LUA)
        self._acquire_script = client.register_script(_ACQUIRE_LUA)
        self._log = logger or structlog.get_logger("relaybot.locks")

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[RedisLease]:
        lock_key = f"{self._prefix}:lock:{key}"
        token = uuid.uuid4().hex
        with redis_errors(self._where, "taking a conversation lock", prefix=self._prefix):
            fencing = await self._acquire(lock_key, token)
        lease = RedisLease(self._client, lock_key, token, fencing)
        released = asyncio.Event()
        renewer = asyncio.create_task(self._keep(lease, lock_key, token, released))
        try:
            yield lease
        finally:
            released.set()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            with redis_errors(self._where, "releasing a conversation lock", prefix=self._prefix):
                released_ours = await self._release(keys=[lock_key, f"{lock_key}:released"], args=[token])
            if not released_ours and not lease.lost:
                # Held past its TTL (a stall): someone else may have run this conversation meanwhile.
                lease.lost = True
                await self._log.awarning("lock_lost_during_hold", key=lock_key, fencing_token=lease.fencing_token)

    async def _try(self, lock_key: str, token: str) -> int:
        return int(await self._acquire_script(keys=[lock_key, f"{lock_key}:fence"], args=[token, self._ttl_ms]))

    async def _acquire(self, lock_key: str, token: str) -> int:
        """The fencing token once the lock is ours: at once if it is free, else on its release."""
        if fencing := await self._try(lock_key, token):
            return fencing
        # Taken (rare: the queue already keeps a conversation's turns apart). Subscribe, then try
        # again, so a release between the first try and the subscription is not missed.
        pubsub = self._client.pubsub()
        try:
            await pubsub.subscribe(f"{lock_key}:released")
            while not (fencing := await self._try(lock_key, token)):
                await pubsub.get_message(ignore_subscribe_messages=True, timeout=RECHECK_SECONDS)
            return fencing
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _keep(self, lease: RedisLease, lock_key: str, token: str, released: asyncio.Event) -> None:
        # Stops on `released` rather than by cancellation: redis-py can absorb a CancelledError
        # that lands mid-command, which would leave a renewer keeping a released lock alive.
        while not released.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(released.wait(), self._ttl_ms / 3000)
            if released.is_set():
                return
            try:
                renewed = await self._renew(keys=[lock_key], args=[token, self._ttl_ms])
            except Exception as exc:  # keep trying: Redis may come back before the TTL runs out
                await self._log.awarning("lock_renew_failed", key=lock_key, error=str(exc))
                continue
            if not renewed:
                lease.lost = True
                await self._log.aerror("lock_lost", key=lock_key, fencing_token=lease.fencing_token)
                return
