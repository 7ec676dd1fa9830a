"""A ticketing webhook (a helpdesk's "create ticket" endpoint) on 127.0.0.1, for `create_ticket`.

`POST /tickets` with a JSON ticket answers 201 `{"id": "T-1001", ...}`. A resend with an
`Idempotency-Key` already seen gets the same ticket back and opens no second one, as a helpdesk
that follows the usual contract does. It can be told to fail the next requests (`fail(503, 500)`)
or to be slow (`delay`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.local_server import LocalServer


@dataclass
class FakeTicketing(LocalServer):
    tickets: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0
    keys: list[str] = field(default_factory=list)
    delay: float = 0.0
    _failures: list[int] = field(default_factory=list)
    _by_key: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/tickets"

    def fail(self, *statuses: int) -> None:
        """Answer the next requests with these HTTP statuses, in order."""
        self._failures.extend(statuses)

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/tickets", self._create)

    async def _create(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self._failures:
            return web.json_response({"error": "scripted failure"}, status=self._failures.pop(0))
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "body must be JSON"}, status=400)
        if not isinstance(body, dict) or not body.get("subject"):
            return web.json_response({"error": "subject is required"}, status=422)
        key = request.headers.get("Idempotency-Key", "")
        self.keys.append(key)
        if key and key in self._by_key:
            return web.json_response(self._by_key[key], status=200)
        ticket = {"id": f"T-{1001 + len(self.tickets)}", **body}
        self.tickets.append(ticket)
        if key:
            self._by_key[key] = ticket
        return web.json_response(ticket, status=201)
