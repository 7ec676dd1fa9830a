"""The whole path of a message through the core: bus → worker → pipeline → outbox → channel."""

from __future__ import annotations

import asyncio
from pathlib import Path

from structlog.testing import capture_logs

from core.bots import BotRegistry, load_bot
from core.envelope import Envelope
from core.errors import DeliveryError
from core.pipeline.stages import AssembleContextStage, HistoryWindowStage
from core.pipeline.turn import Turn
from core.runtime import Runtime
from core.stores.base import Session, StoredMessage
from core.stores.memory import MemorySessionStore
from tests.support.harness import make_settings, write_bot
from tests.support.recording_channel import RecordingChannel


def envelope(text: str, *, msg_id: str, conversation: str = "conv-1", bot: str = "support") -> Envelope:
    return Envelope.create(
        bot=bot,
        channel="api",
        channel_message_id=msg_id,
        conversation_id=conversation,
        user_id=f"api:{conversation}",
        user_name="Alice",
        text=text,
    )


async def started(tmp_path: Path, **overrides: object) -> tuple[Runtime, RecordingChannel]:
    runtime = await Runtime.from_settings(make_settings(tmp_path, **overrides))
    channel = RecordingChannel("api")
    runtime.add_channel(channel)
    await runtime.start()
    return runtime, channel


async def test_an_envelope_becomes_one_reply_through_its_own_channel(tmp_path: Path) -> None:
    runtime, channel = await started(tmp_path)
    try:
        with capture_logs() as logs:
            await runtime.bus.publish(envelope("How do I export my tasks?", msg_id="m1"))
            (reply,) = await channel.wait_for(1)
        assert reply.channel == "api"
        assert reply.in_reply_to == "m1"
        assert reply.reply_to == "conv-1"
        assert "offline mode" in reply.text
        assert "How do I export my tasks?" in reply.text
        assert reply.seq == 2
        saved = await runtime.history.after("support:api:conv-1", 0)
        assert [(m.role, m.seq) for m in saved] == [("user", 1), ("assistant", 2)]
        assert saved[1].content == reply.text
        window = await runtime.sessions.recent("support:api:conv-1", 10)
        assert [m.content for m in window] == ["How do I export my tasks?", reply.text]
        turns = [e for e in logs if e["event"] == "turn"]
        assert len(turns) == 1
        assert turns[0]["channel"] == "api" and turns[0]["provider"] == "offline"
        assert turns[0]["tokens_in"] > 0 and turns[0]["tokens_out"] > 0
        assert turns[0]["session_id"] == "support:api:conv-1"
        # The entry is acknowledged once the turn's follow-up work (remembering facts) is done too.
        for _ in range(100):
            if await runtime.bus.pending() == 0:
                break
            await asyncio.sleep(0.05)
        assert await runtime.bus.pending() == 0
        record = await runtime.records.get(reply.id)
        assert record is not None and record.status == "sent" and record.attempts == 1
    finally:
        await runtime.close()


async def test_turns_of_one_conversation_are_answered_once_each_and_in_order(tmp_path: Path) -> None:
    runtime, channel = await started(tmp_path)
    try:
        for i in range(6):
            await runtime.bus.publish(envelope(f"question {i}", msg_id=f"m{i}"))
        for i in range(3):
            await runtime.bus.publish(envelope(f"other {i}", msg_id=f"o{i}", conversation="conv-2"))
        replies = await channel.wait_for(9)
        mine = [r for r in replies if r.reply_to == "conv-1"]
        assert [r.in_reply_to for r in mine] == [f"m{i}" for i in range(6)]
        assert [r.seq for r in mine] == [2, 4, 6, 8, 10, 12]
        assert [f"question {i}" in r.text for i, r in enumerate(mine)] == [True] * 6
    finally:
        await runtime.close()


async def test_a_duplicate_envelope_is_not_answered_twice(tmp_path: Path) -> None:
    runtime, channel = await started(tmp_path)
    try:
        first = envelope("hello", msg_id="dup")
        assert await runtime.bus.publish(first) is True
        # The same platform message again (a webhook retry): the bus does not take it twice...
        assert await runtime.bus.publish(envelope("hello", msg_id="dup")) is False
        # ...and a copy that reaches the queue anyway (e.g. after the bus's dedupe window) is not answered.
        again = envelope("hello", msg_id="dup")
        assert await runtime.bus.queue.add(again.session_id, again.to_json()) is not None
        await runtime.bus.publish(envelope("after", msg_id="next"))
        replies = await channel.wait_for(2)
        await asyncio.sleep(0.2)
        assert [r.in_reply_to for r in channel.replies] == ["dup", "next"]
        assert len(await runtime.history.after("support:api:conv-1", 0)) == 4
        assert replies[0].envelope_id == first.id
    finally:
        await runtime.close()


async def test_over_the_limit_a_user_gets_a_polite_notice_and_the_message_is_not_processed(
    tmp_path: Path,
) -> None:
    bots = tmp_path / "bots"
    write_bot(bots, limits={"messages_per_minute": 2, "messages_per_hour": 50})
    runtime, channel = await started(tmp_path, bots_dir=bots)
    try:
        for i in range(3):
            await runtime.bus.publish(envelope(f"message {i}", msg_id=f"m{i}"))
        replies = await channel.wait_for(3)
        assert "offline mode" in replies[1].text
        notice = replies[2].text
        assert notice.startswith("You're sending messages faster than I can answer them.")
        assert "try again in about 60 seconds" in notice
        # Shown and kept in the transcript, but never part of the model's context.
        window = await runtime.sessions.recent("support:api:conv-1", 20)
        assert [m.content for m in window if m.role == "user"] == ["message 0", "message 1"]
        history = await runtime.history.after("support:api:conv-1", 0)
        assert history[-1].content == notice and history[-1].is_notice
        # Another user is not affected.
        await runtime.bus.publish(envelope("hi", msg_id="x", conversation="conv-9"))
        replies = await channel.wait_for(4)
        assert "offline mode" in replies[3].text
    finally:
        await runtime.close()


async def test_delivery_is_retried_on_a_channel_429_and_sent_once(tmp_path: Path) -> None:
    runtime, channel = await started(tmp_path)
    channel.failures = [
        DeliveryError("429 rate limited", retryable=True, retry_after=0.05),
        DeliveryError("503 unavailable", retryable=True),
    ]
    try:
        await runtime.bus.publish(envelope("hello", msg_id="m1"))
        (reply,) = await channel.wait_for(1)
        assert channel.attempts == 3
        record = await runtime.records.get(reply.id)
        assert record is not None and record.status == "sent" and record.attempts == 3
    finally:
        await runtime.close()


async def test_a_reply_the_channel_rejects_for_good_is_recorded_failed_not_retried(tmp_path: Path) -> None:
    runtime, channel = await started(tmp_path)
    channel.failures = [DeliveryError("400 channel_not_found", retryable=False)]
    try:
        with capture_logs() as logs:
            await runtime.bus.publish(envelope("hello", msg_id="m1"))
            await runtime.bus.publish(envelope("again", msg_id="m2"))
            (second,) = await channel.wait_for(1)
        assert second.in_reply_to == "m2"
        assert channel.attempts == 2
        failed = [e for e in logs if e["event"] == "delivery_failed"]
        assert len(failed) == 1 and "channel_not_found" in failed[0]["error"]
    finally:
        await runtime.close()


async def test_conversation_survives_a_restart_with_redis(tmp_path: Path, redis_url: str) -> None:
    runtime, channel = await started(tmp_path, redis_url=redis_url)
    try:
        await runtime.bus.publish(envelope("My name is Alice", msg_id="m1"))
        await channel.wait_for(1)
    finally:
        await runtime.close()
    runtime, channel = await started(tmp_path, redis_url=redis_url)
    try:
        window = await runtime.sessions.recent("support:api:conv-1", 10)
        assert window[0].content == "My name is Alice"
        with capture_logs() as logs:
            await runtime.bus.publish(envelope("What is my name?", msg_id="m2"))
            (reply,) = await channel.wait_for(1)
        assert reply.seq == 4
        (turn,) = [e for e in logs if e["event"] == "turn"]
        assert turn["history_messages"] == 2
    finally:
        await runtime.close()


async def test_an_expired_session_comes_back_with_its_recent_history(tmp_path: Path) -> None:
    runtime, channel = await started(tmp_path, session_ttl_seconds=1)
    try:
        await runtime.bus.publish(envelope("first", msg_id="m1"))
        await channel.wait_for(1)
        await asyncio.sleep(1.1)
        assert await runtime.sessions.load("support:api:conv-1") is None
        with capture_logs() as logs:
            await runtime.bus.publish(envelope("second", msg_id="m2"))
            await channel.wait_for(2)
        (turn,) = [e for e in logs if e["event"] == "turn"]
        assert turn["history_messages"] == 2
    finally:
        await runtime.close()


def _turn(bot_dir: Path, text: str = "new question") -> Turn:
    bot = load_bot(bot_dir)
    return Turn(envelope=envelope(text, msg_id="t"), bot=bot)


async def test_history_window_keeps_the_newest_messages_within_the_token_budget(tmp_path: Path) -> None:
    bot_dir = write_bot(tmp_path / "bots", history={"max_messages": 6, "token_budget": 30})
    store = MemorySessionStore(ttl_seconds=60)
    session_id = "support:api:conv-1"
    await store.create(
        Session(session_id=session_id, bot="support", channel="api", conversation_id="conv-1", user_id="u")
    )
    ten_words = " ".join(["word"] * 10)  # 13 tokens each by the offline estimate
    await store.append(
        session_id,
        [StoredMessage(role="user" if i % 2 == 0 else "assistant", content=f"{i} {ten_words}") for i in range(8)],
    )
    turn = _turn(bot_dir)
    await HistoryWindowStage(store)(turn)
    # 6 newest are candidates; the budget of 30 tokens fits only the last two.
    assert [m.content.split()[0] for m in turn.history] == ["6", "7"]

    await AssembleContextStage()(turn)
    roles = [m.role for m in turn.context]
    assert roles == ["system", "user", "assistant", "user"]
    assert turn.context[0].content.startswith("You are the support assistant for Tasklane")
    assert "- Name: Alice" in turn.context[0].content
    assert turn.context[-1].content == "new question"


async def test_bots_load_from_their_folders(tmp_path: Path) -> None:
    registry = BotRegistry.from_dir(Path("bots"), default="support")
    bot = registry.require("support")
    assert bot.display_name == "Tasklane Support"
    assert bot.limits.messages_per_minute == 20
    assert bot.models.static_fallback.startswith("I'm having trouble processing your request")
    assert "Tasklane" in bot.system_prompt


async def test_over_the_daily_token_budget_a_user_is_told_to_come_back_tomorrow(tmp_path: Path) -> None:
    bots = tmp_path / "bots"
    write_bot(bots, limits={"tokens_per_day": 100})
    runtime, channel = await started(tmp_path, bots_dir=bots)
    try:
        await runtime.bus.publish(envelope("first question", msg_id="m1"))
        await channel.wait_for(1)
        used = await runtime.limiter.add_tokens("support:api:conv-1", 0)
        assert used > 100  # the offline provider's estimate for the prompt and the answer
        await runtime.bus.publish(envelope("second question", msg_id="m2"))
        replies = await channel.wait_for(2)
        assert replies[1].text.startswith("You've reached today's usage limit for this assistant.")
        assert "Please try again in about" in replies[1].text
        assert await runtime.limiter.add_tokens("support:api:conv-1", 0) == used  # the refusal costs nothing
    finally:
        await runtime.close()


async def test_a_turn_run_again_after_a_crash_records_the_exchange_once(tmp_path: Path) -> None:
    """A worker that dies after recording a turn but before marking it answered leaves the envelope
    to run again: the transcript keeps one exchange, and the answer is the one on record."""
    runtime = await Runtime.from_settings(make_settings(tmp_path))
    try:
        bot = runtime.bots.require("support")
        message = envelope("My name is Alice. How do I export my tasks?", msg_id="m1")
        first, _ = await runtime.pipeline.run_turn(message, bot)
        again, turn = await runtime.pipeline.run_turn(message, bot)  # the same envelope, as redelivered
        assert turn.rerun and again.seq == first.seq == 2 and again.text == first.text
        saved = await runtime.history.after("support:api:conv-1", 0)
        assert [(m.role, m.seq) for m in saved] == [("user", 1), ("assistant", 2)]
        window = await runtime.sessions.recent("support:api:conv-1", 10)
        assert [m.seq for m in window] == [1, 2]
        # The next message carries on the numbering.
        nxt, _ = await runtime.pipeline.run_turn(envelope("thanks", msg_id="m2"), bot)
        assert nxt.seq == 4
    finally:
        await runtime.close()
