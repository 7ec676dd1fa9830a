"""The `relaybot` command."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

import structlog
from aiohttp import web

from core import __version__
from core.errors import ConfigError, RelaybotError
from core.logging import configure_logging
from core.plugins import load_channel_factory
from core.runtime import Runtime
from core.settings import Settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relaybot", description="Run one chatbot on many channels.")
    parser.add_argument("--version", action="version", version=f"relaybot {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run every configured channel and a worker in one process")
    run.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    run.add_argument("--port", type=int, help="port to listen on (default 8080)")
    run.add_argument("--bot", help="bot shown on the demo page (default: RELAYBOT_DEFAULT_BOT)")

    chat = commands.add_parser("chat", help="talk to a bot in this terminal")
    chat.add_argument("--bot", help="bot to talk to (default: RELAYBOT_DEFAULT_BOT)")
    return parser


async def _serve(settings: Settings) -> None:
    runtime = await Runtime.from_settings(settings)
    log = structlog.get_logger("relaybot")
    runner: web.AppRunner | None = None
    try:
        channels = runtime.add_configured_channels()
        runner = web.AppRunner(runtime.build_app(), handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, settings.host, settings.port).start()
        await runtime.start()
        url = f"http://{settings.host}:{settings.port}/"
        await log.ainfo("listening", url=url, channels=channels, bot=runtime.bots.default)
        print(
            f"relaybot is running: open {url} to chat with '{runtime.bots.default}' (Ctrl-C stops it)",
            flush=True,
        )
        await _until_signalled()
        await log.ainfo("shutting_down")
    finally:
        if runner is not None:
            await runner.cleanup()
        await runtime.close()


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def _chat(settings: Settings, bot: str) -> None:
    runtime = await Runtime.from_settings(settings)
    try:
        bot = runtime.bots.require(bot).name
        terminal = runtime.add_channel(load_channel_factory("cli")(runtime.channel_context()))
        await runtime.start()
        await terminal.interact(bot=bot, history_file=settings.data_dir / "chat_history")  # type: ignore[attr-defined]
    finally:
        await runtime.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    overrides: dict[str, object] = {}
    if getattr(args, "host", None):
        overrides["host"] = args.host
    if getattr(args, "port", None):
        overrides["port"] = args.port
    if args.bot:
        overrides["default_bot"] = args.bot
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
        # The terminal chat keeps stderr quiet unless asked, so the conversation stays readable.
        level = settings.log_level if args.command == "run" else "WARNING"
        configure_logging(settings.log_format, level)
        if args.command == "run":
            asyncio.run(_serve(settings))
        else:
            asyncio.run(_chat(settings, args.bot or settings.default_bot))
    except ConfigError as exc:
        print(f"relaybot: configuration error: {exc}", file=sys.stderr)
        return 2
    except RelaybotError as exc:
        print(f"relaybot: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
