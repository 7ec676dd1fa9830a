"""How big the model's context gets, and how long a turn takes, as one conversation grows.

Runs the real core in-process (`core.runtime.Runtime` on embedded defaults: in-memory sessions, a
SQLite history in a temp dir, the in-process bus and worker, the offline provider) with a
recording channel, and drives two conversations of `--turns` turns each, one turn of each in
turn, so drift on a busy machine hits both alike:

- **relaybot**: the example bot as shipped: the `[history]` window (20 messages / 2,000 tokens),
  the running summary that older messages are folded into, the user's facts;
- **whole history** (the baseline): a copy of the same bot whose window holds every message
  (`max_messages` and `token_budget` far above the conversation), so nothing is ever folded and
  every turn sends the whole conversation, which is what a bot without a window does.

The context size of a turn is the `tokens_in` of its `turn` log event: the offline provider's
estimate over every message sent to the model (system prompt with facts and summary, history,
the new message). The turn time is publish -> reply on the channel; the follow-up that runs after the reply (fact
extraction, summary fold) is timed on its own, from the reply until the worker is idle, and the
next turn starts only then. Printed at each checkpoint (`--at`): context tokens at that turn, the
p50 of the ten turns up to it, the ratios relaybot / whole history, and the follow-up p50; then
each mode's growth from the first checkpoint to the last. Never fails on figures; exits 1 only if a reply was missing or
answered the wrong message.

    python bench/context_growth.py [--turns 1000] [--at 10,100,1000]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchkit import bots_with_high_limits, percentile
from structlog.testing import capture_logs

from core.envelope import Envelope, session_id_for
from core.runtime import Runtime
from core.tokens import estimate_tokens
from tests.support.harness import make_settings
from tests.support.recording_channel import RecordingChannel

CHANNEL = "api"
REPLY_TIMEOUT = 60.0
WARMUP_TURNS = 5
HUGE = 10**9
_USER_LINES = (
    "How do I export my tasks to CSV, and does the export include archived projects?",
    "Can I move a task between workspaces without losing its comments and attachments?",
    "We were charged twice this month; where do I find the invoices for both payments?",
    "My name is Alice and I'm on the Pro plan; I'm based in Tokyo.",
    "The mobile app logs me out every morning. Is that a setting or a bug?",
)


@dataclass
class Mode:
    label: str
    bot: str
    conversation_id: str
    tokens_in: dict[int, int] = field(default_factory=dict)  # turn number (1-based) -> context tokens
    seconds: dict[int, float] = field(default_factory=dict)
    follow_up: dict[int, float] = field(default_factory=dict)  # reply -> worker idle (facts, summary)
    envelope_turn: dict[str, int] = field(default_factory=dict)

    @property
    def session_id(self) -> str:
        return session_id_for(self.bot, CHANNEL, self.conversation_id)


def whole_history_bot(bots: Path) -> str:
    """A copy of the example bot that sends every message of the conversation to the model."""
    target = bots / "wholehist"
    shutil.copytree(bots / "support", target)
    toml = target / "bot.toml"
    text = toml.read_text()
    for key, value in (("name", '"wholehist"'), ("max_messages", str(HUGE)), ("token_budget", str(HUGE))):
        text, count = re.subn(rf"(?m)^({key}\s*=\s*).*$", rf"\g<1>{value}", text, count=1)
        if count != 1:
            raise SystemExit(f"could not set {key} in {toml}")
    toml.write_text(text)
    return "wholehist"


def unlimited_tokens(bots: Path) -> None:
    # The whole-history mode spends millions of (estimated) tokens: above any daily budget.
    for toml in bots.glob("*/bot.toml"):
        toml.write_text(re.sub(r"(?m)^(tokens_per_day\s*=\s*).*$", rf"\g<1>{HUGE * 1000}", toml.read_text()))


async def one_turn(runtime: Runtime, channel: RecordingChannel, mode: Mode, n: int) -> None:
    message_id = f"{mode.bot}-t{n}"
    envelope = Envelope.create(
        bot=mode.bot,
        channel=CHANNEL,
        channel_message_id=message_id,
        conversation_id=mode.conversation_id,
        user_id=f"{CHANNEL}:alice",
        user_name="Alice",
        # Each mode words its turns its own way: the same text twice would let the second mode hit
        # caches (token estimates, embeddings) that the first one filled.
        text=f"{mode.label.capitalize()}, turn {n}: {_USER_LINES[n % len(_USER_LINES)]}",
    )
    mode.envelope_turn[envelope.id] = n
    expected = len(channel.replies) + 1
    started = time.perf_counter()
    await runtime.bus.publish(envelope)
    replies = await channel.wait_for(expected, REPLY_TIMEOUT)
    replied = time.perf_counter()
    mode.seconds[n] = replied - started
    if replies[expected - 1].in_reply_to != message_id:
        raise AssertionError(f"reply to {replies[expected - 1].in_reply_to!r}, expected {message_id!r}")
    # The follow-up (fact extraction, summary fold) runs after the reply; wait for it, so that its
    # cost is measured on its own and never lands in the other mode's next turn.
    deadline = replied + REPLY_TIMEOUT
    while runtime.worker.in_flight and time.perf_counter() < deadline:  # noqa: ASYNC110 (a count, no event)
        await asyncio.sleep(0.0005)
    mode.follow_up[n] = time.perf_counter() - replied


def collect(logs: list[dict[str, Any]], modes: list[Mode]) -> int:
    folds = 0
    by_envelope = {env: (mode, n) for mode in modes for env, n in mode.envelope_turn.items()}
    for event in logs:
        if event.get("event") == "turn" and event.get("envelope_id") in by_envelope:
            mode, n = by_envelope[event["envelope_id"]]
            mode.tokens_in[n] = int(event.get("tokens_in") or 0)
        elif event.get("event") == "memory_summary_folded" and event.get("session_id") == modes[0].session_id:
            folds += 1
    return folds


def p50_ms(series: dict[int, float], upto: int) -> float:
    window = [series[n] * 1000 for n in range(max(1, upto - 9), upto + 1) if n in series]
    return percentile(window, 50) if window else float("nan")


def report(modes: list[Mode], checkpoints: list[int], folds: int, summary_tokens: int | None) -> None:
    ours, base = modes
    print()
    print("Context sent to the model, and turn time (publish -> reply), as one conversation grows")
    print(
        f"{'turns':>6} {'relaybot tok':>13} {'whole tok':>10} {'ratio':>7}   "
        f"{'relaybot ms':>11} {'whole ms':>9} {'ratio':>7}   {'relaybot after':>14} {'whole after':>11}"
    )
    for at in checkpoints:
        a, b = ours.tokens_in.get(at), base.tokens_in.get(at)
        ta, tb = p50_ms(ours.seconds, at), p50_ms(base.seconds, at)
        fa, fb = p50_ms(ours.follow_up, at), p50_ms(base.follow_up, at)
        ratio = f"{a / b:>6.2f}x" if a and b else "    n/a"
        print(
            f"{at:>6,} {a or 0:>13,} {b or 0:>10,} {ratio}   {ta:>11.1f} {tb:>9.1f} {ta / tb:>6.2f}x"
            f"   {fa:>14.1f} {fb:>11.1f}"
        )
    print("(ms: p50 of the ten turns up to the checkpoint; 'after': reply -> follow-up done, off the user's wait)")
    first, last = checkpoints[0], checkpoints[-1]
    print(f"growth from turn {first:,} to turn {last:,} (the same run, each mode against itself):")
    for mode in modes:
        t0, t1 = mode.tokens_in.get(first), mode.tokens_in.get(last)
        growth = f"{t1 / t0:.2f}x" if t0 and t1 else "n/a"
        print(
            f"  {mode.label:<14} context {growth:>8}   turn p50 "
            f"{p50_ms(mode.seconds, last) / p50_ms(mode.seconds, first):.2f}x"
            f"   mean turn {statistics.fmean(mode.seconds.values()) * 1000:.1f} ms"
            f"   mean follow-up {statistics.fmean(mode.follow_up.values()) * 1000:.1f} ms"
        )
    tokens = list(ours.tokens_in.values())
    print(
        f"relaybot: largest context {max(tokens):,} tokens over {len(tokens):,} turns; "
        f"{folds} summary folds; summary now {summary_tokens or 0} tokens"
    )


async def bench(turns: int, checkpoints: list[int], tmp: Path) -> int:
    bots = bots_with_high_limits(tmp / "bots")
    baseline_bot = whole_history_bot(bots)
    unlimited_tokens(bots)
    settings = make_settings(tmp, bots_dir=bots)
    modes = [Mode("relaybot", "support", "growth-relaybot"), Mode("whole history", baseline_bot, "growth-whole")]
    errors: list[str] = []
    summary_tokens: int | None = None
    # capture_logs keeps the per-turn events (2 x turns of them) in memory instead of printing them.
    with capture_logs() as logs:
        runtime = await Runtime.from_settings(settings)
        channel = RecordingChannel(CHANNEL)
        runtime.add_channel(channel)
        try:
            await runtime.start()
            # Untimed warm-up on conversations of their own: the first turns of a process load models
            # and open connections, which would otherwise make turn 10 look slow.
            for mode in modes:
                warm = Mode(mode.label, mode.bot, f"{mode.conversation_id}-warmup")
                for n in range(1, WARMUP_TURNS + 1):
                    await one_turn(runtime, channel, warm, n)
            started = time.perf_counter()
            for n in range(1, turns + 1):
                for mode in modes:
                    try:
                        await one_turn(runtime, channel, mode, n)
                    except (AssertionError, TimeoutError) as exc:
                        errors.append(f"{mode.label} turn {n}: {type(exc).__name__}: {exc}")
                        break
                if errors:
                    break
                if n in checkpoints or n % 100 == 0:
                    print(f"turn {n:,} of {turns:,} ({time.perf_counter() - started:.0f} s)", flush=True)
            summary = await runtime.history.summary(modes[0].session_id)
            if summary is not None:
                summary_tokens = estimate_tokens(summary.text)
        finally:
            await runtime.close()
    folds = collect(list(logs), modes)
    report(modes, [c for c in checkpoints if c <= turns] or [turns], folds, summary_tokens)
    print(f"errors: {len(errors)}")
    for error in errors[:10]:
        print(f"  {error}")
    return 1 if errors else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=1000, help="turns per conversation (default 1000)")
    parser.add_argument("--at", default="10,100,1000", help="checkpoints, comma-separated (default 10,100,1000)")
    args = parser.parse_args()
    try:
        checkpoints = sorted({int(s) for s in args.at.split(",") if s.strip()})
    except ValueError:
        parser.error("--at takes comma-separated whole numbers, e.g. 10,100,1000")
    if args.turns < 1 or not checkpoints or checkpoints[0] < 1:
        parser.error("--turns and every checkpoint must be at least 1")
    tmp = Path(tempfile.mkdtemp(prefix="relaybot-bench-context-"))
    try:
        return asyncio.run(bench(args.turns, checkpoints, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
