"""The lifecycle every fake service shares: its aiohttp app on 127.0.0.1 for the length of a test."""

from __future__ import annotations

from typing import Self

from aiohttp import web


class LocalServer:
    """`async with Fake() as fake:` serves `routes` on a free port (or `start(port)`) until the block ends."""

    port: int = 0
    _runner: web.AppRunner | None = None

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def stopping(self) -> None:
        """Let handlers that wait (hangs, long polls, sockets) return, so the runner never waits on them."""

    async def start(self, port: int = 0) -> Self:
        app = web.Application()
        self.routes(app)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        await self.stopping()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
