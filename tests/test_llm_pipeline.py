"""The LLM layer inside the real pipeline: bus → worker → pipeline (generate) → outbox → channel,
with the OpenAI SDK aimed at the fake through OPENAI_BASE_URL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from core.bots import DEFAULT_STATIC_FALLBACK, BotRegistry
from core.envelope import Envelope
from core.llm.chain import DEFAULT_INTERRUPTED_NOTICE
from core.llm.factory import ChainFactory
from core.pipeline.pipeline import Pipeline
from core.pipeline.stages import (
    AssembleContextStage,
    GenerateStage,
    HistoryWindowStage,
    LoadSessionStage,
    LogTurnStage,
    RecordStage,
)
from core.runtime import Runtime
from core.stores.memory import MemorySessionStore
from core.stores.sql import SqlHistoryStore
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.scripted import Answer, Cut, Fail
from tests.support.llm import chain_factory, llm_settings, write_bot_models
from tests.support.recording_channel import RecordingChannel

SESSION = "support:api:conv-1"


def envelope(text: str, msg_id: str = "m1") -> Envelope:
    return Envelope.create(
        bot="support",
        channel="api",
        channel_message_id=msg_id,
        conversation_id="conv-1",
        user_id="api:conv-1",
        user_name="Alice",
        text=text,
    )


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeOpenAI, FakeAnthropic]]:
    async with FakeOpenAI() as openai_fake, FakeAnthropic() as anthropic_fake:
        yield openai_fake, anthropic_fake


async def test_a_streamed_answer_from_the_fake_reaches_the_channel_with_usage_logged_and_counted(
    tmp_path: Path, fakes: tuple[FakeOpenAI, FakeAnthropic]
) -> None:
    openai_fake, anthropic_fake = fakes
    openai_fake.always(
        "gpt-4o", Answer("Open Settings, then Export.", input_tokens=120, output_tokens=7, token_delay=0.04)
    )
    bots_dir = write_bot_models(tmp_path / "bots")
    settings = llm_settings(tmp_path, openai_fake, anthropic_fake, bots_dir=bots_dir)
    runtime = await Runtime.from_settings(settings)
    channel = RecordingChannel("api", can_stream=True)
    runtime.add_channel(channel)
    await runtime.start()
    try:
        with capture_logs() as logs:
            await runtime.bus.publish(envelope("How do I export my tasks?"))
            (reply,) = await channel.wait_for(1)
        daily_total = await runtime.limiter.add_tokens("support:api:conv-1", 0)
        saved = await runtime.history.after(SESSION, 0)
    finally:
        await runtime.close()
    assert reply.text == "Open Settings, then Export."
    # Four words 40 ms apart: shown as they come (how they group into ~50 ms pieces is test_coalesce's).
    assert 1 <= len(channel.fragments) <= 4
    assert "".join(f.text for f in channel.fragments) == reply.text
    (sent,) = openai_fake.requests
    assert sent.body["model"] == "gpt-4o"
    assert sent.body["messages"][0]["content"].startswith("You are the support assistant for Tasklane")
    assert sent.body["messages"][-1] == {"role": "user", "content": "How do I export my tasks?"}
    (turn,) = [e for e in logs if e["event"] == "turn"]
    assert (turn["provider"], turn["model"], turn["fallback_used"], turn["cache_hit"]) == (
        "openai",
        "gpt-4o",
        False,
        False,
    )
    assert (turn["tokens_in"], turn["tokens_out"], turn["tokens_estimated"]) == (120, 7, False)
    assert turn["ttft_ms"] is not None and 0 < turn["ttft_ms"] <= turn["latency_ms"]
    assert [(a["model"], a["outcome"]) for a in turn["attempts"]] == [("gpt-4o", "ok")]
    assert daily_total == 127  # the user's tokens today: what the provider reported
    assert [m.content for m in saved] == ["How do I export my tasks?", reply.text]


async def test_with_the_provider_down_the_user_gets_the_static_message(
    tmp_path: Path, fakes: tuple[FakeOpenAI, FakeAnthropic]
) -> None:
    openai_fake, _ = fakes
    openai_fake.always(None, Fail(503))
    bots_dir = write_bot_models(tmp_path / "bots")
    settings = llm_settings(tmp_path, openai_fake, None, bots_dir=bots_dir)
    runtime = await Runtime.from_settings(settings)
    channel = RecordingChannel("api")
    runtime.add_channel(channel)
    await runtime.start()
    try:
        with capture_logs() as logs:
            await runtime.bus.publish(envelope("Hello?"))
            (reply,) = await channel.wait_for(1)
    finally:
        await runtime.close()
    assert reply.text == DEFAULT_STATIC_FALLBACK
    (turn,) = [e for e in logs if e["event"] == "turn"]
    assert (turn["provider"], turn["fallback_used"], turn["llm_outcome"]) == ("static", True, "static")
    assert len(turn["attempts"]) >= 2 and {a["error"] for a in turn["attempts"]} == {"ProviderUnavailable"}
    assert "ProviderUnavailable" in turn["error"]


async def test_failed_attempts_and_fallbacks_are_counted_on_every_turn(
    tmp_path: Path, fakes: tuple[FakeOpenAI, FakeAnthropic]
) -> None:
    openai_fake, _ = fakes
    openai_fake.always(None, Fail(503))
    bots_dir = write_bot_models(tmp_path / "bots")
    runtime = await Runtime.from_settings(llm_settings(tmp_path, openai_fake, None, bots_dir=bots_dir))
    channel = RecordingChannel("api")
    runtime.add_channel(channel)
    await runtime.start()
    try:
        with capture_logs() as logs:
            # Two turns: the second finds the series the first created.
            await runtime.bus.publish(envelope("Hello?", "m1"))
            await channel.wait_for(1)
            await runtime.bus.publish(envelope("Anyone?", "m2"))
            await channel.wait_for(2)
    finally:
        await runtime.close()
    failed = [a for e in logs if e["event"] == "turn" for a in e["attempts"] if a.get("error")]
    assert len(failed) >= 4
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for metric in runtime.metrics.registry.collect()
        for s in metric.samples
        if s.name in ("relaybot_fallbacks_total", "relaybot_provider_errors_total")
    }
    assert samples[("relaybot_fallbacks_total", (("bot", "support"),))] == 2
    errors = {labels: value for (name, labels), value in samples.items() if name == "relaybot_provider_errors_total"}
    assert sum(errors.values()) == len(failed)
    assert all(dict(labels)["error"] == "ProviderUnavailable" for labels in errors)


async def pipeline_for(tmp_path: Path, factory: ChainFactory) -> tuple[Pipeline, SqlHistoryStore]:
    """The runtime's turn stages with the factory's chains in the generate stage."""
    sessions = MemorySessionStore(ttl_seconds=600)
    history = SqlHistoryStore.from_url(f"sqlite+aiosqlite:///{tmp_path / 'history.db'}")
    await history.create_schema()
    pipeline = Pipeline(
        stages=[
            LoadSessionStage(sessions, history),
            HistoryWindowStage(sessions),
            AssembleContextStage(),
            GenerateStage(chain_for=factory.for_bot),
        ],
        closing=[RecordStage(sessions, history), LogTurnStage()],
    )
    return pipeline, history


async def test_the_turn_log_shows_each_attempt_when_the_chain_falls_back(
    tmp_path: Path, fakes: tuple[FakeOpenAI, FakeAnthropic]
) -> None:
    openai_fake, anthropic_fake = fakes
    openai_fake.always("gpt-4o", Fail(500))
    openai_fake.always("gpt-4o-mini", Fail(429, retry_after=60))
    anthropic_fake.always("claude-haiku-4-5", Answer("Claude to the rescue.", input_tokens=50, output_tokens=4))
    bots_dir = write_bot_models(tmp_path / "bots")
    settings = llm_settings(tmp_path, openai_fake, anthropic_fake, bots_dir=bots_dir)
    bot = BotRegistry.from_dir(bots_dir, default="support").require("support")
    async with chain_factory(settings) as factory:
        pipeline, history = await pipeline_for(tmp_path, factory)
        try:
            with capture_logs() as logs:
                reply = await pipeline.run(envelope("Are you up?"), bot)
        finally:
            await history.close()
    assert reply.text == "Claude to the rescue."
    (turn,) = [e for e in logs if e["event"] == "turn"]
    assert (turn["provider"], turn["model"], turn["fallback_used"]) == ("anthropic", "claude-haiku-4-5", True)
    assert [(a["model"], a["outcome"], a.get("error"), a.get("status")) for a in turn["attempts"]] == [
        ("gpt-4o", "failed", "ProviderUnavailable", 500),
        ("gpt-4o", "failed", "ProviderUnavailable", 500),
        ("gpt-4o-mini", "failed", "ProviderRateLimited", 429),
        ("claude-haiku-4-5", "ok", None, None),
    ]
    assert (turn["tokens_in"], turn["tokens_out"]) == (50, 4)
    assert all(isinstance(a["latency_ms"], float) for a in turn["attempts"])


async def test_a_cut_stream_shows_one_answer_and_the_transcript_keeps_exactly_that(
    tmp_path: Path, fakes: tuple[FakeOpenAI, FakeAnthropic]
) -> None:
    openai_fake, anthropic_fake = fakes
    openai_fake.always("gpt-4o", Cut("First you open the menu and", after=4))
    bots_dir = write_bot_models(tmp_path / "bots")
    settings = llm_settings(tmp_path, openai_fake, anthropic_fake, bots_dir=bots_dir)
    bot = BotRegistry.from_dir(bots_dir, default="support").require("support")
    shown: list[str] = []

    async def stream(delta: str) -> None:
        shown.append(delta)

    async with chain_factory(settings) as factory:
        pipeline, history = await pipeline_for(tmp_path, factory)
        try:
            reply = await pipeline.run(envelope("How?"), bot, stream=stream)
            saved = await history.after(SESSION, 0)
        finally:
            await history.close()
    assert reply.text == f"First you open the\n\n{DEFAULT_INTERRUPTED_NOTICE}"
    assert "".join(shown) == f"First you open the \n\n{DEFAULT_INTERRUPTED_NOTICE}"
    assert openai_fake.count("gpt-4o-mini") == 0 and anthropic_fake.count() == 0
    assert saved[-1].content == reply.text


async def test_from_settings_the_runtime_answers_through_the_chain(
    tmp_path: Path, fakes: tuple[FakeOpenAI, FakeAnthropic]
) -> None:
    openai_fake, anthropic_fake = fakes
    openai_fake.always(None, Fail(500))
    anthropic_fake.always("claude-haiku-4-5", Answer("From Claude, via the runtime."))
    bots_dir = write_bot_models(tmp_path / "bots")
    runtime = await Runtime.from_settings(llm_settings(tmp_path, openai_fake, anthropic_fake, bots_dir=bots_dir))
    channel = RecordingChannel("api")
    runtime.add_channel(channel)
    await runtime.start()
    try:
        await runtime.bus.publish(envelope("Hello"))
        (reply,) = await channel.wait_for(1)
    finally:
        await runtime.close()
    assert reply.text == "From Claude, via the runtime."
    assert (openai_fake.count("gpt-4o"), openai_fake.count("gpt-4o-mini"), anthropic_fake.count()) == (2, 2, 1)
