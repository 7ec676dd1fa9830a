"""`relaybot test`: runs conversation tests and reports them (exit 0 all passed, 1 a test failed, 2 a bad file)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.bots import BotRegistry
from core.convtests.loader import Conversation, TestFileError, load_file, load_paths
from core.convtests.record import MAX_MESSAGES, default_path, recorded_test, render
from core.convtests.report import describe_failure, result_line, summary_line, write_junit
from core.convtests.runner import ConversationResult, ConversationRunner
from core.errors import ConfigError
from core.logging import configure_logging
from core.settings import Settings
from core.stores.sql import SqlHistoryStore

__all__ = ["add_test_command", "select"]

#: where a bot keeps its conversation tests, inside its folder
TESTS_FOLDER = "tests"


def add_test_command(commands: Any) -> None:
    """Register `relaybot test` on the CLI's subcommands (an argparse `_SubParsersAction`)."""
    test = commands.add_parser(
        "test", help="run conversation tests (bots/<name>/tests/*.yaml) through the real pipeline, offline"
    )
    test.add_argument(
        "paths", nargs="*", type=Path, metavar="PATH", help="test files or folders (default: each bot's tests/)"
    )
    test.add_argument("--bot", help="the bot under test (default: the bot whose folder holds the file)")
    test.add_argument("-k", dest="pattern", help="only conversations whose 'file::name' contains this text")
    test.add_argument("--junit", type=Path, metavar="FILE", help="also write the results as JUnit XML (for CI)")
    # `relaybot test record --session ID`: "record" arrives as the first PATH (argparse cannot give
    # a command both positional paths and a subcommand).
    test.add_argument("--session", metavar="ID", help="with 'record': the session to turn into a test file")
    test.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help="with 'record': where to write it ('-': print; default: the bot's tests/)",
    )
    test.set_defaults(handler=_test_command)


def select(conversations: Sequence[Conversation], pattern: str | None) -> list[Conversation]:
    """The conversations `-k PATTERN` keeps: a case-insensitive substring of "file.yaml::name"."""
    if not pattern:
        return list(conversations)
    needle = pattern.casefold()
    return [c for c in conversations if needle in c.id.casefold()]


async def _test_command(settings: Settings, args: argparse.Namespace) -> int:
    if args.paths and args.paths[0] == Path("record"):
        if not args.session or len(args.paths) > 1:
            raise ConfigError("usage: relaybot test record --session ID [--out FILE]")
        return await _record(settings, args.session, args.out)
    if args.session or args.out:
        raise ConfigError("--session and --out go with 'relaybot test record'")
    return await _run_tests(settings, args)


async def _record(settings: Settings, session_id: str, out: Path | None) -> int:
    history = SqlHistoryStore.from_url(settings.effective_database_url)
    try:
        messages = await history.recent(session_id, MAX_MESSAGES)
    finally:
        await history.close()
    if not messages:
        raise ConfigError(f"no messages of session {session_id!r} in the history ({settings.effective_database_url})")
    test = recorded_test(session_id, messages)
    text = render(test, session_id=session_id)
    if out == Path("-"):
        print(text, end="")
        return 0
    path = out or default_path(settings.bots_dir, session_id)
    if path.exists():
        raise ConfigError(f"{path} exists; choose another file with --out")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    load_file(path)  # what was written must be a valid test file
    _say(f"wrote {path}: {len(test['turns'])} turn(s); edit the reply_contains anchors, then run relaybot test")
    return 0


async def _run_tests(settings: Settings, args: argparse.Namespace) -> int:
    # The report says what each turn did, its errors included; the log lines a test provokes on purpose
    # (a failing tool or model) would only bury it.
    configure_logging(settings.log_format, "CRITICAL")
    bots = BotRegistry.from_dir(settings.bots_dir, default=settings.default_bot)
    try:
        by_bot = _collect(settings, bots, args)
    except TestFileError as exc:
        print(f"relaybot: bad test file: {exc}", file=sys.stderr)
        return 2
    total = sum(len(c) for c in by_bot.values())
    if total == 0:
        where = ", ".join(str(p) for p in args.paths) or f"any bot's {TESTS_FOLDER}/ folder"
        matching = f" matching -k {args.pattern!r}" if args.pattern else ""
        print(f"relaybot: no conversation tests{matching} in {where}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    results: list[ConversationResult] = []
    async with ConversationRunner.open(settings, bots=list(by_bot), report=_say) as runner:
        for bot_name, conversations in by_bot.items():
            bot = bots.require(bot_name)
            for conversation in conversations:
                result = await runner.run(conversation, bot)
                results.append(result)
                _say(result_line(result))
    seconds = time.perf_counter() - started
    failures = [r for r in results if not r.passed]
    for result in failures:
        _say("")
        _say(describe_failure(result))
    _say("")
    _say(summary_line(results, seconds))
    if args.junit is not None:
        write_junit(results, args.junit, seconds=seconds)
    return 1 if failures else 0


def _collect(settings: Settings, bots: BotRegistry, args: argparse.Namespace) -> dict[str, list[Conversation]]:
    """The conversations to run, by bot, in file order."""
    by_bot: dict[str, list[Conversation]] = {}
    if args.paths:
        for conversation in load_paths(args.paths):
            name = args.bot or _bot_of(conversation.path, settings.bots_dir) or bots.default
            by_bot.setdefault(bots.require(name).name, []).append(conversation)
    else:
        chosen = [bots.require(args.bot)] if args.bot else list(bots)
        for bot in chosen:
            folder = (bot.path or settings.bots_dir / bot.name) / TESTS_FOLDER
            if folder.is_dir():
                by_bot[bot.name] = load_paths([folder])
            elif args.bot:
                raise ConfigError(f"bot {bot.name!r} has no conversation tests: create {folder}/ with *.yaml files")
    return {name: kept for name, convs in by_bot.items() if (kept := select(convs, args.pattern))}


def _bot_of(path: Path, bots_dir: Path) -> str | None:
    """The bot whose folder holds `path` (bots/<name>/...), if any."""
    try:
        relative = path.resolve().relative_to(bots_dir.resolve())
    except ValueError:
        return None
    return relative.parts[0] if len(relative.parts) > 1 else None


def _say(line: str) -> None:
    print(line, flush=True)
