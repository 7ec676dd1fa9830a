"""A customer's endpoint for the API channel's callbacks, on 127.0.0.1.

It checks each callback's signature the way a customer would, records what arrived, and can be
told to answer the next requests with errors (429 with Retry-After, 500) or to be slow.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Scripted:
    status: int
    retry_after: str | None = None
    delay: float = 0.0
    location: str | None = None  # a redirect's target


@dataclass
class CallbackServer:
    secret: bytes
    replies: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0
    bad_signatures: int = 0
    redelivered: int = 0
    _seen_keys: set[str] = field(default_factory=set)
    idempotency_keys: list[str] = field(default_factory=list)
    script: list[Scripted] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)
    url: str = ""

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/hook"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _hook(self, request: web.Request) -> web.Response:
        self.requests += 1
        body = await request.read()
        timestamp = request.headers.get("X-Relaybot-Timestamp", "")
        expected = "sha256=" + hmac.new(self.secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, request.headers.get("X-Relaybot-Signature", "")):
            self.bad_signatures += 1
            return web.Response(status=401)
        if self.script:
            step = self.script.pop(0)
            if step.delay:
                await asyncio.sleep(step.delay)
            if step.status >= 300:
                headers = {"Retry-After": step.retry_after} if step.retry_after else {}
                if step.location:
                    headers["Location"] = step.location
                return web.Response(status=step.status, headers=headers)
        key = request.headers.get("Idempotency-Key", "")
        if key in self._seen_keys:
            # A receiver that follows the documented contract: a resend (after a timeout on the
            # sender's side) carries the same key and is acknowledged without acting twice.
            self.redelivered += 1
            return web.Response(status=200)
        self._seen_keys.add(key)
        async with self._arrived:
            self.replies.append(json.loads(body))
            self.idempotency_keys.append(key)
            self._arrived.notify_all()
        return web.Response(status=200)

    async def wait_for(self, count: int, within: float = 30.0) -> list[dict[str, Any]]:
        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(lambda: len(self.replies) >= count), within)
        return list(self.replies)
