"""Tools: function calling on both providers (the real SDKs against the fakes' wire formats, streamed),
the chain's tool loop, and the executor's timeout, argument checks and log of every call."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from structlog.testing import capture_logs

from core.actions import Button
from core.bots import load_bot
from core.envelope import Envelope
from core.errors import ConfigError
from core.handlers import BotHandlers, load_handlers
from core.handlers.llm_tools import offer_with_answer
from core.llm.anthropic import AnthropicProvider, split_system
from core.llm.base import ChatMessage, LLMRequest, ToolCall, ToolSpec
from core.llm.factory import ChainFactory
from core.llm.openai import OpenAIProvider
from core.pipeline.turn import Turn
from core.tools import ToolContext, ToolError, ToolExecutor, ToolRegistry, WithButtons
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.scripted import Answer, Fail, ToolUse
from tests.fakes.ticketing_server import FakeTicketing
from tests.support.harness import REPO
from tests.support.llm import bot, chain_factory, llm_settings
from tests.support.servers import free_port

ORDER_TOOL = ToolSpec(
    name="lookup_order",
    description="Look up an order",
    parameters={"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
)


def ask_with_tools(text: str = "Where is order TL-10042?") -> LLMRequest:
    return LLMRequest(
        messages=(ChatMessage("system", "You are a helpful assistant."), ChatMessage("user", text)),
        tools=(ORDER_TOOL,),
    )


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeOpenAI, FakeAnthropic]]:
    async with FakeOpenAI() as openai_fake, FakeAnthropic() as anthropic_fake:
        yield openai_fake, anthropic_fake


# --- providers -------------------------------------------------------------------------------------


async def test_openai_streams_a_tool_call_in_pieces_and_gets_it_back_whole(
    fakes: tuple[FakeOpenAI, FakeAnthropic],
) -> None:
    openai_fake, _ = fakes
    openai_fake.queue(None, ToolUse(calls=(("lookup_order", {"order_id": "TL-10042"}),), text="Let me check."))
    client = openai.AsyncOpenAI(api_key="sk-test", base_url=openai_fake.base_url, max_retries=0)
    try:
        chunks = [c async for c in OpenAIProvider(client, model="gpt-4o").stream(ask_with_tools())]
    finally:
        await client.close()
    assert "".join(c.text for c in chunks) == "Let me check."
    (call,) = chunks[-1].tool_calls
    assert (call.id, call.name, dict(call.arguments)) == (
        "call_0_lookup_order",
        "lookup_order",
        {"order_id": "TL-10042"},
    )
    (sent,) = openai_fake.requests
    assert sent.body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "lookup_order",
                "description": "Look up an order",
                "parameters": ORDER_TOOL.parameters,
            },
        }
    ]
    assert sent.body["tool_choice"] == "auto" and sent.body["stream"] is True


async def test_anthropic_streams_tool_use_blocks_and_gets_them_back_whole(
    fakes: tuple[FakeOpenAI, FakeAnthropic],
) -> None:
    _, anthropic_fake = fakes
    calls = (("lookup_order", {"order_id": "TL-10042"}), ("lookup_order", {"order_id": "TL-10057"}))
    anthropic_fake.queue(None, ToolUse(calls=calls))
    client = anthropic.AsyncAnthropic(api_key="sk-ant-test", base_url=anthropic_fake.base_url, max_retries=0)
    try:
        chunks = [c async for c in AnthropicProvider(client, model="claude-haiku-4-5").stream(ask_with_tools())]
    finally:
        await client.close()
    assert [(c.id, dict(c.arguments)) for c in chunks[-1].tool_calls] == [
        ("toolu_0_lookup_order", {"order_id": "TL-10042"}),
        ("toolu_1_lookup_order", {"order_id": "TL-10057"}),
    ]
    assert chunks[-1].usage is not None and chunks[-1].usage.tokens_out == 9
    (sent,) = anthropic_fake.requests
    assert sent.body["tools"] == [
        {"name": "lookup_order", "description": "Look up an order", "input_schema": ORDER_TOOL.parameters}
    ]
    assert sent.body["tool_choice"] == {"type": "auto"}


def test_tool_turns_become_tool_use_and_tool_result_blocks_for_anthropic() -> None:
    call = ToolCall(id="call_1", name="lookup_order", arguments={"order_id": "TL-1"})
    _, turns = split_system(
        (
            ChatMessage("system", "S"),
            ChatMessage("user", "q"),
            ChatMessage("assistant", "Checking.", tool_calls=(call,)),
            ChatMessage("tool", '{"status": "paid"}', tool_call_id="call_1"),
        )
    )
    assert turns == [
        {"role": "user", "content": "q"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "call_1", "name": "lookup_order", "input": {"order_id": "TL-1"}},
            ],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": '{"status": "paid"}'}],
        },
    ]


# --- the chain's tool loop -------------------------------------------------------------------------


class Runs:
    """A tool runner that records the calls and answers from a table."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.calls: list[ToolCall] = []
        self._answers = answers

    async def __call__(self, call: ToolCall) -> str:
        self.calls.append(call)
        return json.dumps(self._answers[call.name])


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_the_chain_runs_the_tool_and_asks_the_model_again_with_its_result(
    tmp_path: Path, fakes: tuple[FakeOpenAI, FakeAnthropic], provider: str
) -> None:
    openai_fake, anthropic_fake = fakes
    fake = openai_fake if provider == "openai" else anthropic_fake
    model = "gpt-4o" if provider == "openai" else "claude-haiku-4-5"
    fake.queue(model, ToolUse(calls=(("lookup_order", {"order_id": "TL-10042"}),)), Answer("Order TL-10042 is paid."))
    runs = Runs({"lookup_order": {"status": "paid"}})
    async with _factory(tmp_path, fakes) as factory:
        chain = factory.for_bot(bot([f"{provider}:{model}"]))
        result = await chain.run_with_tools(ask_with_tools(), run_tool=runs, user_key="u")
    assert result.text == "Order TL-10042 is paid."
    assert (result.outcome, result.tools_run, result.provider) == ("answered", 1, provider)
    assert [c.name for c in runs.calls] == ["lookup_order"]
    assert len(result.attempts) == 2  # one per round
    _, second = fake.requests
    if provider == "openai":
        assistant, tool = second.body["messages"][-2:]
        assert assistant["tool_calls"][0]["function"] == {
            "name": "lookup_order",
            "arguments": '{"order_id": "TL-10042"}',
        }
        assert tool == {"role": "tool", "tool_call_id": "call_0_lookup_order", "content": '{"status": "paid"}'}
    else:
        assistant, results = second.body["messages"][-2:]
        assert assistant["content"][-1]["type"] == "tool_use"
        assert results["content"][0] == {
            "type": "tool_result",
            "tool_use_id": "toolu_0_lookup_order",
            "content": '{"status": "paid"}',
        }
    assert result.usage.tokens_in == 30 + 21  # both rounds counted


async def test_a_provider_failing_mid_loop_falls_back_with_the_tool_turns_in_the_other_format(
    tmp_path: Path, fakes: tuple[FakeOpenAI, FakeAnthropic]
) -> None:
    openai_fake, anthropic_fake = fakes
    openai_fake.queue("gpt-4o", ToolUse(calls=(("lookup_order", {"order_id": "TL-10042"}),)))
    openai_fake.always("gpt-4o", Fail(500))
    anthropic_fake.queue("claude-haiku-4-5", Answer("It is paid."))
    async with _factory(tmp_path, fakes) as factory:
        chain = factory.for_bot(bot(["openai:gpt-4o", "anthropic:claude-haiku-4-5"], retries_per_step=0))
        result = await chain.run_with_tools(
            ask_with_tools(), run_tool=Runs({"lookup_order": {"status": "paid"}}), user_key="u"
        )
    assert (result.text, result.provider, result.fallback_used) == ("It is paid.", "anthropic", True)
    (sent,) = anthropic_fake.requests
    kinds = [b["type"] for m in sent.body["messages"] if isinstance(m["content"], list) for b in m["content"]]
    assert kinds == ["tool_use", "tool_result"]


async def test_the_last_round_forbids_more_calls_and_a_model_that_keeps_calling_gets_the_static_message(
    tmp_path: Path, fakes: tuple[FakeOpenAI, FakeAnthropic]
) -> None:
    openai_fake, _ = fakes
    openai_fake.always("gpt-4o", ToolUse(calls=(("lookup_order", {"order_id": "TL-1"}),)))
    runs = Runs({"lookup_order": {"status": "paid"}})
    async with _factory(tmp_path, fakes) as factory:
        chain = factory.for_bot(bot(["openai:gpt-4o"]))
        result = await chain.run_with_tools(ask_with_tools(), run_tool=runs, max_rounds=2, user_key="u")
    assert [r.body["tool_choice"] for r in openai_fake.requests] == ["auto", "auto", "none"]
    assert len(runs.calls) == 2
    assert result.outcome == "static" and result.fallback_used


async def test_text_before_a_tool_call_stays_in_the_reply_and_the_stream(
    tmp_path: Path, fakes: tuple[FakeOpenAI, FakeAnthropic]
) -> None:
    openai_fake, _ = fakes
    openai_fake.queue(
        "gpt-4o", ToolUse(calls=(("lookup_order", {"order_id": "TL-1"}),), text="Let me look."), Answer("It is paid.")
    )
    shown: list[str] = []

    async def sink(text: str) -> None:
        shown.append(text)

    async with _factory(tmp_path, fakes) as factory:
        chain = factory.for_bot(bot(["openai:gpt-4o"]))
        result = await chain.run_with_tools(
            ask_with_tools(), run_tool=Runs({"lookup_order": {}}), on_delta=sink, user_key="u"
        )
    assert result.text == "Let me look.\n\nIt is paid."
    assert "".join(shown) == result.text


async def test_requests_that_offer_tools_are_never_answered_from_the_cache(
    tmp_path: Path, fakes: tuple[FakeOpenAI, FakeAnthropic]
) -> None:
    openai_fake, _ = fakes
    runs = Runs({"lookup_order": {"status": "paid"}})
    async with _factory(tmp_path, fakes) as factory:
        chain = factory.for_bot(bot(["openai:gpt-4o"], cache_ttl_seconds=60))
        for _ in range(2):
            openai_fake.queue("gpt-4o", ToolUse(calls=(("lookup_order", {"order_id": "TL-1"}),)), Answer("Paid."))
            result = await chain.run_with_tools(ask_with_tools(), run_tool=runs, user_key="u")
            assert (result.text, result.cache_hit) == ("Paid.", False)
        without_tools = LLMRequest(messages=ask_with_tools().messages)
        plain = [await chain.run(without_tools, user_key="u") for _ in range(2)]
    assert len(runs.calls) == 2  # the tool acted both times
    assert [r.cache_hit for r in plain] == [False, True]  # without tools the cache works as before


def _factory(tmp_path: Path, fakes: tuple[FakeOpenAI, FakeAnthropic]) -> AbstractAsyncContextManager[ChainFactory]:
    return chain_factory(llm_settings(tmp_path, *fakes))


# --- the executor ----------------------------------------------------------------------------------


@pytest.fixture
async def executor() -> AsyncIterator[ToolExecutor]:
    tools = ToolExecutor(timeout_seconds=5)
    yield tools
    await tools.aclose()


def context(tools: ToolExecutor, tmp_path: Path, **settings: str) -> ToolContext:
    return ToolContext(
        bot="support",
        session_id="support:api:c1",
        user_id="api:c1",
        channel="api",
        request_id="env-1",
        bot_dir=REPO / "bots" / "support",
        data_dir=tmp_path,
        settings=settings,
        http=tools.http,
    )


def toy_tools() -> BotHandlers:
    handlers = BotHandlers()

    @handlers.tool(description="slow", parameters={"type": "object", "properties": {}})
    async def slow(ctx: ToolContext) -> str:
        await asyncio.sleep(30)
        return "never"

    @handlers.tool(description="crashes")
    async def crash(ctx: ToolContext) -> str:
        raise RuntimeError("secret internals")

    @handlers.tool(description="refuses")
    async def refuse(ctx: ToolContext) -> str:
        raise ToolError("no such thing")

    @handlers.tool(
        description="adds",
        parameters={
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    )
    async def add(ctx: ToolContext, a: int, b: int) -> int:
        return a + b

    return handlers


async def test_every_way_a_tool_can_fail_becomes_an_outcome_and_each_call_is_logged(
    tmp_path: Path, executor: ToolExecutor
) -> None:
    registry = toy_tools().tools
    ctx = context(executor, tmp_path)
    with capture_logs() as logs:
        ok = await executor.call(registry, "add", {"a": 2, "b": 3}, context=ctx)
        slow = await executor.call(registry, "slow", {}, context=ctx, timeout_seconds=0.2)
        crash = await executor.call(registry, "crash", {}, context=ctx)
        refuse = await executor.call(registry, "refuse", {}, context=ctx)
        invalid = await executor.call(registry, "add", {"a": "two"}, context=ctx)
        unknown = await executor.call(registry, "fly", {}, context=ctx)
    assert (ok.outcome, ok.output, ok.for_model()) == ("ok", 5, "5")
    assert slow.outcome == "timeout" and "0.2 s" in (slow.error or "")
    assert crash.outcome == "error" and "secret" not in (crash.error or "")  # internals never reach the model
    assert (refuse.outcome, refuse.error) == ("error", "no such thing")
    assert json.loads(refuse.for_model()) == {"error": "no such thing"}
    assert invalid.outcome == "invalid_arguments" and "'two' is not of type 'integer'" in (invalid.error or "")
    assert "required" in (invalid.error or "")
    assert unknown.outcome == "unknown_tool"
    events = [e for e in logs if e["event"] == "tool_call"]
    assert [(e["tool"], e["outcome"]) for e in events] == [
        ("add", "ok"),
        ("slow", "timeout"),
        ("crash", "error"),
        ("refuse", "error"),
        ("add", "invalid_arguments"),
        ("fly", "unknown_tool"),
    ]
    assert all(e["latency_ms"] >= 0 and e["session_id"] == "support:api:c1" for e in events)
    assert next(e for e in events if e["tool"] == "slow")["latency_ms"] >= 200


def test_a_tool_with_a_bad_schema_or_a_twice_used_name_is_refused_at_load() -> None:
    handlers = BotHandlers()
    with pytest.raises(ConfigError, match="JSON schema"):

        @handlers.tool(description="x", parameters={"type": "object", "properties": {"a": {"type": "nonsense"}}})
        async def bad(ctx: ToolContext, a: str) -> str:
            return a

    with pytest.raises(ConfigError, match="async"):
        handlers.tool(description="x")(lambda ctx: None)  # type: ignore[arg-type, return-value]
    registry = ToolRegistry()
    assert len(registry) == 0


# --- the example bot's tools ---------------------------------------------------------------------


async def test_create_ticket_posts_to_the_webhook_once_per_message_even_when_retried(
    tmp_path: Path, executor: ToolExecutor
) -> None:
    tools = load_handlers(load_bot(REPO / "bots" / "support")).tools
    args = {"subject": "Cancellation request", "description": "too expensive", "category": "cancellation"}
    async with FakeTicketing() as ticketing:
        ctx = context(executor, tmp_path, ticket_webhook_url=ticketing.url)
        first = await executor.call(tools, "create_ticket", args, context=ctx)
        again = await executor.call(tools, "create_ticket", args, context=ctx)  # the same message, redelivered
        ticketing.fail(503)
        down = await executor.call(tools, "create_ticket", {**args, "description": "another"}, context=ctx)
    assert first.ok and first.output == {"ticket_id": "T-1001"}
    assert again.output == {"ticket_id": "T-1001"}
    assert len(ticketing.tickets) == 1 and ticketing.keys[0] == ticketing.keys[1]
    assert ticketing.tickets[0]["user_id"] == "api:c1" and ticketing.tickets[0]["category"] == "cancellation"
    assert (down.outcome, down.error) == ("error", "the ticketing service answered 503")


async def test_create_ticket_without_a_webhook_records_locally_and_an_unreachable_one_is_an_error(
    tmp_path: Path, executor: ToolExecutor
) -> None:
    tools = load_handlers(load_bot(REPO / "bots" / "support")).tools
    args = {"subject": "Bug", "description": "it broke", "category": "technical"}
    local = await executor.call(tools, "create_ticket", args, context=context(executor, tmp_path))
    assert local.ok and local.output["recorded"] == "locally"
    (line,) = (tmp_path / "tickets.jsonl").read_text().splitlines()
    assert json.loads(line)["description"] == "it broke"
    ctx = context(executor, tmp_path, ticket_webhook_url=f"http://127.0.0.1:{free_port()}/tickets")  # nothing there
    down = await executor.call(tools, "create_ticket", args, context=ctx)
    assert down.outcome == "error" and "could not be reached" in (down.error or "")


async def test_lookup_order_reads_the_demo_orders(tmp_path: Path, executor: ToolExecutor) -> None:
    tools = load_handlers(load_bot(REPO / "bots" / "support")).tools
    ctx = context(executor, tmp_path)
    found = await executor.call(tools, "lookup_order", {"order_id": "tl10057"}, context=ctx)
    missing = await executor.call(tools, "lookup_order", {"order_id": "TL-99999"}, context=ctx)
    assert found.ok and found.output["status"] == "payment_failed"
    assert missing.outcome == "error" and "no order 'TL-99999'" in (missing.error or "")


# --- tools that offer buttons ------------------------------------------------------------------------


async def test_a_tool_offers_buttons_with_its_result_and_they_join_the_answers_within_the_limit(
    tmp_path: Path, executor: ToolExecutor
) -> None:
    handlers = BotHandlers()

    @handlers.tool(description="a menu", parameters={"type": "object", "properties": {}})
    async def menu(ctx: ToolContext) -> WithButtons:
        return WithButtons({"items": 4}, buttons=[{"id": f"m{n}", "label": f"Item {n}"} for n in range(4)])

    @handlers.tool(description="a bad button", parameters={"type": "object", "properties": {}})
    async def broken(ctx: ToolContext) -> WithButtons:
        return WithButtons(1, buttons=[{"id": "not an id", "label": "x"}])

    ctx = context(executor, tmp_path)
    result = await executor.call(handlers.tools, "menu", {}, context=ctx, caller="llm")
    # The model reads the result and what the user is shown, so its answer can point at the buttons.
    assert (result.outcome, result.output) == ("ok", {"items": 4})
    assert json.loads(result.for_model()) == {
        "result": {"items": 4},
        "buttons_shown_to_user": ["Item 0", "Item 1", "Item 2", "Item 3"],
    }
    assert result.to_log()["buttons"] == ["m0", "m1", "m2", "m3"]
    bad = await executor.call(handlers.tools, "broken", {}, context=ctx)
    assert bad.outcome == "error" and "InvalidAction" in (bad.error or "") and bad.buttons == ()

    # With what a handler offered first: a repeated id once, nothing beyond the reply's ten buttons.
    envelope = Envelope.create(
        bot="support", channel="api", channel_message_id="m1", conversation_id="c1", user_id="api:c1", text="menu"
    )
    turn = Turn(envelope=envelope, bot=bot())
    turn.offer_actions = (*(Button(id=f"h{n}", label=f"Handler {n}") for n in range(7)), Button("m0", "Item 0"))
    dropped = offer_with_answer(turn, result)
    assert [b.id for b in turn.offer_actions] == [*(f"h{n}" for n in range(7)), "m0", "m1", "m2"]
    assert dropped == ["m3"]
    turn.answer("Here is the menu.", actions=turn.offer_actions, card=turn.offer_card)  # a valid offer
