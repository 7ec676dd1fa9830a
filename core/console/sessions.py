"""Operators' sign-in sessions and the lockout after failed sign-ins: in memory for one process, in
Redis when there is one (so every console process behind a balancer agrees).

A session is a random token in the operator's cookie; the store keeps only its SHA-256, so a copy
of the store (a Redis dump) holds no usable token. Each session has its own CSRF token, which the
page sends back in a header on every state-changing request.

The lockout counts failed sign-ins per account and per client address over a window; at the
limit, that account (or address) is refused for the lockout's length, even with the right password.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as aioredis

from core.redisio import describe, redis_errors

__all__ = [
    "ConsoleSession",
    "ConsoleSessions",
    "LoginLockout",
    "MemoryConsoleSessions",
    "MemoryLoginLockout",
    "RedisConsoleSessions",
    "RedisLoginLockout",
    "new_token",
]


def new_token() -> str:
    return secrets.token_urlsafe(32)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsoleSession:
    email: str
    csrf: str
    #: unix time the session ends
    expires_at: float

    def to_json(self) -> str:
        return json.dumps({"email": self.email, "csrf": self.csrf, "expires_at": self.expires_at})

    @classmethod
    def from_json(cls, raw: str | bytes) -> ConsoleSession:
        data = json.loads(raw)
        return cls(email=data["email"], csrf=data["csrf"], expires_at=float(data["expires_at"]))


class ConsoleSessions(Protocol):
    async def create(self, email: str, ttl_seconds: int) -> tuple[str, ConsoleSession]:
        """A new session for `email`: (the token for the cookie, the session)."""
        ...

    async def get(self, token: str) -> ConsoleSession | None:
        """The live session of a token, or None (unknown, ended or expired)."""
        ...

    async def end(self, token: str) -> None: ...


@dataclass(frozen=True, slots=True)
class LockState:
    locked: bool
    #: seconds until the lockout ends (0 when not locked)
    retry_after: int = 0


class LoginLockout(Protocol):
    async def check(self, keys: list[str]) -> LockState:
        """Whether any of `keys` ("account:EMAIL", "ip:ADDRESS") is locked out now."""
        ...

    async def failed(self, limits: dict[str, int], window_seconds: int) -> LockState:
        """Count a failure against each key (key -> its limit); a key at its limit is locked for
        `window_seconds`. The state after counting."""
        ...

    async def succeeded(self, key: str) -> None:
        """Forget a key's failures (the account signed in)."""
        ...


class MemoryConsoleSessions:
    def __init__(self) -> None:
        self._sessions: dict[str, ConsoleSession] = {}

    async def create(self, email: str, ttl_seconds: int) -> tuple[str, ConsoleSession]:
        now = time.time()
        # Expired sessions go when new ones come: the dict never outgrows the sign-ins of one TTL.
        for digest in [d for d, s in self._sessions.items() if s.expires_at <= now]:
            del self._sessions[digest]
        token = new_token()
        session = ConsoleSession(email=email, csrf=new_token(), expires_at=now + ttl_seconds)
        self._sessions[_digest(token)] = session
        return token, session

    async def get(self, token: str) -> ConsoleSession | None:
        session = self._sessions.get(_digest(token))
        if session is None or session.expires_at <= time.time():
            return None
        return session

    async def end(self, token: str) -> None:
        self._sessions.pop(_digest(token), None)


class RedisConsoleSessions:
    def __init__(self, client: aioredis.Redis, *, prefix: str = "relaybot") -> None:
        self._client = client
        self._prefix = prefix
        self._where = describe(client)

    def _key(self, token: str) -> str:
        return f"{self._prefix}:console:session:{_digest(token)}"

    async def create(self, email: str, ttl_seconds: int) -> tuple[str, ConsoleSession]:
        token = new_token()
        session = ConsoleSession(email=email, csrf=new_token(), expires_at=time.time() + ttl_seconds)
        with redis_errors(self._where, "storing a console session"):
            await self._client.set(self._key(token), session.to_json(), ex=ttl_seconds)
        return token, session

    async def get(self, token: str) -> ConsoleSession | None:
        with redis_errors(self._where, "reading a console session"):
            raw = await self._client.get(self._key(token))
        return None if raw is None else ConsoleSession.from_json(raw)

    async def end(self, token: str) -> None:
        with redis_errors(self._where, "ending a console session"):
            await self._client.delete(self._key(token))


class MemoryLoginLockout:
    def __init__(self) -> None:
        #: key -> (failures, window end)
        self._failures: dict[str, tuple[int, float]] = {}
        #: key -> lockout end
        self._locked: dict[str, float] = {}

    def _prune(self, now: float) -> None:
        for key in [k for k, (_, end) in self._failures.items() if end <= now]:
            del self._failures[key]
        for key in [k for k, end in self._locked.items() if end <= now]:
            del self._locked[key]

    async def check(self, keys: list[str]) -> LockState:
        now = time.time()
        self._prune(now)
        ends = [self._locked[k] for k in keys if k in self._locked]
        return LockState(True, max(1, round(max(ends) - now))) if ends else LockState(False)

    async def failed(self, limits: dict[str, int], window_seconds: int) -> LockState:
        now = time.time()
        self._prune(now)
        for key, limit in limits.items():
            count, end = self._failures.get(key, (0, now + window_seconds))
            count += 1
            self._failures[key] = (count, end)
            if count >= limit:
                self._locked[key] = now + window_seconds
        return await self.check(list(limits))

    async def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)


# One round trip per failed sign-in: count each key in its window, lock the keys at their limit,
# and return the longest lockout left among the keys (0: none).
_FAILED_LUA = """
local window = tonumber(ARGV[1])
local longest = 0
for i = 1, #KEYS / 2 do
  local count_key, lock_key = KEYS[2 * i - 1], KEYS[2 * i]
  local count = redis.call('INCR', count_key)
  if count == 1 then redis.call('EXPIRE', count_key, window) end
  if count >= tonumber(ARGV[i + 1]) then redis.call('SET', lock_key, '1', 'EX', window) end
  local ttl = redis.call('TTL', lock_key)
  if ttl > longest then longest = ttl end
end
return longest
"""


class RedisLoginLockout:
    def __init__(self, client: aioredis.Redis, *, prefix: str = "relaybot") -> None:
        self._client = client
        self._prefix = prefix
        self._where = describe(client)
        self._failed = client.register_script(_FAILED_LUA)

    def _count_key(self, key: str) -> str:
        return f"{self._prefix}:console:failures:{key}"

    def _lock_key(self, key: str) -> str:
        return f"{self._prefix}:console:locked:{key}"

    async def check(self, keys: list[str]) -> LockState:
        with redis_errors(self._where, "checking the console's sign-in lockout"):
            async with self._client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.ttl(self._lock_key(key))
                ttls = await pipe.execute()
        longest = max([int(t) for t in ttls] + [0])
        return LockState(longest > 0, longest)

    async def failed(self, limits: dict[str, int], window_seconds: int) -> LockState:
        keys = [k for key in limits for k in (self._count_key(key), self._lock_key(key))]
        with redis_errors(self._where, "counting a failed console sign-in"):
            longest = int(await self._failed(keys=keys, args=[window_seconds, *limits.values()]))
        return LockState(longest > 0, longest)

    async def succeeded(self, key: str) -> None:
        with redis_errors(self._where, "clearing failed console sign-ins"):
            await self._client.delete(self._count_key(key))
