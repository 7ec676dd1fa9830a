"""One clock for the whole turn: a runtime given a clock stamps, budgets and times handoffs by it, not by
the machine's (the real clock is the default; `relaybot test` gives each conversation its own)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from core.clock import SystemClock
from core.envelope import Envelope
from core.handoff.desk import HandoffState
from core.runtime import Runtime
from tests.support.harness import make_settings, write_bot
from tests.support.recording_channel import RecordingChannel

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
SESSION = "support:api:conv-1"


class SetClock:
    """A `core.clock.Clock` the test sets by hand."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at


def message(text: str, number: int, at: datetime) -> Envelope:
    return Envelope.create(
        bot="support",
        channel="api",
        channel_message_id=f"m{number}",
        conversation_id="conv-1",
        user_id="api:conv-1",
        text=text,
        received_at=at,
        reply_to="https://example.test/callback",
    )


async def test_the_turn_reads_the_runtimes_clock_for_the_reply_the_session_and_the_token_day(tmp_path: Path) -> None:
    bots = tmp_path / "bots"
    write_bot(bots)
    clock = SetClock(START)
    runtime = await Runtime.from_settings(make_settings(tmp_path, bots_dir=bots), clock=clock)
    runtime.add_channel(RecordingChannel("api"))
    try:
        await runtime.worker.process(message("How do I export my tasks?", 1, START))
        history = await runtime.history.after(SESSION, 0)
        # The reply is stamped with the clock's time, as the user's message is with its own.
        assert [(m.role, m.created_at) for m in history] == [("user", START), ("assistant", START)]
        session = await runtime.sessions.load(SESSION)
        assert session is not None and session.created_at == START
        used = await runtime.limiter.tokens_today("support:api:conv-1")
        assert used > 0  # the offline provider's estimate, counted on the clock's day
        clock.at = START + timedelta(hours=14, minutes=59)
        assert await runtime.limiter.tokens_today("support:api:conv-1") == used  # 23:59: the same day
        clock.at = START + timedelta(hours=15)
        assert await runtime.limiter.tokens_today("support:api:conv-1") == 0  # midnight UTC: a new day
    finally:
        await runtime.close()


async def test_a_request_for_a_person_times_out_by_the_runtimes_clock(tmp_path: Path) -> None:
    bots = tmp_path / "bots"
    write_bot(bots, handoff={"timeout_seconds": 900})
    clock = SetClock(START)
    runtime = await Runtime.from_settings(make_settings(tmp_path, bots_dir=bots), clock=clock)
    channel = runtime.add_channel(RecordingChannel("api"))
    assert isinstance(channel, RecordingChannel)
    try:
        await runtime.worker.process(message("Can I speak to a human please?", 1, START))
        desk = runtime.handoff_desk
        assert await desk.state(SESSION) is HandoffState.PENDING_HUMAN
        clock.at = START + timedelta(minutes=14)
        assert await runtime.desk.expire_waiting() == []
        clock.at = START + timedelta(minutes=15)
        assert await runtime.desk.expire_waiting() == [SESSION]
        assert await desk.state(SESSION) is HandoffState.BOT
        assert "nobody from the team is free" in channel.replies[-1].text
        # The desk's lines in the history are stamped by the clock too: the request, then the timeout and its message.
        history = [(m.role, m.content[:28], m.created_at) for m in await runtime.history.after(SESSION, 0)]
        assert history == [
            ("system", "A person was asked for: Can ", START),
            ("user", "Can I speak to a human pleas", START),
            ("assistant", "Thanks, I've passed this to ", START),
            ("system", "Nobody took the conversation", START + timedelta(minutes=15)),
            ("assistant", "Sorry, nobody from the team ", START + timedelta(minutes=15)),
        ]
    finally:
        await runtime.close()


async def test_the_runtime_runs_on_the_system_clock_unless_given_one(tmp_path: Path) -> None:
    runtime = await Runtime.from_settings(make_settings(tmp_path))
    try:
        assert isinstance(runtime.clock, SystemClock)
        now = runtime.clock.now()
        assert now.utcoffset() == timedelta(0) and abs(now - datetime.now(UTC)) < timedelta(seconds=5)
    finally:
        await runtime.close()
