"""The OpenAI and Anthropic providers on the real SDKs, against the fake servers' wire formats."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import anthropic
import openai
import pytest

from core.errors import (
    ProviderBadResponse,
    ProviderError,
    ProviderRateLimited,
    ProviderRejected,
    ProviderUnavailable,
)
from core.llm.anthropic import AnthropicProvider, split_system
from core.llm.base import IN_PROCESS, ChatMessage, LLMProvider, LLMRequest, StreamChunk
from core.llm.offline import OfflineProvider
from core.llm.openai import OpenAIProvider
from core.llm.status import retry_after_seconds
from core.tokens import estimate_tokens
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.scripted import Answer, Behaviour, Cut, Fail, Malformed, Reset, ScriptedServer, StreamError
from tests.support.llm import ask


@pytest.fixture
async def openai_fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
async def anthropic_fake() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic() as fake:
        yield fake


@pytest.fixture
async def openai_client(openai_fake: FakeOpenAI) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(api_key="sk-test", base_url=openai_fake.base_url, max_retries=0)
    yield client
    await client.close()


@pytest.fixture
async def anthropic_client(anthropic_fake: FakeAnthropic) -> AsyncIterator[anthropic.AsyncAnthropic]:
    client = anthropic.AsyncAnthropic(api_key="sk-ant-test", base_url=anthropic_fake.base_url, max_retries=0)
    yield client
    await client.close()


async def collect(provider: LLMProvider, request: LLMRequest) -> tuple[str, list[StreamChunk]]:
    chunks = [chunk async for chunk in provider.stream(request)]
    return "".join(c.text for c in chunks), chunks


async def test_openai_streams_text_and_reads_usage_from_the_last_chunk(
    openai_fake: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    openai_fake.queue("gpt-4o", Answer("You can export tasks from Settings.", input_tokens=42, output_tokens=9))
    provider = OpenAIProvider(openai_client, model="gpt-4o")
    text, chunks = await collect(provider, ask())
    assert text == "You can export tasks from Settings."
    assert len([c for c in chunks if c.text]) == 6  # streamed word by word, not in one piece
    usage = chunks[-1].usage
    assert usage is not None and (usage.tokens_in, usage.tokens_out, usage.estimated) == (42, 9, False)
    (sent,) = openai_fake.requests
    assert sent.headers["Authorization"] == "Bearer sk-test"
    assert sent.body["stream"] is True and sent.body["stream_options"] == {"include_usage": True}
    assert sent.body["max_completion_tokens"] == 1024 and "max_tokens" not in sent.body
    assert sent.body["messages"] == [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "How do I export my tasks?"},
    ]
    assert openai_client.max_retries == 0


async def test_a_compatible_server_without_usage_gets_the_offline_estimate(
    openai_fake: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    openai_fake.queue(None, Answer("Four words of answer.", usage=False))
    provider = OpenAIProvider(openai_client, model="llama3.1", name="local", token_limit_param="max_tokens")
    request = ask()
    text, chunks = await collect(provider, request)
    usage = chunks[-1].usage
    assert usage is not None and usage.estimated
    assert usage.tokens_in == sum(estimate_tokens(m.content) for m in request.messages)
    assert usage.tokens_out == estimate_tokens(text)
    assert openai_fake.requests[0].body["max_tokens"] == 1024
    assert "max_completion_tokens" not in openai_fake.requests[0].body


async def test_anthropic_streams_text_with_usage_from_message_start_and_message_delta(
    anthropic_fake: FakeAnthropic, anthropic_client: anthropic.AsyncAnthropic
) -> None:
    anthropic_fake.queue("claude-haiku-4-5", Answer("Claude says hello.", input_tokens=33, output_tokens=5))
    provider = AnthropicProvider(anthropic_client, model="claude-haiku-4-5")
    request = LLMRequest(
        messages=(
            ChatMessage("system", "Be brief."),
            ChatMessage("assistant", "Welcome!"),  # a window may start on the bot's turn
            ChatMessage("user", "Hi"),
            ChatMessage("user", "Are you there?"),
        ),
        max_tokens=200,
    )
    text, chunks = await collect(provider, request)
    assert text == "Claude says hello."
    usage = chunks[-1].usage
    assert usage is not None and (usage.tokens_in, usage.tokens_out, usage.estimated) == (33, 5, False)
    (sent,) = anthropic_fake.requests
    assert sent.body["system"] == "Be brief."
    assert sent.body["messages"] == [{"role": "user", "content": "Hi\n\nAre you there?"}]
    assert sent.body["max_tokens"] == 200 and sent.body["stream"] is True
    key = sent.headers.get("x-api-key") or sent.headers.get("Authorization", "").removeprefix("Bearer ")
    assert key == "sk-ant-test"


def test_split_system_keeps_turns_alternating_and_starting_with_the_user() -> None:
    system, turns = split_system(
        (
            ChatMessage("system", "A"),
            ChatMessage("user", "q1"),
            ChatMessage("assistant", "a1"),
            ChatMessage("assistant", "a1b"),
            ChatMessage("user", "q2"),
        )
    )
    assert system == "A"
    assert turns == [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1\n\na1b"},
        {"role": "user", "content": "q2"},
    ]


def _cases() -> list[tuple[str, Behaviour, type[ProviderError], bool]]:
    """(fake, behaviour, expected error, text before the failure)."""
    return [
        ("openai", Fail(429, retry_after=7), ProviderRateLimited, False),
        ("openai", Fail(500), ProviderUnavailable, False),
        ("openai", Fail(503), ProviderUnavailable, False),
        ("openai", Fail(400), ProviderRejected, False),
        ("openai", Fail(401), ProviderRejected, False),
        ("openai", Reset(), ProviderUnavailable, False),
        ("openai", Malformed(after=0), ProviderBadResponse, False),
        ("openai", Cut(after=3), ProviderUnavailable, True),
        ("openai", StreamError("server_error", after=2), ProviderUnavailable, True),
        ("anthropic", Fail(429, retry_after_ms=1500), ProviderRateLimited, False),
        ("anthropic", Fail(529), ProviderUnavailable, False),
        ("anthropic", Fail(500), ProviderUnavailable, False),
        ("anthropic", Fail(400), ProviderRejected, False),
        ("anthropic", Fail(401), ProviderRejected, False),
        ("anthropic", Reset(), ProviderUnavailable, False),
        ("anthropic", Malformed(after=2), ProviderBadResponse, True),
        ("anthropic", Cut(after=3), ProviderUnavailable, True),
        ("anthropic", StreamError("overloaded_error", after=1), ProviderUnavailable, True),
    ]


@pytest.mark.parametrize(("fake_name", "behaviour", "expected", "text_first"), _cases())
async def test_every_failure_mode_becomes_a_typed_provider_error(
    fake_name: str,
    behaviour: Behaviour,
    expected: type[ProviderError],
    text_first: bool,
    openai_fake: FakeOpenAI,
    anthropic_fake: FakeAnthropic,
    openai_client: openai.AsyncOpenAI,
    anthropic_client: anthropic.AsyncAnthropic,
) -> None:
    fake: ScriptedServer
    provider: LLMProvider
    if fake_name == "openai":
        fake, provider = openai_fake, OpenAIProvider(openai_client, model="gpt-4o")
    else:
        fake, provider = anthropic_fake, AnthropicProvider(anthropic_client, model="claude-haiku-4-5")
    fake.queue(None, behaviour)
    received: list[str] = []
    with pytest.raises(ProviderError) as caught:
        async for chunk in provider.stream(ask()):
            received.append(chunk.text)
    assert type(caught.value) is expected, caught.value
    assert caught.value.provider == fake_name
    assert bool("".join(received)) is text_first
    assert fake.count() == 1  # the SDK's own retries are off: the chain decides
    if isinstance(behaviour, Fail):
        assert caught.value.status == behaviour.status
        if behaviour.retry_after is not None:
            assert caught.value.retry_after == behaviour.retry_after
        if behaviour.retry_after_ms is not None:
            assert caught.value.retry_after == behaviour.retry_after_ms / 1000
    if behaviour == Fail(401):
        assert "API_KEY" in str(caught.value)  # says which setting to check


async def test_openai_out_of_credit_is_not_retried(openai_fake: FakeOpenAI, openai_client: openai.AsyncOpenAI) -> None:
    # OpenAI answers 429 `insufficient_quota` when billing is exhausted: waiting will not help.
    openai_fake.queue(None, Fail(429, message="You exceeded your current quota", error_type="insufficient_quota"))
    with pytest.raises(ProviderRejected):
        await collect(OpenAIProvider(openai_client, model="gpt-4o"), ask())


def test_retry_after_is_read_in_milliseconds_seconds_or_as_a_date() -> None:
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_seconds({"Retry-After": "3"}) == 3.0
    now = datetime(2026, 1, 1, tzinfo=UTC)
    date = format_datetime(now + timedelta(seconds=20), usegmt=True)
    assert retry_after_seconds({"retry-after": date}, now=now.timestamp()) == 20.0
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


def test_the_offline_greeting_says_what_offline_mode_will_do() -> None:
    hello = (ChatMessage("user", "Hello!"),)
    with_knowledge = OfflineProvider().answer(LLMRequest(messages=hello, passages=()))
    # It answers from its knowledge, so it must not claim it cannot answer.
    assert "offline mode" in with_knowledge and "knowledge base" in with_knowledge
    assert "can't" not in with_knowledge and "cannot" not in with_knowledge
    without = OfflineProvider().answer(LLMRequest(messages=hello))
    assert "offline mode" in without and "OPENAI_API_KEY" in without


@pytest.mark.parametrize(
    ("text", "opening"),
    [
        ("bye", "Goodbye!"),
        ("ok, see you later!", "Goodbye!"),
        ("that's all", "Goodbye!"),
        ("Good night", "Goodbye!"),
        ("great", "All right. Is there anything else"),
        ("ok", "All right. Is there anything else"),
        ("perfect, thanks", "You're welcome!"),
    ],
)
def test_offline_small_talk_is_answered_in_kind_not_looked_up(text: str, opening: str) -> None:
    # With a knowledge base and nothing found for "bye", the answer was "I don't know that yet: I found
    # nothing about “bye”".
    answer = OfflineProvider().answer(LLMRequest(messages=(ChatMessage("user", text),), passages=()))
    assert answer.startswith(opening), answer
    assert "I don't know" not in answer


@pytest.mark.parametrize("text", ["help", "What can you do?", "who are you", "are you a bot?", "how can you help me?"])
def test_offline_asked_what_it_is_the_bot_introduces_itself_and_says_what_offline_mode_does(text: str) -> None:
    welcome = "Hi! I'm the Tasklane support assistant. Ask me about plans or billing."
    request = LLMRequest(messages=(ChatMessage("user", text),), passages=())
    answer = OfflineProvider(introduction=welcome).answer(request)
    assert answer.startswith(welcome + "\n\nI'm running in **offline mode**")
    assert "I don't know" not in answer
    # A bot with no welcome still says what offline mode does.
    assert OfflineProvider().answer(request).startswith("Hello! I'm running in **offline mode**")
    # And a request for help with something is a question like any other.
    about = LLMRequest(messages=(ChatMessage("user", "help me with billing"),), passages=())
    assert OfflineProvider(introduction=welcome).answer(about).startswith("I don't know that yet")


def test_offline_a_question_after_a_polite_word_is_still_looked_up() -> None:
    answer = OfflineProvider().answer(LLMRequest(messages=(ChatMessage("user", "ok, how do I export?"),), passages=()))
    assert answer.startswith("I don't know that yet")


def test_the_offline_provider_answers_without_ever_waiting() -> None:
    # It declares itself in process (core.llm.base.IN_PROCESS), so the chain arms no deadline for it:
    # every step of its stream must complete without suspending, or a hang would go unbounded.
    provider = OfflineProvider()
    assert getattr(provider, IN_PROCESS) is True
    stream = provider.stream(ask())
    chunks: list[StreamChunk] = []
    while True:
        step = anext(stream)
        try:
            step.send(None)
        except StopIteration as done:
            chunks.append(done.value)
            continue
        except StopAsyncIteration:
            break
        raise AssertionError("the offline provider's stream suspended: it waits on something")
    assert chunks[0].text and chunks[-1].usage is not None
    # Providers that wait on a network do not declare it.
    for remote in (OpenAIProvider, AnthropicProvider):
        assert not getattr(remote, IN_PROCESS, False)
