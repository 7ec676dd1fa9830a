"""The fallback chain as the factory builds it, on the real SDKs against the fake servers.

The default chain is gpt-4o → gpt-4o-mini (both on the OpenAI fake) → claude-haiku-4-5 (on the
Anthropic fake) → the static message. Timeouts are shortened (tests/support/llm.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from core.bots import DEFAULT_STATIC_FALLBACK
from core.llm.base import LLMRequest, StreamChunk, estimated_usage
from core.llm.chain import DEFAULT_INTERRUPTED_NOTICE, Chain, Step
from core.llm.offline import OfflineProvider
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.scripted import Answer, Cut, Fail, Hang, Malformed, Reset, StreamError
from tests.support.llm import Deltas, ask, bot, chain_factory, llm_settings

MINI = Answer("The mini model answers.", input_tokens=30, output_tokens=4)
CLAUDE = Answer("Claude answers instead.", input_tokens=40, output_tokens=3)


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeOpenAI, FakeAnthropic]]:
    async with FakeOpenAI() as openai_fake, FakeAnthropic() as anthropic_fake:
        openai_fake.always("gpt-4o", Answer("The big model answers.", input_tokens=25, output_tokens=4))
        openai_fake.always("gpt-4o-mini", MINI)
        anthropic_fake.always("claude-haiku-4-5", CLAUDE)
        yield openai_fake, anthropic_fake


async def test_a_healthy_first_step_answers_with_the_providers_usage(
    tmp_path: Path, fakes: tuple[FakeOpenAI, FakeAnthropic]
) -> None:
    openai_fake, anthropic_fake = fakes
    async with chain_factory(llm_settings(tmp_path, openai_fake, anthropic_fake)) as factory:
        deltas = Deltas()
        result = await factory.for_bot(bot()).run(ask(), on_delta=deltas, user_key="u1")
    assert result.text == "The big model answers."
    assert deltas.shown == "The big model answers."
    assert (result.outcome, result.fallback_used, result.provider, result.model) == (
        "answered",
        False,
        "openai",
        "gpt-4o",
    )
    assert (result.usage.tokens_in, result.usage.tokens_out, result.usage.estimated) == (25, 4, False)
    assert [(a.model, a.outcome) for a in result.attempts] == [("gpt-4o", "ok")]
    assert result.ttft_ms is not None and 0 < result.ttft_ms <= result.latency_ms
    assert openai_fake.count() == 1 and anthropic_fake.count() == 0


@pytest.mark.parametrize(
    ("failure", "error"),
    [
        (Fail(500), "ProviderUnavailable"),
        (Fail(503), "ProviderUnavailable"),
        (Fail(429), "ProviderRateLimited"),
        (Hang(), "ProviderTimeout"),
        (Reset(), "ProviderUnavailable"),
        (StreamError("server_error"), "ProviderUnavailable"),
    ],
)
async def test_a_failure_that_can_heal_is_retried_once_then_the_next_step_answers(
    tmp_path: Path, fakes: tuple[FakeOpenAI, FakeAnthropic], failure: Fail | Hang | Reset | StreamError, error: str
) -> None:
    openai_fake, anthropic_fake = fakes
    openai_fake.always("gpt-4o", failure)
    async with chain_factory(llm_settings(tmp_path, openai_fake, anthropic_fake)) as factory:
        result = await factory.for_bot(bot()).run(ask(), user_key="u1")
    assert result.text == MINI.text
    assert (result.outcome, result.fallback_used, result.model) == ("answered", True, "gpt-4o-mini")
    assert [(a.model, a.outcome, a.error) for a in result.attempts] == [
        ("gpt-4o", "failed", error),
        ("gpt-4o", "failed", error),
        ("gpt-4o-mini", "ok", None),
    ]
    assert all(a.latency_ms > 0 for a in result.attempts)
    assert openai_fake.count("gpt-4o") == 2 and openai_fake.count("gpt-4o-mini") == 1
    # Only the answer's tokens: the failures produced none.
    assert (result.usage.tokens_in, result.usage.tokens_out) == (30, 4)


@pytest.mark.parametrize(
    ("failure", "error"),
    [
        (Fail(400), "ProviderRejected"),
        (Fail(401), "ProviderRejected"),
        (Fail(404), "ProviderRejected"),
        (Malformed(), "ProviderBadResponse"),
    ],
)
async def test_a_failure_that_will_not_heal_moves_on_at_once(
    tmp_path: Path, fakes: tuple[FakeOpenAI, FakeAnthropic], failure: Fail | Malformed, error: str
) -> None:
    openai_fake, anthropic_fake = fakes
    openai_fake.always("gpt-4o", failure)
    async with chain_factory(llm_settings(tmp_path, openai_fake, anthropic_fake)) as factory:
        result = await factory.for_bot(bot()).run(ask(), user_key="u1")
    assert (result.text, result.fallback_used) == (MINI.text, True)
    assert [(a.model, a.error) for a in result.attempts] == [("gpt-4o", error), ("gpt-4o-mini", None)]
    assert openai_fake.count("gpt-4o") == 1


async def test_a_revoked_openai_key_falls_through_to_anthropic(
    tmp_path: Path, fakes: tuple[FakeOpenAI, FakeAnthropic]
) -> None:
    openai_fake, anthropic_fake = fakes
    openai_fake.api_key = "sk-the-real-one"  # ours no longer matches: 401 on every OpenAI model
    async with chain_factory(llm_settings(tmp_path, openai_fake, anthropic_fake)) as factory:
        with capture_logs() as logs:
            result = await factory.for_bot(bot()).run(ask(), user_key="u1")
    assert (result.text, result.provider, result.fallback_used) == (CLAUDE.text, "anthropic", True)
    assert [a.status for a in result.attempts] == [401, 401, None]
    assert (result.usage.tokens_in, result.usage.tokens_out) == (40, 3)
    failed = [e for e in logs if e["event"] == "llm_attempt_failed"]
    assert len(failed) == 2 and all("OPENAI_API_KEY" in e["detail"] for e in failed)


async def test_retry_after_within_the_limit_is_honoured_on_the_same_step(
    tmp_path: Path, fakes: tuple[FakeOpenAI, FakeAnthropic]
) -> None:
    openai_fake, anthropic_fake = fakes
    openai_fake.queue("gpt-4o", Fail(429, retry_after_ms=200))
    async with chain_factory(llm_settings(tmp_path, openai_fake, anthropic_fake)) as factory:
        result = await factory.for_bot(bot()).run(ask(), user_key="u1")
    assert (result.model, result.fallback_used) == ("gpt-4o", False)
    assert [(a.outcome, a.retry_after) for a in result.attempts] == [("failed", 0.2), ("ok", None)]
    first, second = openai_fake.requests
    assert second.at - first.at >= 0.2


async def test_a_retry_after_longer_than_the_user_should_wait_moves_on_at_once(
    tmp_path: Path, fakes: tuple[FakeOpenAI, FakeAnthropic]
) -> None:
    openai_fake, anthropic_fake = fakes
    openai_fake.queue("gpt-4o", Fail(429, retry_after=30))
    async with chain_factory(llm_settings(tmp_path, openai_fake, anthropic_fake)) as factory:
        started = time.monotonic()
        result = await factory.for_bot(bot()).run(ask(), user_key="u1")
    # It moved on rather than sleeping the 30 s asked for (the bound is loose: a busy machine is slow, not 30 s slow).
    assert time.monotonic() - started < 15
    assert (result.model, result.fallback_used) == ("gpt-4o-mini", True)
    assert openai_fake.count("gpt-4o") == 1


async def test_anthropic_overloaded_falls_back_to_openai(
    tmp_path: Path, fakes: tuple[FakeOpenAI, FakeAnthropic]
) -> None:
    openai_fake, anthropic_fake = fakes
    anthropic_fake.always("claude-haiku-4-5", Fail(529))
    chain = ["anthropic:claude-haiku-4-5", "openai:gpt-4o-mini"]
    async with chain_factory(llm_settings(tmp_path, openai_fake, anthropic_fake)) as factory:
        result = await factory.for_bot(bot(chain, retries_per_step=0)).run(ask(), user_key="u1")
    assert (result.text, result.fallback_used) == (MINI.text, True)
    assert [(a.provider, a.status) for a in result.attempts] == [("anthropic", 529), ("openai", None)]


async def test_every_provider_down_gives_the_bots_static_message(
    tmp_path: Path, fakes: tuple[FakeOpenAI, FakeAnthropic]
) -> None:
    openai_fake, anthropic_fake = fakes
    openai_fake.always(None, Fail(503))
    openai_fake.always("gpt-4o", Fail(503))
    openai_fake.always("gpt-4o-mini", Fail(500))
    anthropic_fake.always("claude-haiku-4-5", Fail(529))
    async with chain_factory(llm_settings(tmp_path, openai_fake, anthropic_fake)) as factory:
        with capture_logs() as logs:
            result = await factory.for_bot(bot()).run(ask(), user_key="u1")
    assert result.text == DEFAULT_STATIC_FALLBACK
    assert (result.outcome, result.fallback_used, result.provider, result.model) == ("static", True, "static", None)
    assert [a.model for a in result.attempts] == ["gpt-4o"] * 2 + ["gpt-4o-mini"] * 2 + ["claude-haiku-4-5"] * 2
    assert (result.usage.tokens_in, result.usage.tokens_out) == (0, 0)
    assert result.error is not None and "ProviderUnavailable" in result.error
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["llm_chain_exhausted"]


async def test_the_latency_budget_caps_a_chain_of_hanging_providers(
    tmp_path: Path, fakes: tuple[FakeOpenAI, FakeAnthropic]
) -> None:
    openai_fake, anthropic_fake = fakes
    for model in ("gpt-4o", "gpt-4o-mini"):
        openai_fake.always(model, Hang())
    anthropic_fake.always("claude-haiku-4-5", Hang())
    async with chain_factory(llm_settings(tmp_path, openai_fake, anthropic_fake)) as factory:
        chain = factory.for_bot(bot(first_token_timeout_seconds=0.5, latency_budget_seconds=0.8, retries_per_step=0))
        started = time.monotonic()
        result = await chain.run(ask(), user_key="u1")
        elapsed = time.monotonic() - started
    assert result.outcome == "static"
    # gpt-4o has its 0.5 s, gpt-4o-mini the 0.3 s left of the budget, Claude nothing: 0.8 s, not 1.5 s.
    assert 0.75 <= elapsed < 1.4
    assert [(a.model, a.error) for a in result.attempts] == [
        ("gpt-4o", "ProviderTimeout"),
        ("gpt-4o-mini", "ProviderTimeout"),
    ]
    assert "no first token within 0.5 s" in (result.attempts[0].detail or "")
    assert "latency budget" in (result.attempts[1].detail or "")
    assert anthropic_fake.count() == 0


async def test_a_stream_cut_after_text_was_shown_finishes_with_a_notice_not_a_second_answer(
    tmp_path: Path, fakes: tuple[FakeOpenAI, FakeAnthropic]
) -> None:
    openai_fake, anthropic_fake = fakes
    openai_fake.always("gpt-4o", Cut("To export your tasks open Settings and then choose", after=5))
    async with chain_factory(llm_settings(tmp_path, openai_fake, anthropic_fake)) as factory:
        deltas = Deltas()
        with capture_logs() as logs:
            result = await factory.for_bot(bot()).run(ask(), on_delta=deltas, user_key="u1")
    shown = "To export your tasks open "
    assert deltas.parts[:5] == ["To ", "export ", "your ", "tasks ", "open "]
    assert deltas.shown == f"{shown}\n\n{DEFAULT_INTERRUPTED_NOTICE}"
    assert result.text == f"{shown.rstrip()}\n\n{DEFAULT_INTERRUPTED_NOTICE}"
    assert MINI.text not in deltas.shown and CLAUDE.text not in result.text
    assert (result.outcome, result.fallback_used, result.model) == ("interrupted", True, "gpt-4o")
    assert [(a.outcome, a.error) for a in result.attempts] == [("interrupted", "ProviderUnavailable")]
    # Not retried, and no other provider asked: one answer, finished deliberately.
    assert openai_fake.count() == 1 and anthropic_fake.count() == 0
    assert result.usage.estimated and result.usage.tokens_out > 0
    (event,) = [e for e in logs if e["event"] == "llm_stream_interrupted"]
    assert event["step"] == "openai:gpt-4o" and event["shown_chars"] == len(shown)


async def test_without_a_streaming_channel_a_cut_stream_is_discarded_and_the_next_step_answers(
    tmp_path: Path, fakes: tuple[FakeOpenAI, FakeAnthropic]
) -> None:
    openai_fake, anthropic_fake = fakes
    openai_fake.always("gpt-4o", Cut("Half of an answer that", after=3))
    async with chain_factory(llm_settings(tmp_path, openai_fake, anthropic_fake)) as factory:
        request = ask()
        result = await factory.for_bot(bot(retries_per_step=0)).run(request, user_key="u1")
    assert (result.text, result.outcome, result.fallback_used) == (MINI.text, "answered", True)
    # The cut attempt's tokens were spent too: estimated, and added to the answer's.
    partial = estimated_usage(request, "Half of an ")
    assert result.usage.tokens_in == partial.tokens_in + 30
    assert result.usage.tokens_out == partial.tokens_out + 4
    assert result.usage.estimated


async def test_an_open_breaker_sends_nothing_to_the_dead_provider_until_one_probe_after_the_cooldown(
    tmp_path: Path, fakes: tuple[FakeOpenAI, FakeAnthropic]
) -> None:
    openai_fake, anthropic_fake = fakes
    openai_fake.always("gpt-4o", Fail(500))
    config = bot(breaker_failures=2, breaker_cooldown_seconds=0.8)
    async with chain_factory(llm_settings(tmp_path, openai_fake, anthropic_fake)) as factory:
        chain = factory.for_bot(config)
        first = await chain.run(ask(), user_key="u1")  # two failures (try + retry): the circuit opens
        assert first.model == "gpt-4o-mini" and openai_fake.count("gpt-4o") == 2
        for _ in range(5):
            during = await chain.run(ask(), user_key="u1")
            assert during.model == "gpt-4o-mini" and during.fallback_used
            skipped = during.attempts[0]
            assert (skipped.model, skipped.outcome, skipped.error) == ("gpt-4o", "skipped", "CircuitOpen")
        assert openai_fake.count("gpt-4o") == 2  # nothing sent during the cooldown
        await asyncio.sleep(0.85)
        # Cooldown over: many turns at once, but only one probe reaches the provider; it fails
        # and the circuit opens again.
        results = await asyncio.gather(*(chain.run(ask(), user_key=f"u{i}") for i in range(6)))
        assert openai_fake.count("gpt-4o") == 3
        assert all(r.model == "gpt-4o-mini" for r in results)
        await asyncio.sleep(0.85)
        openai_fake.always("gpt-4o", Answer("Back again."))
        probe = await chain.run(ask(), user_key="u1")
        after = await chain.run(ask(), user_key="u1")
    assert (probe.text, probe.fallback_used) == ("Back again.", False)
    assert (after.text, [a.outcome for a in after.attempts]) == ("Back again.", ["ok"])
    assert openai_fake.count("gpt-4o") == 5


async def test_a_bad_request_does_not_open_the_breaker(tmp_path: Path, fakes: tuple[FakeOpenAI, FakeAnthropic]) -> None:
    openai_fake, anthropic_fake = fakes
    openai_fake.always("gpt-4o", Fail(400))
    async with chain_factory(llm_settings(tmp_path, openai_fake, anthropic_fake)) as factory:
        chain = factory.for_bot(bot(breaker_failures=1))
        for _ in range(3):
            await chain.run(ask(), user_key="u1")
    # Each turn asked gpt-4o again: a 400 is about the request, not the provider's health.
    assert openai_fake.count("gpt-4o") == 3


async def test_a_step_without_a_key_is_left_out_and_no_keys_at_all_means_offline(
    tmp_path: Path, fakes: tuple[FakeOpenAI, FakeAnthropic]
) -> None:
    openai_fake, anthropic_fake = fakes
    with capture_logs() as logs:
        async with chain_factory(llm_settings(tmp_path, None, anthropic_fake)) as factory:
            chain = factory.for_bot(bot())
            result = await chain.run(ask(), user_key="u1")
    assert [s.label for s in chain.steps] == ["anthropic:claude-haiku-4-5"]
    assert (result.text, result.fallback_used) == (CLAUDE.text, False)
    skipped = [e for e in logs if e["event"] == "llm_step_unavailable"]
    assert [e["step"] for e in skipped] == ["openai:gpt-4o", "openai:gpt-4o-mini"]
    assert all(e["reason"] == "no API key: set OPENAI_API_KEY" for e in skipped)

    async with chain_factory(llm_settings(tmp_path, None, None)) as factory:
        chain = factory.for_bot(bot())
        result = await chain.run(ask("How do I export my tasks?"), user_key="u1")
    assert [s.label for s in chain.steps] == ["offline:offline"]
    assert "offline mode" in result.text and "How do I export my tasks?" in result.text
    assert (result.provider, result.fallback_used, result.usage.estimated) == ("offline", False, True)
    assert openai_fake.count() == 0 and anthropic_fake.count() == 1  # only the first part's


async def test_a_bot_can_point_a_step_at_its_own_openai_compatible_server(
    tmp_path: Path, fakes: tuple[FakeOpenAI, FakeAnthropic]
) -> None:
    openai_fake, anthropic_fake = fakes
    async with FakeOpenAI() as local:
        local.always("llama3.1", Answer("Local model here.", usage=False))
        config = bot(
            ["local:llama3.1", "openai:gpt-4o-mini"],
            endpoints={
                "local": {"api": "openai", "base_url": local.base_url},
                "openai": {"api_key_env": "SUPPORT_OPENAI_KEY"},
            },
        )
        settings = llm_settings(tmp_path, openai_fake, anthropic_fake)
        async with chain_factory(settings, environ={"SUPPORT_OPENAI_KEY": "sk-bot-own"}) as factory:
            result = await factory.for_bot(config).run(ask(), user_key="u1")
            local.always("llama3.1", Fail(503))
            fallback = await factory.for_bot(config).run(ask(), user_key="u1")
    assert (result.text, result.provider, result.usage.estimated) == ("Local model here.", "local", True)
    assert local.requests[0].body["max_tokens"] == 1024  # compatible servers get the classic parameter
    assert (fallback.text, fallback.provider) == (MINI.text, "openai")
    assert openai_fake.requests[-1].headers["Authorization"] == "Bearer sk-bot-own"


class _BrokenProvider:
    """A provider that breaks the contract: its stream raises something other than ProviderError."""

    name = "broken"
    model = "broken-1"

    async def stream(self, request: LLMRequest) -> AsyncIterator[StreamChunk]:
        yield StreamChunk(text="")  # a first chunk, then the failure
        raise KeyError("choices")


async def test_a_provider_that_raises_anything_else_is_a_bad_response_and_the_next_step_answers() -> None:
    chain = Chain([Step(provider=_BrokenProvider()), Step(provider=OfflineProvider())], bot="support")
    with capture_logs() as logs:
        result = await chain.run(ask(), user_key="u1")
    assert (result.outcome, result.provider, result.fallback_used) == ("answered", "offline", True)
    assert [(a.provider, a.outcome, a.error) for a in result.attempts] == [
        ("broken", "failed", "ProviderBadResponse"),
        ("offline", "ok", None),
    ]
    assert "broken:broken-1 failed unexpectedly: KeyError" in (result.attempts[0].detail or "")
    [broken] = [e for e in logs if e["event"] == "llm_provider_contract_broken"]
    assert broken["step"] == "broken:broken-1" and broken["log_level"] == "error"


async def test_an_in_process_answer_is_not_streamed_in_pieces() -> None:
    # The offline answer exists whole at once: the final reply carries it, and no piece races it.
    chain = Chain([Step(provider=OfflineProvider())], bot="support")
    deltas = Deltas()
    result = await chain.run(ask(), on_delta=deltas, user_key="u1")
    assert result.outcome == "answered" and result.text
    assert deltas.shown == ""
