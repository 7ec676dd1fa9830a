"""Handoff through the real runtime: who can ask for a person, the one acknowledgement, the bot's
silence while a person is asked for or holds the conversation, a person's replies, and the bot
answering again after a hand back or a timeout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from core.envelope import Envelope, Reply
from core.handoff.desk import DeskEvent, HandoffState
from core.runtime import Runtime
from core.settings import Settings
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.scripted import Answer, ToolUse
from tests.support.harness import make_settings, write_bot
from tests.support.llm import FAST, llm_settings
from tests.support.recording_channel import RecordingChannel

SESSION = "support:api:conv-1"
ACK = "Thanks, I've passed this to our support team: a person will follow up here shortly."
OPERATOR = "ana@example.com"


@dataclass
class Chat:
    runtime: Runtime
    channel: RecordingChannel
    logs: list[dict[str, Any]]
    count: int = 0

    async def say(self, text: str) -> Reply | None:
        """One message through the worker, as the bus hands it over; the reply, or None for silence."""
        self.count += 1
        envelope = Envelope.create(
            bot="support",
            channel="api",
            channel_message_id=f"m{self.count}",
            conversation_id="conv-1",
            user_id="api:conv-1",
            user_name="Alice",
            text=text,
            reply_to="https://example.test/callback",
        )
        return await self.runtime.worker.process(envelope)

    @property
    def turns(self) -> list[dict[str, Any]]:
        return [e for e in self.logs if e["event"] == "turn"]

    @property
    def transitions(self) -> list[tuple[str, str]]:
        return [(e["transition"], e["cause"]) for e in self.logs if e["event"] == "handoff"]


@asynccontextmanager
async def chat(settings: Settings) -> AsyncIterator[Chat]:
    runtime = await Runtime.from_settings(settings)
    channel = RecordingChannel("api")
    runtime.add_channel(channel)
    try:
        with capture_logs() as logs:
            yield Chat(runtime, channel, logs)
    finally:
        await runtime.close()


def offline(tmp_path: Path, **handoff: Any) -> Settings:
    bots_dir = tmp_path / "bots"
    write_bot(bots_dir, handoff=handoff) if handoff else write_bot(bots_dir)
    return make_settings(tmp_path, bots_dir=bots_dir)


async def test_the_user_asks_for_a_person_is_told_once_and_the_bot_stays_silent(tmp_path: Path) -> None:
    async with chat(offline(tmp_path)) as c:
        desk = c.runtime.handoff_desk
        events = desk.events()
        seen: list[DeskEvent] = []

        async def read() -> None:
            async for event in events:
                seen.append(event)

        reading = asyncio.create_task(read())
        await asyncio.sleep(0)
        first = await c.say("Can I speak to a human please?")
        assert first is not None and first.text == ACK
        assert await desk.state(SESSION) is HandoffState.PENDING_HUMAN
        # Later messages: no reply at all (not one acknowledgement per message), but kept and shown.
        assert await c.say("hello?") is None
        assert await c.say("my invoice is wrong") is None
        assert [r.text for r in c.channel.replies] == [ACK]  # what the channel was given: one reply
        await asyncio.sleep(0.05)
        reading.cancel()
        await events.aclose()  # type: ignore[attr-defined]

        history = await c.runtime.history.after(SESSION, 0)
        assert [(m.role, m.content) for m in history] == [
            ("system", "A person was asked for: Can I speak to a human please?"),
            ("user", "Can I speak to a human please?"),
            ("assistant", ACK),
            ("user", "hello?"),
            ("user", "my invoice is wrong"),
        ]
        (waiting,) = await desk.queue()
        assert waiting.reason == "Can I speak to a human please?" and waiting.channel == "api"
        assert [e.kind for e in seen] == ["requested", "message", "message", "message", "message"]
        assert [e.message.text for e in seen if e.message] == [
            "Can I speak to a human please?",
            ACK,
            "hello?",
            "my invoice is wrong",
        ]
        assert [t["handoff"] for t in c.turns] == ["requested", "held", "held"]
        assert [t["provider"] for t in c.turns] == [None, None, None]  # no model was asked
        assert c.transitions == [("requested", "user")]
        samples = {
            (s.labels["outcome"]): s.value
            for m in c.runtime.metrics.registry.collect()
            if m.name == "relaybot_turns"
            for s in m.samples
            if s.name == "relaybot_turns_total"
        }
        assert samples["held"] == 2


async def test_a_person_takes_over_replies_hands_back_and_the_bot_answers_again(tmp_path: Path) -> None:
    async with chat(offline(tmp_path)) as c:
        desk = c.runtime.handoff_desk
        await c.say("I want to talk to a real person")
        await desk.take(SESSION, OPERATOR)
        assert await c.say("are you there?") is None
        await desk.reply(SESSION, OPERATOR, "Hi, I'm Ana from support. What's wrong with the invoice?")
        ack, sent = c.channel.replies
        assert ack.text == ACK and sent.text == "Hi, I'm Ana from support. What's wrong with the invoice?"
        assert sent.channel == "api" and sent.reply_to == "https://example.test/callback"
        assert await c.say("it lists 12 seats, we have 10") is None
        await desk.hand_back(SESSION, OPERATOR)

        answer = await c.say("How do I export my tasks?")
        assert answer is not None and "export" in answer.text.lower() and answer.text != ACK
        transcript = await desk.transcript(SESSION)
        assert [m.author for m in transcript] == [
            "system",
            "user",
            "bot",
            "system",
            "user",
            OPERATOR,
            "user",
            "system",
            "user",
            "bot",
        ]
        assert c.transitions == [("requested", "user"), ("taken", "operator"), ("handed_back", "operator")]
        # The model's context after the hand back has what the user and the person said.
        window = await c.runtime.sessions.recent(SESSION, 20)
        assert "Hi, I'm Ana from support. What's wrong with the invoice?" in [m.content for m in window]


async def test_a_handler_and_its_tool_ask_for_a_person(tmp_path: Path) -> None:
    settings = offline(tmp_path)
    async with chat(settings) as c:
        reply = await c.say("the app keeps crashing when I open a board, I need to talk to a human")
        assert reply is not None and reply.text == ACK
        (turn,) = c.turns
        assert (turn["intent"], turn["handler"], turn["handoff"]) == ("technical", "technical", "requested")
        assert [t["tool"] for t in turn["tool_calls"]] == ["handoff_to_human"]
        assert c.transitions == [("requested", "tool")]
        assert await c.say("thanks") is None
    assert (settings.data_dir / "handoffs.jsonl").exists()  # the tool's own record is still written


async def test_the_model_asks_for_a_person_through_the_tool(tmp_path: Path) -> None:
    async with FakeOpenAI() as fake:
        fake.queue(
            "gpt-4o",
            ToolUse(calls=(("handoff_to_human", {"reason": "refund dispute over 3 invoices"}),)),
            Answer("I've asked a colleague to look at this."),
        )
        bots_dir = tmp_path / "bots"
        write_bot(bots_dir, models={**FAST, "chain": ["openai:gpt-4o"]})
        async with chat(llm_settings(tmp_path, fake, None, bots_dir=bots_dir)) as c:
            reply = await c.say("I have a question about my last payment")
            assert reply is not None and reply.text == ACK
            assert c.transitions == [("requested", "model")]
            (waiting,) = await c.runtime.handoff_desk.queue()
            assert waiting.reason == "refund dispute over 3 invoices"
            assert await c.say("ok") is None
            # Nothing asked of the model to answer while the person has it (fact extraction aside).
            assert len([r for r in fake.requests if r.body.get("tools")]) == 2


async def test_nobody_takes_it_the_user_is_told_and_the_bot_resumes(tmp_path: Path) -> None:
    async with chat(offline(tmp_path, timeout_seconds=60)) as c:
        desk = c.runtime.handoff_desk
        await c.say("let me talk to an agent")
        assert await desk.expire_waiting(datetime.now(UTC) + timedelta(seconds=30)) == []
        assert await desk.expire_waiting(datetime.now(UTC) + timedelta(seconds=61)) == [SESSION]
        _, told = c.channel.replies
        assert "nobody from the team is free" in told.text.lower()
        assert c.transitions == [("requested", "user"), ("timed_out", "timeout")]
        answer = await c.say("How do I export my tasks?")
        assert answer is not None and answer.text not in (ACK, "")


async def test_asked_for_outside_a_turn_the_next_message_gets_the_one_acknowledgement(tmp_path: Path) -> None:
    async with chat(offline(tmp_path)) as c:
        desk = c.runtime.handoff_desk
        await c.say("hi")
        assert await desk.request(SESSION, cause="operator", reason="VIP customer")
        reply = await c.say("hello again")
        assert reply is not None and reply.text == ACK
        assert await c.say("anyone?") is None
        assert [t["handoff"] for t in c.turns] == [None, "acknowledged", "held"]


async def test_a_held_message_run_again_is_recorded_once_and_stays_silent(tmp_path: Path) -> None:
    async with chat(offline(tmp_path)) as c:
        await c.say("talk to a person")
        envelope = Envelope.create(
            bot="support",
            channel="api",
            channel_message_id="again",
            conversation_id="conv-1",
            user_id="api:conv-1",
            text="still waiting",
        )
        assert await c.runtime.worker.process(envelope) is None
        assert await c.runtime.worker.process(envelope) is None  # redelivered after a crash
        history = await c.runtime.history.after(SESSION, 0)
        assert [m.content for m in history].count("still waiting") == 1
        # The turn that asked, run again, answers with what it recorded (the acknowledgement).
        first = Envelope.create(
            bot="support",
            channel="api",
            channel_message_id="m1",
            conversation_id="conv-1",
            user_id="api:conv-1",
            text="talk to a person",
            reply_to="https://example.test/callback",
        )
        rerun = await c.runtime.worker.process(first)
        assert rerun is not None and rerun.text == ACK
