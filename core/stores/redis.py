"""Active sessions in Redis, shared by every worker process.

Layout, per session (`P` = prefix):

    P:session:<id>            HASH  bot, channel, conversation_id, user_id, created_at, f:<field>...
    P:session:<id>:messages   LIST  one JSON `StoredMessage.to_dict()` per item, oldest first

`RedisReadCache` (cached reads of the durable history, see `core.stores.cached`):

    P:cache:<key>             STRING  the cached value, with the cache's TTL
    P:cachegen:<key>          STRING  the key's generation (INCR on every invalidation), twice the TTL

Custom fields live under `f:` so a flow can use any name (even `bot`) without clobbering the
identity fields. Both keys share one TTL that every access renews in the same round trip, so a
session never half-expires. Appends are RPUSH and reads are LRANGE from the tail: a turn costs the
same on the first message and the thousandth.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis
from redis.typing import EncodableT, FieldT

from core.errors import StoreError
from core.redisio import RedisBatch, client_from_url, describe, redis_errors, reply, text
from core.stores.base import Session, StoredMessage, SwapOutcome

__all__ = ["RedisReadCache", "RedisSessionStore"]

_IDENTITY = ("bot", "channel", "conversation_id", "user_id", "created_at")
_FIELD = "f:"
#: window entries a store keeps decoded (a few per active conversation)
_DECODED_KEPT = 10_000

# Append and set_fields must not resurrect a session that expired (or was deleted) between the
# caller's load and its write: a bare RPUSH/HSET would leave a headless list or a hash without
# identity. A script checks and writes atomically in one round trip.
_APPEND_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if #ARGV > 2 then redis.call('RPUSH', KEYS[2], unpack(ARGV, 3)) end
if tonumber(ARGV[2]) > 0 then redis.call('LTRIM', KEYS[2], -tonumber(ARGV[2]), -1) end
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[1])
return 1
"""

_SET_FIELDS_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if #ARGV > 1 then redis.call('HSET', KEYS[1], unpack(ARGV, 2)) end
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[1])
return 1
"""

# Compare and set: ARGV[2] is a JSON object {field: [allowed values]} ("" matches an unset field).
_SWAP_FIELDS_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local expect = cjson.decode(ARGV[2])
for name, allowed in pairs(expect) do
  local current = redis.call('HGET', KEYS[1], name) or ''
  local ok = false
  for _, value in ipairs(allowed) do
    if value == current then ok = true end
  end
  if not ok then return 2 end
end
if #ARGV > 2 then redis.call('HSET', KEYS[1], unpack(ARGV, 3)) end
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[1])
return 1
"""


class RedisSessionStore:
    """`SessionStore` on Redis. Takes an existing client (its owner closes it, since other
    components share it); `from_url` builds one that the store owns and closes."""

    def __init__(
        self, client: aioredis.Redis, *, ttl_seconds: int = 3600, prefix: str = "relaybot", owns_client: bool = False
    ) -> None:
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be a positive number of seconds")
        self._client = client
        self._owns_client = owns_client
        self._ttl = int(ttl_seconds)
        self._prefix = prefix
        self._where = describe(client)
        self._append_script = client.register_script(_APPEND_LUA)
        self._set_fields_script = client.register_script(_SET_FIELDS_LUA)
        self._swap_fields_script = client.register_script(_SWAP_FIELDS_LUA)
        self._decoded: OrderedDict[bytes | str, StoredMessage] = OrderedDict()

    @classmethod
    def from_url(
        cls, url: str, *, ttl_seconds: int = 3600, prefix: str = "relaybot", **client_kwargs: Any
    ) -> RedisSessionStore:
        """Build the client from a URL (REDIS_URL); extra keyword arguments go to the client."""
        client = client_from_url(url, **client_kwargs)
        return cls(client, ttl_seconds=ttl_seconds, prefix=prefix, owns_client=True)

    def _keys(self, session_id: str) -> tuple[str, str]:
        base = f"{self._prefix}:session:{session_id}"
        return base, f"{base}:messages"

    def _errors(self, action: str) -> AbstractContextManager[None]:
        return redis_errors(self._where, action, prefix=self._prefix)

    def _malformed(self, session_id: str, key: str, exc: Exception) -> StoreError:
        return StoreError(
            f"session {session_id!r} has malformed data in Redis at {self._where} (key {key!r}: {exc!r}); "
            f"delete that key to start the conversation afresh"
        )

    async def load(self, session_id: str) -> Session | None:
        session, _ = await self.load_with_recent(session_id, 0)
        return session

    @property
    def redis(self) -> aioredis.Redis:
        return self._client

    async def load_with_recent(self, session_id: str, limit: int) -> tuple[Session | None, list[StoredMessage]]:
        hkey, lkey = self._keys(session_id)
        with self._errors("loading a session"):
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hgetall(hkey)
                if limit > 0:
                    pipe.lrange(lkey, -limit, -1)
                pipe.expire(hkey, self._ttl)
                pipe.expire(lkey, self._ttl)
                results = await pipe.execute()
        return self._loaded(session_id, results[0], results[1] if limit > 0 else None)

    def queue_load_with_recent(
        self, batch: RedisBatch, session_id: str, limit: int
    ) -> Callable[[], tuple[Session | None, list[StoredMessage]]]:
        """`load_with_recent` as part of `batch` (not in a transaction of its own: the caller holds
        the conversation's lock, so nothing writes the session between the reads)."""
        hkey, lkey = self._keys(session_id)
        fields = batch.command("HGETALL", hkey)
        window = batch.command("LRANGE", lkey, -limit, -1) if limit > 0 else None
        batch.command("EXPIRE", hkey, self._ttl)
        batch.command("EXPIRE", lkey, self._ttl)
        return lambda: self._loaded(
            session_id, batch.result(fields), batch.result(window) if window is not None else None
        )

    def _loaded(
        self, session_id: str, raw: Mapping[Any, Any], window: list[Any] | None
    ) -> tuple[Session | None, list[StoredMessage]]:
        if not raw:
            return None, []
        session = self._session(session_id, self._keys(session_id)[0], raw)
        if window is None:
            return session, []
        try:
            return session, [self._message(item) for item in window]
        except (KeyError, ValueError, TypeError) as exc:
            raise self._malformed(session_id, self._keys(session_id)[1], exc) from exc

    def _message(self, raw: bytes | str) -> StoredMessage:
        """A window entry, decoded once: each turn reads the window again, and all but the two
        newest entries are the ones the previous turn decoded (StoredMessage is frozen)."""
        found = self._decoded.get(raw)
        if found is not None:
            self._decoded.move_to_end(raw)
            return found
        message = self._decoded[raw] = StoredMessage.from_dict(json.loads(raw))
        if len(self._decoded) > _DECODED_KEPT:
            self._decoded.popitem(last=False)
        return message

    def _session(self, session_id: str, hkey: str, raw: Mapping[Any, Any]) -> Session:
        data = {text(k): text(v) for k, v in raw.items()}
        try:
            return Session(
                session_id=session_id,
                bot=data["bot"],
                channel=data["channel"],
                conversation_id=data["conversation_id"],
                user_id=data["user_id"],
                created_at=datetime.fromisoformat(data["created_at"]),
                fields={k.removeprefix(_FIELD): v for k, v in data.items() if k.startswith(_FIELD)},
            )
        except (KeyError, ValueError) as exc:
            raise self._malformed(session_id, hkey, exc) from exc

    async def create(self, session: Session) -> None:
        hkey, lkey = self._keys(session.session_id)
        mapping: dict[FieldT, EncodableT] = {
            "bot": session.bot,
            "channel": session.channel,
            "conversation_id": session.conversation_id,
            "user_id": session.user_id,
            "created_at": session.created_at.isoformat(),
        }
        mapping.update({_FIELD + k: v for k, v in session.fields.items()})
        with self._errors("creating a session"):
            async with self._client.pipeline(transaction=True) as pipe:
                # DEL first: an earlier conversation under this id may have left messages behind.
                pipe.delete(hkey, lkey)
                pipe.hset(hkey, mapping=mapping)
                pipe.expire(hkey, self._ttl)
                await pipe.execute()

    async def append(self, session_id: str, messages: Sequence[StoredMessage], *, keep: int | None = None) -> None:
        keys, args = self._append_call(session_id, messages, keep)
        with self._errors("appending messages"):
            found = await self._append_script(keys=keys, args=args)
        self._appended(session_id, found)

    def queue_append(
        self, batch: RedisBatch, session_id: str, messages: Sequence[StoredMessage], *, keep: int | None = None
    ) -> Callable[[], None]:
        """`append` as part of `batch`: the check that the session existed, once the batch has run."""
        index = batch.script(self._append_script, *self._append_call(session_id, messages, keep))
        return lambda: self._appended(session_id, batch.result(index))

    def _append_call(
        self, session_id: str, messages: Sequence[StoredMessage], keep: int | None
    ) -> tuple[list[str], list[Any]]:
        items = [json.dumps(m.to_dict(), ensure_ascii=False) for m in messages]
        return list(self._keys(session_id)), [self._ttl, keep or 0, *items]

    @staticmethod
    def _appended(session_id: str, found: Any) -> None:
        if not found:
            raise StoreError(f"session {session_id!r} does not exist or has expired; create it first")

    async def recent(self, session_id: str, limit: int) -> list[StoredMessage]:
        if limit <= 0:
            return []
        hkey, lkey = self._keys(session_id)
        with self._errors("reading recent messages"):
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.lrange(lkey, -limit, -1)
                pipe.expire(hkey, self._ttl)
                pipe.expire(lkey, self._ttl)
                raw, _, _ = await pipe.execute()
        try:
            return [StoredMessage.from_dict(json.loads(item)) for item in raw]
        except (KeyError, ValueError, TypeError) as exc:
            raise self._malformed(session_id, lkey, exc) from exc

    async def set_fields(self, session_id: str, fields: Mapping[str, str]) -> None:
        hkey, lkey = self._keys(session_id)
        pairs = [part for k, v in fields.items() for part in (_FIELD + k, v)]
        with self._errors("setting session fields"):
            found = await self._set_fields_script(keys=[hkey, lkey], args=[self._ttl, *pairs])
        if not found:
            raise StoreError(f"session {session_id!r} does not exist or has expired; create it first")

    async def swap_fields(
        self, session_id: str, expect: Mapping[str, Collection[str]], fields: Mapping[str, str]
    ) -> SwapOutcome:
        hkey, lkey = self._keys(session_id)
        expected = json.dumps({_FIELD + name: list(allowed) for name, allowed in expect.items()})
        pairs = [part for k, v in fields.items() for part in (_FIELD + k, v)]
        with self._errors("swapping session fields"):
            outcome = await self._swap_fields_script(keys=[hkey, lkey], args=[self._ttl, expected, *pairs])
        if int(outcome) == 0:
            return "missing"
        return "swapped" if int(outcome) == 1 else "mismatch"

    async def delete(self, session_id: str) -> None:
        with self._errors("deleting a session"):
            await self._client.delete(*self._keys(session_id))

    async def ping(self) -> None:
        with self._errors("checking the connection"):
            await reply(self._client.ping())

    async def close(self) -> None:
        if not self._owns_client:
            return
        with self._errors("closing the connection"):
            await self._client.aclose()


# Store the value only if no invalidation happened since the reader saw the generation.
_CACHE_SET_LUA = """
local generation = redis.call('GET', KEYS[2]) or ''
if generation ~= ARGV[2] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
return 1
"""


class RedisReadCache:
    """`ReadCache` shared by every process on one Redis: a GET per hit, a script per fill."""

    def __init__(self, client: aioredis.Redis, *, prefix: str = "relaybot") -> None:
        self._client = client
        self._prefix = prefix
        self._where = describe(client)
        self._set_script = client.register_script(_CACHE_SET_LUA)

    def _keys(self, key: str) -> tuple[str, str]:
        return f"{self._prefix}:cache:{key}", f"{self._prefix}:cachegen:{key}"

    async def get(self, key: str) -> tuple[str | None, str]:
        [found] = await self.get_many([key])
        return found

    @property
    def redis(self) -> aioredis.Redis:
        return self._client

    async def get_many(self, keys: Sequence[str]) -> list[tuple[str | None, str]]:
        names = [name for key in keys for name in self._keys(key)]
        with redis_errors(self._where, "reading the cache", prefix=self._prefix):
            values = await self._client.mget(names)
        return self._found(values)

    def queue_get_many(self, batch: RedisBatch, keys: Sequence[str]) -> Callable[[], list[tuple[str | None, str]]]:
        """`get_many` as part of `batch`."""
        index = batch.command("MGET", *(name for key in keys for name in self._keys(key)))
        return lambda: self._found(batch.result(index))

    @staticmethod
    def _found(values: list[Any]) -> list[tuple[str | None, str]]:
        return [
            (text(value) if value is not None else None, text(generation) if generation is not None else "")
            for value, generation in zip(values[::2], values[1::2], strict=True)
        ]

    async def set(self, key: str, value: str, generation: str, ttl_seconds: int) -> None:
        with redis_errors(self._where, "filling the cache", prefix=self._prefix):
            await self._set_script(keys=self._keys(key), args=[value, generation, int(ttl_seconds)])

    async def invalidate(self, key: str) -> None:
        value_key, generation_key = self._keys(key)
        with redis_errors(self._where, "invalidating the cache", prefix=self._prefix):
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.incr(generation_key)
                # Outlives any value filled under the old generation (those expire after the cache TTL).
                pipe.expire(generation_key, 7 * 24 * 3600)
                pipe.delete(value_key)
                await pipe.execute()

    async def replace(self, key: str, value: str, ttl_seconds: int) -> None:
        value_key, generation_key = self._keys(key)
        with redis_errors(self._where, "writing the cache", prefix=self._prefix):
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.incr(generation_key)
                pipe.expire(generation_key, 7 * 24 * 3600)
                pipe.set(value_key, value, ex=int(ttl_seconds))
                await pipe.execute()
