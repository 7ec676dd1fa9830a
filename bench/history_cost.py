"""The cost of one turn as a conversation's history grows: it must stay flat.

Starts a real redis-server on a free port of 127.0.0.1 and the real core (`Runtime`: Redis
sessions, SQLite history, in-process bus and worker, offline provider) with a recording channel.
For each history size it pre-fills one conversation's Redis session list and SQL transcript
(setup, not timed), then times turns on every conversation: publish an envelope on the bus, wait
for the reply on the channel. Turns are interleaved across sizes (one turn of each size per round)
so drift on a noisy machine hits every size alike. Prints mean/p50/p99 per size and the ratio to
the smallest size, the baseline measured in the same run. Never fails on timing; exits 1 only if
a turn went wrong (no reply, wrong reply, or the history was not appended after the pre-fill).

    python bench/history_cost.py [--turns 200] [--sizes 10,1000,10000]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis
from benchkit import percentile

from core.envelope import Envelope, session_id_for
from core.logging import configure_logging
from core.runtime import Runtime
from core.stores.base import Session, StoredMessage
from tests.support.harness import make_settings, write_bot
from tests.support.recording_channel import RecordingChannel
from tests.support.servers import RedisServer, start_redis

BOT = "support"
CHANNEL = "api"
BATCH = 500
WARMUP_TURNS = 5
REPLY_TIMEOUT = 30.0
HIGH_LIMIT = 10**6
_USER_LINES = (
    "How do I export my tasks to CSV, and does the export include archived projects?",
    "Can I move a task between workspaces without losing its comments and attachments?",
    "We were charged twice this month; where do I find the invoices for both payments?",
)
_ASSISTANT_LINES = (
    "You can export from Settings > Data > Export. Archived projects are included when you tick "
    "'Include archived'. The file arrives by email within a few minutes.",
    "Yes: open the task, choose Move, and pick the workspace. Comments, attachments and the "
    "activity log move with it; assignees who are not members are unassigned.",
    "Invoices are under Billing > History. If you see two charges for one period, reply here with "
    "the last four digits of the card and we will refund the duplicate.",
)


# --- redis-server ---------------------------------------------------------------------------------


# --- the benchmark --------------------------------------------------------------------------------


@dataclass
class Conversation:
    size: int
    conversation_id: str
    session_id: str
    user_id: str
    next_seq: int  # the seq the next reply must carry
    latencies: list[float] = field(default_factory=list)


def history_messages(count: int) -> list[StoredMessage]:
    return [
        StoredMessage(
            role="user" if i % 2 == 0 else "assistant",
            content=(_USER_LINES if i % 2 == 0 else _ASSISTANT_LINES)[(i // 2) % 3] + f" (#{i})",
            ref=f"old-{i // 2}",
        )
        for i in range(count)
    ]


async def prefill(runtime: Runtime, size: int) -> Conversation:
    """One conversation with `size` messages, in the Redis session list and the SQL history."""
    conversation_id = f"history-{size}"
    session_id = session_id_for(BOT, CHANNEL, conversation_id)
    user_id = f"{CHANNEL}:{conversation_id}"
    await runtime.sessions.create(
        Session(session_id=session_id, bot=BOT, channel=CHANNEL, conversation_id=conversation_id, user_id=user_id)
    )
    messages = history_messages(size)
    for start in range(0, size, BATCH):
        saved = await runtime.history.append(
            session_id=session_id,
            bot=BOT,
            channel=CHANNEL,
            user_id=user_id,
            messages=messages[start : start + BATCH],
        )
        await runtime.sessions.append(session_id, saved)
    return Conversation(size, conversation_id, session_id, user_id, next_seq=size + 2)


async def one_turn(runtime: Runtime, channel: RecordingChannel, conv: Conversation, n: int) -> float:
    """Publish one envelope and wait for its reply; returns seconds, or raises on a wrong reply."""
    message_id = f"{conv.conversation_id}-t{n}"
    envelope = Envelope.create(
        bot=BOT,
        channel=CHANNEL,
        channel_message_id=message_id,
        conversation_id=conv.conversation_id,
        user_id=conv.user_id,
        user_name="Alice",
        text=f"Turn {n}: {_USER_LINES[n % 3]}",
    )
    expected = len(channel.replies) + 1
    started = time.perf_counter()
    await runtime.bus.publish(envelope)
    replies = await channel.wait_for(expected, REPLY_TIMEOUT)
    elapsed = time.perf_counter() - started
    reply = replies[expected - 1]
    if reply.in_reply_to != message_id:
        raise AssertionError(f"reply to {reply.in_reply_to!r}, expected {message_id!r}")
    if "offline mode" not in reply.text:
        raise AssertionError(f"not a real answer (a stage failed?): {reply.text[:120]!r}")
    if reply.seq != conv.next_seq:
        raise AssertionError(f"{conv.conversation_id}: reply seq {reply.seq}, expected {conv.next_seq}")
    conv.next_seq += 2
    return elapsed


async def check_appended(runtime: Runtime, conversations: list[Conversation], redis_url: str) -> list[str]:
    """Every turn was appended after the pre-filled history, in Redis and in SQL."""
    errors: list[str] = []
    client = redis.Redis.from_url(redis_url)
    try:
        for conv in conversations:
            expected = conv.next_seq - 2
            # Key layout documented in core/stores/redis.py (default prefix "relaybot").
            length = client.llen(f"relaybot:session:{conv.session_id}:messages")
            last_redis = await runtime.sessions.recent(conv.session_id, 1)
            last_sql = await runtime.history.recent(conv.session_id, 1)
            if length != expected or not last_redis or last_redis[-1].seq != expected:
                errors.append(f"{conv.size:,}: Redis list has {length} messages, expected {expected}")
            if not last_sql or last_sql[-1].seq != expected:
                errors.append(f"{conv.size:,}: SQL history does not end at seq {expected}")
    finally:
        client.close()
    return errors


def report(conversations: list[Conversation], turns: int, errors: list[str], setup: dict[int, float]) -> None:
    print()
    print(f"One turn (publish -> reply) with N messages of history on Redis + SQLite, {turns} turns each")
    header = f"{'history':>8} {'setup s':>8} {'mean ms':>9} {'p50 ms':>8} {'p99 ms':>8}"
    print(f"{header}   {'mean':>6} {'p50':>6} {'p99':>6}  (ratio to {conversations[0].size:,})")
    base: tuple[float, float, float] | None = None
    for conv in conversations:
        if not conv.latencies:
            print(f"{conv.size:>8,} {setup[conv.size]:>8.1f}   (no successful turns)")
            continue
        ms = [x * 1000 for x in conv.latencies]
        figures = (statistics.fmean(ms), percentile(ms, 50), percentile(ms, 99))
        base = base or figures
        ratios = " ".join(f"{f / b:>5.2f}x" for f, b in zip(figures, base, strict=True))
        print(
            f"{conv.size:>8,} {setup[conv.size]:>8.1f} {figures[0]:>9.2f} {figures[1]:>8.2f} "
            f"{figures[2]:>8.2f}   {ratios}"
        )
    print("(flat = ratios near 1.00x; a cost that grows with the history shows as ratios rising with N)")
    print(f"errors: {len(errors)}")
    for error in errors[:10]:
        print(f"  {error}")


async def bench(sizes: list[int], turns: int, redis_url: str, tmp: Path) -> int:
    configure_logging("json", "WARNING")  # the per-turn log event would otherwise print 600 lines
    bots = tmp / "bots"
    write_bot(bots, limits={"messages_per_minute": HIGH_LIMIT, "messages_per_hour": HIGH_LIMIT})
    settings = make_settings(tmp, redis_url=redis_url, bots_dir=bots)
    runtime = await Runtime.from_settings(settings)
    channel = RecordingChannel(CHANNEL)
    runtime.add_channel(channel)
    errors: list[str] = []
    try:
        await runtime.start()
        conversations: list[Conversation] = []
        setup: dict[int, float] = {}
        for size in sizes:
            started = time.perf_counter()
            conversations.append(await prefill(runtime, size))
            setup[size] = time.perf_counter() - started
            print(f"pre-filled {size:,} messages in {setup[size]:.1f} s")

        # Warm-up (imports, first queries, connection pools) is not measured, but still checked.
        # Turns are interleaved: round n runs one turn of every size, so drift hits each alike.
        schedule = [(n, conv, False) for conv in conversations for n in range(-WARMUP_TURNS, 0)]
        schedule += [(n, conv, True) for n in range(turns) for conv in conversations]
        started = time.perf_counter()
        for n, conv, timed in schedule:
            if timed and not any(c.latencies for c in conversations):
                started = time.perf_counter()
            try:
                elapsed = await one_turn(runtime, channel, conv, n)
            except (AssertionError, TimeoutError) as exc:
                # Later turns would be checked against the wrong replies: stop, report what we have.
                errors.append(f"turn {n} of {conv.size:,}: {type(exc).__name__}: {exc}")
                break
            if timed:
                conv.latencies.append(elapsed)
        measured = time.perf_counter() - started
        print(f"measured {sum(len(c.latencies) for c in conversations)} turns in {measured:.1f} s")
        if not errors:
            errors += await check_appended(runtime, conversations, redis_url)
    finally:
        await runtime.close()
    report(conversations, turns, errors, setup)
    return 1 if errors else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=200, help="timed turns per history size (default 200)")
    parser.add_argument(
        "--sizes",
        default="10,1000,10000",
        help="comma-separated history sizes; the smallest is the baseline (default 10,1000,10000)",
    )
    args = parser.parse_args()
    try:
        sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    except ValueError:
        parser.error("--sizes takes comma-separated whole numbers, e.g. 10,1000,10000")
    if not sizes or sizes[0] < 0 or args.turns < 1:
        parser.error("--sizes needs at least one size >= 0 and --turns must be at least 1")

    tmp = Path(tempfile.mkdtemp(prefix="relaybot-bench-history-"))
    server: RedisServer | None = None
    try:
        server = start_redis(tmp / "redis")
        print(f"redis-server on {server.url}")
        return asyncio.run(bench(sizes, args.turns, server.url, tmp))
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
