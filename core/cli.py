"""The `relaybot` command."""

from __future__ import annotations

import argparse
import asyncio
import errno
import gc
import json
import signal
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

import structlog
from aiohttp import web

from core import __version__
from core.console.cli import add_operator_command
from core.convtests.cli import add_test_command
from core.doctor import run_checks
from core.errors import ConfigError, PortInUse, RelaybotError
from core.evals.cli import add_eval_command
from core.knowledge.cli import ProgressBar, add_ingest_command, sync_bot_folders
from core.logging import configure_logging
from core.plugins import add_channel_commands, channel_names, load_channel_factory
from core.runtime import Runtime
from core.settings import Settings

#: `relaybot serve console`: the operator console, not a channel
CONSOLE = "console"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relaybot", description="Run one chatbot on many channels.")
    parser.add_argument("--version", action="version", version=f"relaybot {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run every configured channel and a worker in one process")
    _listen_options(run)
    run.add_argument("--bot", help="bot shown on the demo page (default: RELAYBOT_DEFAULT_BOT)")

    serve = commands.add_parser(
        "serve", help="run channel adapters as their own process (RELAYBOT_BUS=redis; workers run apart)"
    )
    serve.add_argument(
        "channels",
        nargs="+",
        metavar="CHANNEL",
        help=f"one or more of: {', '.join(channel_names())}, or console (the operator console)",
    )
    _listen_options(serve)

    worker = commands.add_parser("worker", help="run a core worker: envelopes from the bus become replies")
    worker.add_argument("--concurrency", type=int, help="turns at once (default: RELAYBOT_WORKER_CONCURRENCY)")
    worker.add_argument("--host", help="with --port: address for /healthz, /readyz and /metrics")
    worker.add_argument("--port", type=int, help="serve /healthz, /readyz and /metrics on this port (default: none)")

    chat = commands.add_parser("chat", help="talk to a bot in this terminal")
    chat.add_argument("--bot", help="bot to talk to (default: RELAYBOT_DEFAULT_BOT)")

    commands.add_parser("doctor", help="check configuration and connectivity, and say what to fix")

    dead = commands.add_parser("dead-letters", help="inspect and replay messages that could not be handled")
    dead.add_argument("--queue", default="bus", help="'bus' (inbound messages) or 'outbox:CHANNEL' (replies)")
    dead_commands = dead.add_subparsers(dest="action", required=True, metavar="ACTION")
    dead_commands.add_parser("list", help="print dead letters as JSON lines")
    replay = dead_commands.add_parser("replay", help="put dead letters back on their queue")
    replay.add_argument("ids", nargs="*", metavar="ID", help="dead letter ids (see list)")
    replay.add_argument("--all", action="store_true", help="replay every dead letter")
    add_ingest_command(commands)
    add_test_command(commands)
    add_eval_command(commands)
    add_operator_command(commands)
    # Channels add their own commands (`relaybot slack manifest`, `relaybot telegram set-webhook`).
    add_channel_commands(commands)
    return parser


def _listen_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default 8080)")
    parser.add_argument(
        "--polling",
        action="store_true",
        help="receive by long polling (Telegram) or Socket Mode (Slack) instead of webhooks: no public URL needed",
    )


def _say(line: str) -> None:
    print(line, flush=True)


def _say_on_stderr(line: str) -> None:
    # The chat's own output is the conversation: notices go beside it.
    print(line, file=sys.stderr, flush=True)


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def _listen(runner: web.AppRunner, host: str, port: int) -> None:
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(port) from exc
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; use --host or --port") from exc


#: container objects allocated (net of those freed) before the collector's youngest pass runs
_GC_YOUNG_THRESHOLD = 10_000


def _settle_heap() -> None:
    """Tune the cyclic garbage collector for a long-running server, once everything is loaded.

    Everything loaded so far (modules, SDKs, bots, the model) lives as long as the process: frozen
    out of the collector's sight, so its full collections stop walking it on every pass. And the
    youngest pass runs after 10,000 net allocations instead of Python's 700: at 700 it ran every
    ten messages or so and walked each in-flight turn's objects (then again as their elders), for
    4-5% of the widget's CPU per message; at 10,000 most of a turn's objects are freed before a pass
    sees them. Over 5,000 widget messages (bench/ws_throughput.py) the collector ran 489 youngest
    passes in 0.12-0.14 s before, and 6 in 0.016 s after. Cycles still get collected, a little later.
    """
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(_GC_YOUNG_THRESHOLD, middle, oldest)


async def _serve(settings: Settings, channels: list[str] | None, *, worker: bool, http: bool = True) -> None:
    """Host `channels` (None: every configured one and the console; []: none) and/or a worker until
    SIGTERM/SIGINT; "console" among `channels` is the operator console."""
    console = settings.console.enabled if channels is None else CONSOLE in channels
    if channels is not None:
        channels = [name for name in channels if name != CONSOLE]
    runtime = await Runtime.from_settings(settings)
    log = structlog.get_logger("relaybot")
    runner: web.AppRunner | None = None
    tasks: set[asyncio.Task[object]] = set()
    try:
        hosted = runtime.add_configured_channels(channels) if channels != [] else []
        if console:
            runtime.mount_console()
        if http:
            runner = web.AppRunner(runtime.build_app(), handle_signals=False)
            await runner.setup()
            await _listen(runner, settings.host, settings.port)
        await runtime.start(worker=worker, delivery=True)
        _settle_heap()
        if channels is None and settings.knowledge.ingest_on_start:
            # `relaybot run` only: separate workers would all write the same store at once (production
            # ingests with `relaybot ingest` as a release step). In the background: the server answers
            # (without the new documents) while they are embedded.
            sync = asyncio.create_task(sync_bot_folders(runtime.knowledge, runtime.bots, report=_say))
            tasks.add(sync)
            sync.add_done_callback(tasks.discard)
        url = f"http://{settings.host}:{settings.port}/"
        await log.ainfo("started", url=url if http else None, channels=hosted, bus=settings.bus, worker=worker)
        if console and not hosted:
            print(f"relaybot is serving the operator console on {url}console", flush=True)
        elif not hosted:
            print("relaybot worker is running (Ctrl-C stops it)", flush=True)
        elif worker:
            print(
                f"relaybot is running: open {url} to chat with '{runtime.bots.default}' (Ctrl-C stops it)", flush=True
            )
            if console:
                print(f"operators sign in at {url}console (add one with `relaybot operator add EMAIL`)", flush=True)
        else:
            print(f"relaybot is serving {', '.join(hosted)} on {url}", flush=True)
        await _until_signalled()
        await log.ainfo("shutting_down", grace_seconds=settings.shutdown_grace_seconds)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if runner is not None:
            await runner.cleanup()
        await runtime.close()


async def _chat(settings: Settings, bot: str) -> None:
    runtime = await Runtime.from_settings(settings)
    try:
        bot = runtime.bots.require(bot).name
        terminal = load_channel_factory("cli")(runtime.channel_context())
        runtime.add_channel(terminal)
        await runtime.start()
        if settings.knowledge.ingest_on_start:
            # Before the first question, so its answer can already quote the bot's documents: the
            # first start reads them all (about half a minute for the example bot, with a progress
            # bar on a terminal); later starts skip unchanged files in a moment.
            await sync_bot_folders(
                runtime.knowledge, runtime.bots, only=bot, report=_say_on_stderr, progress=ProgressBar(sys.stderr)
            )
        await terminal.interact(bot=bot, history_file=settings.data_dir / "chat_history")
    finally:
        await runtime.close()


async def _dead_letters(settings: Settings, args: argparse.Namespace) -> int:
    runtime = await Runtime.from_settings(settings)
    try:
        queue = runtime.queue(args.queue)
        if args.action == "list":
            for entry in await queue.dead(limit=1000):
                print(
                    json.dumps(
                        {
                            "id": entry.id,
                            "partition": entry.partition,
                            "attempts": entry.attempts,
                            "error": entry.error,
                            "failed_at": entry.failed_at.isoformat(),
                            "payload": json.loads(entry.payload),
                        }
                    )
                )
            return 0
        ids = [e.id for e in await queue.dead(limit=100_000)] if args.all else args.ids
        if not ids:
            print("relaybot: name dead letter ids to replay, or --all", file=sys.stderr)
            return 2
        missing = [dead_id for dead_id in ids if not await queue.replay(dead_id)]
        print(f"replayed {len(ids) - len(missing)} dead letter(s)")
        for dead_id in missing:
            print(f"relaybot: no dead letter {dead_id!r} in queue {args.queue!r}", file=sys.stderr)
        return 1 if missing else 0
    finally:
        await runtime.close(grace=0)


async def _doctor(settings: Settings) -> int:
    checks = await run_checks(settings)
    for check in checks:
        print(check.render())
    failed = [c for c in checks if c.status == "fail"]
    print(f"\n{len(failed)} problem(s)" if failed else "\nall checks passed")
    return 1 if failed else 0


def _require_distributed(settings: Settings, command: str) -> None:
    if settings.bus != "redis":
        raise ConfigError(
            f"'relaybot {command}' runs apart from the other processes, so they need a shared bus: "
            "set RELAYBOT_BUS=redis and REDIS_URL (or use 'relaybot run' for everything in one process)"
        )


def _run_server(settings: Settings, server: Coroutine[Any, Any, None]) -> None:
    """Run a server process on the configured event loop (RELAYBOT_EVENT_LOOP)."""
    if settings.event_loop == "uvloop":
        try:
            import uvloop
        except ImportError:  # not built for this platform (Windows): the standard loop does the same work
            pass
        else:
            uvloop.run(server)
            return
    asyncio.run(server)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    overrides: dict[str, object] = {}
    for option, setting in (
        ("host", "host"),
        ("port", "port"),
        ("bot", "default_bot"),
        ("concurrency", "worker_concurrency"),
        ("polling", "polling"),
    ):
        if getattr(args, option, None):
            overrides[setting] = getattr(args, option)
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
        # The terminal chat and the admin commands keep stderr quiet, so their output stays readable.
        quiet = args.command in ("chat", "dead-letters", "doctor") or hasattr(args, "handler")
        configure_logging(settings.log_format, "WARNING" if quiet else settings.log_level)
        if hasattr(args, "handler"):
            return int(asyncio.run(args.handler(settings, args)))
        if args.command == "run":
            _run_server(settings, _serve(settings, None, worker=True))
        elif args.command == "serve":
            _require_distributed(settings, "serve")
            _run_server(settings, _serve(settings, args.channels, worker=False))
        elif args.command == "worker":
            _require_distributed(settings, "worker")
            _run_server(settings, _serve(settings, [], worker=True, http=args.port is not None))
        elif args.command == "doctor":
            return asyncio.run(_doctor(settings))
        elif args.command == "dead-letters":
            return asyncio.run(_dead_letters(settings, args))
        else:
            asyncio.run(_chat(settings, args.bot or settings.default_bot))
    except PortInUse as exc:
        print(f"relaybot: {exc}", file=sys.stderr)
        return 2
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
