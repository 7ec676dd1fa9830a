"""`relaybot ingest`, and the knowledge sync `relaybot run` does when it starts."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import structlog

from core.bots import BotConfig, BotRegistry
from core.knowledge.errors import KnowledgeError
from core.knowledge.ingest import IngestSummary, Progress
from core.knowledge.service import KnowledgeService
from core.knowledge.store import PUBLIC
from core.settings import Settings


def add_ingest_command(commands: Any) -> None:
    """Register `relaybot ingest` on the CLI's subcommands (an argparse `_SubParsersAction`)."""
    ingest = commands.add_parser(
        "ingest", help="add Markdown, text, HTML and PDF files (or folders) to a bot's knowledge"
    )
    ingest.add_argument(
        "paths", nargs="*", type=Path, metavar="PATH", help="files or folders (default: the bot's knowledge/)"
    )
    ingest.add_argument("--bot", help="the bot whose knowledge this is (default: RELAYBOT_DEFAULT_BOT)")
    ingest.add_argument("--set", dest="knowledge_set", help="the knowledge set (default: the bot's default set)")
    ingest.add_argument("--prune", action="store_true", help="remove stored documents whose files are gone")
    ingest.add_argument(
        "--audience",
        default=PUBLIC,
        help="who may see these documents: '*' (everyone, default) or one user id such as 'slack:U123'",
    )
    ingest.set_defaults(handler=_ingest)


async def _ingest(settings: Settings, args: argparse.Namespace) -> int:
    bots = BotRegistry.from_dir(settings.bots_dir, default=settings.default_bot)
    bot = bots.require(args.bot or bots.default)
    paths: list[Path] = list(args.paths) or [knowledge_folder(bot)]
    knowledge = KnowledgeService.from_settings(settings)
    bar = ProgressBar(sys.stderr)
    started = time.monotonic()
    try:
        summary = await knowledge.ingest(
            bot.name,
            paths,
            knowledge_set=args.knowledge_set or bot.knowledge.default_set,
            prune=args.prune,
            audience=args.audience,
            progress=bar,
        )
    finally:
        bar.done()
        await knowledge.close()
    print(f"{bot.name}: {summary.describe()} in {time.monotonic() - started:.1f} s")
    return 0


def knowledge_folder(bot: BotConfig) -> Path:
    return (bot.path or Path("bots") / bot.name) / bot.knowledge.folder


async def sync_bot_folders(
    knowledge: KnowledgeService,
    bots: BotRegistry,
    *,
    report: Callable[[str], None] | None = None,
    logger: structlog.typing.FilteringBoundLogger | None = None,
    only: str | None = None,
    progress: Progress | None = None,
) -> dict[str, IngestSummary]:
    """Ingest each bot's knowledge/ folder (what `relaybot run` does at start), or only the bot
    named `only` (`relaybot chat`): new and changed files only."""
    log = logger or structlog.get_logger("relaybot.knowledge")
    results: dict[str, IngestSummary] = {}
    for bot in bots:
        folder = knowledge_folder(bot)
        if not bot.knowledge.enabled or not folder.is_dir() or (only is not None and bot.name != only):
            continue
        try:
            summary = await knowledge.ingest(
                bot.name, [folder], knowledge_set=bot.knowledge.default_set, progress=progress
            )
        except KnowledgeError as exc:
            # The bot still answers (without its documents); the operator sees why and how to fix it.
            await log.aerror("knowledge_sync_failed", bot=bot.name, error=str(exc))
            if report is not None:
                report(f"knowledge of '{bot.name}' not loaded: {exc}")
            continue
        results[bot.name] = summary
        if summary.skipped:
            await log.awarning("knowledge_files_skipped", bot=bot.name, skipped=dict(summary.skipped))
        if report is not None and summary.changed:
            report(f"knowledge of '{bot.name}': {summary.describe()}")
    return results


class ProgressBar:
    """A one-line progress bar on a terminal; on a pipe or file, nothing (the summary says it all)."""

    def __init__(self, stream: IO[str], *, width: int = 30) -> None:
        self._stream = stream
        self._width = width
        self._shown = False
        self._tty = stream.isatty()

    def __call__(self, done: int, total: int, source: str) -> None:
        if not self._tty or total < 2:
            return
        filled = self._width * done // total
        name = source if len(source) <= 40 else "…" + source[-39:]
        self._stream.write(f"\r[{'#' * filled}{'.' * (self._width - filled)}] {done}/{total} {name:<40}")
        self._stream.flush()
        self._shown = True

    def done(self) -> None:
        if self._shown:
            self._stream.write("\n")
            self._stream.flush()
