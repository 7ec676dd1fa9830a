"""An example relaybot channel from outside relaybot: the whole adapter seam in one small module.

    POST /echo/messages {"user": U, "text": T}  -> 202 {"envelope_id"}: the message is on the bus
    GET  /echo/replies?user=U                   -> {"replies": [...]}: what the bot answered U so far

`relaybot echo hello` (its CLI command) prints a line, to show a channel can add commands too.
"""

from __future__ import annotations

import argparse
import itertools
from typing import Any

from aiohttp import web

from core.channel import Capabilities, ChannelContext, DeliveryResult
from core.envelope import Envelope, Reply
from core.settings import Settings


class EchoChannel:
    channel_names = ("echo",)
    capabilities = Capabilities(max_message_length=10_000, markdown="plain")

    def __init__(self, ctx: ChannelContext) -> None:
        self._ctx = ctx
        self._ids = itertools.count(1)
        self._replies: dict[str, list[str]] = {}

    @staticmethod
    def is_configured(settings: Settings) -> bool:
        return True  # nothing to configure: `relaybot run` starts it

    def register(self, app: web.Application) -> None:
        app.router.add_post("/echo/messages", self._receive)
        app.router.add_get("/echo/replies", self._replies_of)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.json()
        envelope = Envelope.create(
            bot=self._ctx.bots.default,
            channel="echo",
            channel_message_id=str(next(self._ids)),
            conversation_id=body["user"],
            user_id=f"echo:{body['user']}",
            text=body["text"],
        )
        await self._ctx.bus.publish(envelope)
        return web.json_response({"envelope_id": envelope.id}, status=202)

    async def _replies_of(self, request: web.Request) -> web.Response:
        return web.json_response({"replies": self._replies.get(request.query["user"], [])})

    async def deliver(self, reply: Reply) -> DeliveryResult:
        if reply.final:
            self._replies.setdefault(reply.reply_to, []).append(reply.text)
        return DeliveryResult(delivered=True)


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    echo = commands.add_parser("echo", help="the echo channel's command (an example)")
    echo.add_argument("words", nargs="*")
    echo.set_defaults(handler=_echo)


async def _echo(settings: Settings, args: Any) -> int:
    print("echo:", " ".join(args.words))
    return 0
