"""`relaybot eval --bot NAME`: the bot's labelled sets through its real classifier and retriever, as figures.

It reports, it does not judge: exit 0 whatever the figures, 2 when a labelled set is not valid.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from core.bots import BotRegistry
from core.convtests.offline import offline_runtime
from core.errors import ConfigError
from core.evals.metrics import IntentFigures, RetrievalFigures, intent_figures, retrieval_figures
from core.evals.report import as_json, intent_lines, retrieval_lines
from core.evals.runner import ask_questions, classify_utterances, retrieval_settings
from core.evals.sets import EvalFileError, load_sets
from core.logging import configure_logging
from core.settings import Settings

__all__ = ["add_eval_command"]


def add_eval_command(commands: Any) -> None:
    """Register `relaybot eval` on the CLI's subcommands (an argparse `_SubParsersAction`)."""
    command = commands.add_parser(
        "eval", help="intent accuracy and retrieval recall on the bot's labelled sets (bots/<name>/eval/)"
    )
    command.add_argument("--bot", help="the bot to evaluate (default: RELAYBOT_DEFAULT_BOT)")
    command.add_argument("--k", type=_positive, default=3, help="recall@k: how many passages count (default 3)")
    command.add_argument("--plot", type=Path, metavar="FILE.png", help="also draw the score distributions (PNG)")
    command.add_argument("--json", type=Path, metavar="FILE", help="also write the figures as JSON ('-': print)")
    command.set_defaults(handler=_eval_command)


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return number


async def _eval_command(settings: Settings, args: argparse.Namespace) -> int:
    configure_logging(settings.log_format, "CRITICAL")  # the report is the output; the log would bury it
    bots = BotRegistry.from_dir(settings.bots_dir, default=settings.default_bot)
    bot = bots.require(args.bot or bots.default)
    try:
        sets = load_sets(bot)
    except EvalFileError as exc:
        print(f"relaybot: bad labelled set: {exc}", file=sys.stderr)
        return 2
    if args.plot is not None and args.plot.suffix.lower() != ".png":
        raise ConfigError(f"--plot writes a PNG: name a .png file, not {args.plot}")
    started = time.perf_counter()
    intents: IntentFigures | None = None
    retrieval: RetrievalFigures | None = None
    async with offline_runtime(settings, bots=[bot.name] if sets.questions else [], report=_say) as runtime:
        if sets.utterances:
            outcomes = await classify_utterances(runtime.intents, bot, sets.utterances)
            intents = intent_figures(bot.intents, outcomes)
        if sets.questions:
            answers = await ask_questions(runtime.knowledge, bot, sets.questions, k=args.k)
            retrieval = retrieval_figures(retrieval_settings(bot, runtime.knowledge), args.k, answers)
    _say(f"relaybot eval: bot '{bot.name}' ({', '.join(str(f) for f in sets.files)})")
    for lines in (intent_lines(intents) if intents else None, retrieval_lines(retrieval) if retrieval else None):
        if lines:
            _say("")
            for line in lines:
                _say(line)
    _say("")
    seconds = time.perf_counter() - started
    _say(f"{len(sets.utterances)} utterance(s), {len(sets.questions)} question(s) in {seconds:.1f} s")
    if args.json is not None:
        text = json.dumps({"bot": bot.name, "k": args.k, **as_json(intents, retrieval)}, indent=2)
        if args.json == Path("-"):
            print(text)
        else:
            _write(args.json, text + "\n")
            _say(f"wrote {args.json}")
    if args.plot is not None:
        from core.evals.plot import write_plot  # matplotlib only when a plot is asked for

        write_plot(args.plot, intents, retrieval, bot=bot.name)
        _say(f"wrote {args.plot}")
    return 0


def _write(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc}") from exc


def _say(line: str) -> None:
    print(line, flush=True)
