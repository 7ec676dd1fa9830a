"""Intent handlers through the real runtime (bus → worker → pipeline → channel): the example bot's
cancellation flow across turns, its order lookup and handoff, a tool call by the model through the
fake OpenAI and Anthropic servers, and handlers.py loading errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from core.actions import Button
from core.bots import load_bot
from core.envelope import Envelope, Reply
from core.errors import ConfigError
from core.handlers import load_handlers
from core.runtime import Runtime
from core.settings import Settings
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.scripted import Answer, ToolUse
from tests.fakes.ticketing_server import FakeTicketing
from tests.support.harness import make_settings, write_bot
from tests.support.llm import FAST, llm_settings
from tests.support.recording_channel import RecordingChannel

SESSION = "support:api:conv-1"


def envelope(text: str, n: int) -> Envelope:
    return Envelope.create(
        bot="support",
        channel="api",
        channel_message_id=f"m{n}",
        conversation_id="conv-1",
        user_id="api:conv-1",
        user_name="Alice",
        text=text,
    )


class Conversation:
    """One user talking to the running runtime; keeps every reply and `turn` log event."""

    def __init__(self, runtime: Runtime, channel: RecordingChannel, logs: list[dict[str, Any]]) -> None:
        self.runtime = runtime
        self.channel = channel
        self._logs = logs
        self.sent = 0

    async def say(self, text: str) -> Reply:
        self.sent += 1
        await self.runtime.bus.publish(envelope(text, self.sent))
        # Generous: the first LLM turn imports the SDK, seconds on a busy machine. Never a speed test.
        return (await self.channel.wait_for(self.sent, within=60))[-1]

    @property
    def turns(self) -> list[dict[str, Any]]:
        return [e for e in self._logs if e["event"] == "turn"]


@asynccontextmanager
async def conversation(settings: Settings) -> AsyncIterator[Conversation]:
    runtime = await Runtime.from_settings(settings)
    channel = RecordingChannel("api")
    runtime.add_channel(channel)
    await runtime.start()
    try:
        with capture_logs() as logs:
            yield Conversation(runtime, channel, logs)
    finally:
        await runtime.close()


def offline_settings(tmp_path: Path, ticket_url: str = "", **tools: Any) -> Settings:
    bots_dir = tmp_path / "bots"
    write_bot(bots_dir, tools={"settings": {"ticket_webhook_url": ticket_url}, **tools})
    return make_settings(tmp_path, bots_dir=bots_dir)


@pytest.fixture
async def ticketing() -> AsyncIterator[FakeTicketing]:
    async with FakeTicketing() as fake:
        yield fake


async def test_slash_commands_go_to_their_handler_and_start_gets_the_welcome_with_topics(tmp_path: Path) -> None:
    settings = offline_settings(tmp_path)
    welcome = load_bot(settings.bots_dir / "support").welcome
    async with conversation(settings) as chat:
        start = await chat.say("/start")
        help_ = await chat.say("/help@tasklane_bot")
        other = await chat.say("/unknown thing")
        turns = chat.turns
    # The example bot's own /start: the welcome, with the topics as buttons
    assert welcome and start.text.startswith(welcome)
    assert [b.label for b in start.actions] == ["Billing", "A problem", "Cancel"]
    assert "order number like TL-10042" in help_.text
    assert (turns[1]["intent"], turns[1]["intent_method"]) == ("/help", "command")
    assert turns[2]["intent_method"] != "command"  # not a registered command: classified like any text
    assert "order number" not in other.text


def test_a_command_name_must_be_plain() -> None:
    from core.handlers import BotHandlers

    with pytest.raises(ConfigError, match="without the slash"):
        BotHandlers().command("/start")


async def test_cancellation_confirms_and_asks_why_across_turns_then_opens_a_ticket(
    tmp_path: Path, ticketing: FakeTicketing
) -> None:
    async with conversation(offline_settings(tmp_path, ticketing.url)) as chat:
        ask = await chat.say("I want to cancel my subscription")
        why = await chat.say("yes")
        done = await chat.say("Too expensive for a team of three")
        fields = (await chat.runtime.sessions.load(SESSION)).fields  # type: ignore[union-attr]
        after = await chat.say("thank you so much")
        turns = chat.turns
    assert "do you want to cancel it?" in ask.text
    assert "why you're cancelling" in why.text
    assert "ticket **T-1001**" in done.text
    (ticket,) = ticketing.tickets
    assert ticket["category"] == "cancellation" and "Too expensive for a team of three" in ticket["description"]
    assert ticket["user_id"] == "api:conv-1" and ticket["channel"] == "api"
    # The first message was classified; the two answers stayed with the flow unclassified.
    assert [(t["intent"], t["intent_method"], t["handler"]) for t in turns[:3]] == [
        ("cancellation", "local", "cancellation"),
        ("cancellation", "flow", "cancellation"),
        ("cancellation", "flow", "cancellation"),
    ]
    assert turns[0]["intent_confidence"] >= 0.25
    assert [t["provider"] for t in turns[:3]] == [None, None, None]  # answered by the handler: no LLM
    assert [(c["tool"], c["outcome"]) for c in turns[2]["tool_calls"]] == [("create_ticket", "ok")]
    assert turns[2]["tool_calls"][0]["latency_ms"] >= 0
    assert fields["flow"] == "" and not any(v for k, v in fields.items() if k.startswith("flow."))
    # The flow is over: the next message is classified afresh and answered by the LLM (offline here).
    assert (turns[3]["intent"], turns[3]["intent_method"], turns[3]["provider"]) == ("general", "local", "offline")
    assert "offline mode" in after.text


async def test_a_downgrade_goes_to_billing_not_to_the_cancellation_flow(tmp_path: Path) -> None:
    # Nearer the cancellation examples in meaning; the intent model trained on the bot's examples tells them
    # apart (the similarity alone started the cancellation flow: "do you want to cancel it?").
    async with conversation(offline_settings(tmp_path)) as chat:
        reply = await chat.say("downgrade my plan to Free")
        fields = (await chat.runtime.sessions.load(SESSION)).fields  # type: ignore[union-attr]
        (turn,) = chat.turns
    assert "cancel" not in reply.text.lower()
    assert (turn["intent"], turn["intent_method"], turn["handler"]) == ("billing", "local", "billing")
    assert not fields.get("flow")


async def test_the_flow_state_lives_in_the_redis_session_store_too(
    tmp_path: Path, ticketing: FakeTicketing, redis_url: str
) -> None:
    settings = offline_settings(tmp_path, ticketing.url).model_copy(update={"redis_url": redis_url})
    async with conversation(settings) as chat:
        await chat.say("I want to cancel my subscription")
        await chat.say("yes")
        mid_flow = (await chat.runtime.sessions.load(SESSION)).fields  # type: ignore[union-attr]
        done = await chat.say("we are closing the company")
    assert mid_flow == {"flow": "cancellation", "flow.step": "reason"}
    assert "ticket **T-1001**" in done.text and len(ticketing.tickets) == 1


async def test_the_llm_classifier_through_the_runtime_logs_its_intent_and_counts_its_tokens(tmp_path: Path) -> None:
    async with FakeOpenAI() as openai_fake:
        openai_fake.queue(
            "gpt-4o",
            Answer("technical", input_tokens=80, output_tokens=1),
            Answer("Try again.", input_tokens=200, output_tokens=3),
        )
        bots_dir = tmp_path / "bots"
        write_bot(bots_dir, models={**FAST, "chain": ["openai:gpt-4o"]}, intents={"classifier": "llm"})
        settings = llm_settings(tmp_path, openai_fake, None, bots_dir=bots_dir)
        async with conversation(settings) as chat:
            reply = await chat.say("nothing happens when I press save")
            (turn,) = chat.turns
        classify, answer = openai_fake.requests[:2]
    assert reply.text == "Try again."
    assert (turn["intent"], turn["intent_method"], turn["intent_confidence"]) == ("technical", "llm", 1.0)
    assert classify.body["temperature"] == 0 and "tools" not in classify.body
    assert answer.body["tools"]  # the answer, not the classification, is offered the tools
    assert (turn["tokens_in"], turn["tokens_out"]) == (280, 4)  # classification + answer


async def test_answering_no_cancels_nothing(tmp_path: Path, ticketing: FakeTicketing) -> None:
    async with conversation(offline_settings(tmp_path, ticketing.url)) as chat:
        await chat.say("please cancel my plan, we're moving to another tool")
        kept = await chat.say("no, keep it")
    assert "left your subscription as it is" in kept.text
    assert ticketing.requests == 0


async def test_something_else_instead_of_yes_or_no_leaves_the_flow_for_the_llm(tmp_path: Path) -> None:
    async with conversation(offline_settings(tmp_path)) as chat:
        await chat.say("I'd like to cancel Tasklane")
        other = await chat.say("how do I export my tasks first?")
        turns = chat.turns
    assert (turns[1]["intent_method"], turns[1]["provider"]) == ("flow", "offline")  # fell through to the model
    assert "offline mode" in other.text


async def test_a_failing_ticketing_service_gets_a_graceful_answer_and_ends_the_flow(
    tmp_path: Path, ticketing: FakeTicketing
) -> None:
    ticketing.fail(500)
    async with conversation(offline_settings(tmp_path, ticketing.url)) as chat:
        await chat.say("cancel my subscription please")
        await chat.say("yes")
        sorry = await chat.say("we found another tool")
        fields = (await chat.runtime.sessions.load(SESSION)).fields  # type: ignore[union-attr]
        turns = chat.turns
    assert "couldn't record your cancellation request" in sorry.text and "support@tasklane.example" in sorry.text
    assert [(c["tool"], c["outcome"], c["error"]) for c in turns[2]["tool_calls"]] == [
        ("create_ticket", "error", "the ticketing service answered 500")
    ]
    assert fields["flow"] == "" and ticketing.tickets == []


async def test_an_order_number_is_looked_up_and_answered_without_the_llm(tmp_path: Path) -> None:
    async with conversation(offline_settings(tmp_path)) as chat:
        found = await chat.say("what's the status of the payment for order TL-10057?")
        missing = await chat.say("I was billed for order TL-55555, what is it?")
        turns = chat.turns
    assert "**TL-10057**" in found.text and "payment failed" in found.text
    assert "couldn't find order **TL-55555**" in missing.text
    assert [(t["intent"], t["handler"], t["provider"]) for t in turns] == [
        ("billing", "billing", None),
        ("billing", "billing", None),
    ]
    assert [c["outcome"] for t in turns for c in t["tool_calls"]] == ["ok", "error"]


async def test_asking_for_a_person_hands_off_and_records_it(tmp_path: Path) -> None:
    settings = offline_settings(tmp_path)
    async with conversation(settings) as chat:
        reply = await chat.say("the app keeps crashing when I open a board, I want to talk to a human")
        turns = chat.turns
    assert "a person will follow up" in reply.text
    assert turns[0]["intent"] == "technical"
    (line,) = (settings.data_dir / "handoffs.jsonl").read_text().splitlines()
    assert json.loads(line)["user_id"] == "api:conv-1"


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_the_model_calls_a_declared_tool_through_each_provider(tmp_path: Path, provider: str) -> None:
    async with FakeOpenAI() as openai_fake, FakeAnthropic() as anthropic_fake:
        fake = openai_fake if provider == "openai" else anthropic_fake
        model = "gpt-4o" if provider == "openai" else "claude-haiku-4-5"
        fake.queue(
            model,
            ToolUse(calls=(("lookup_order", {"order_id": "TL-10042"}),)),
            Answer("Your order TL-10042 (Team plan) is paid."),
        )
        bots_dir = tmp_path / "bots"
        write_bot(bots_dir, models={**FAST, "chain": [f"{provider}:{model}"]})
        settings = llm_settings(
            tmp_path,
            openai_fake if provider == "openai" else None,
            anthropic_fake if provider == "anthropic" else None,
            bots_dir=bots_dir,
        )
        async with conversation(settings) as chat:
            reply = await chat.say("I have a question about my last payment")
            (turn,) = chat.turns
        with_tools = [r for r in fake.requests if r.body.get("tools")]
    assert reply.text == "Your order TL-10042 (Team plan) is paid."
    # billing's handler found no order number and fell through to the model, which called the tool.
    assert (turn["intent"], turn["handler"], turn["provider"]) == ("billing", "billing", provider)
    assert [(c["tool"], c["outcome"]) for c in turn["tool_calls"]] == [("lookup_order", "ok")]
    first, second = with_tools
    names = [t["function"]["name"] if provider == "openai" else t["name"] for t in first.body["tools"]]
    assert names == ["lookup_order", "create_ticket", "handoff_to_human"]
    last = second.body["messages"][-1]  # the tool's result went back, in the provider's format
    result = last["content"] if provider == "openai" else last["content"][0]["content"]
    # lookup_order offers a button with its result: the model is told what the user sees.
    assert json.loads(result)["result"]["plan"] == "Team"
    assert json.loads(result)["buttons_shown_to_user"] == ["Get the invoice"]
    assert reply.actions == (Button("order.invoice", "Get the invoice", value="TL-10042"),)
    assert turn["tokens_in"] > 0 and len(turn["attempts"]) == 2


# --- loading handlers.py ---------------------------------------------------------------------------


@pytest.fixture
def bot_dir(tmp_path: Path) -> Iterator[Path]:
    yield write_bot(tmp_path / "bots")


def test_handlers_py_must_define_bot_and_register_only_known_intents(bot_dir: Path) -> None:
    (bot_dir / "handlers.py").write_text("x = 1\n")
    with pytest.raises(ConfigError, match="must define `bot = BotHandlers"):
        load_handlers(load_bot(bot_dir))
    (bot_dir / "handlers.py").write_text(
        "from core.handlers import BotHandlers\nbot = BotHandlers()\n\n"
        "@bot.intent('refunds')\nasync def refunds(turn):\n    turn.reply('no')\n"
    )
    with pytest.raises(ConfigError, match=r"no \[intents.refunds\]"):
        load_handlers(load_bot(bot_dir))
    (bot_dir / "handlers.py").write_text("import nonexistent_module_xyz\n")
    with pytest.raises(ConfigError, match=r"handlers\.py failed to load: ModuleNotFoundError"):
        load_handlers(load_bot(bot_dir))


def test_tools_offered_to_the_model_must_be_declared(tmp_path: Path) -> None:
    bot_dir = write_bot(tmp_path / "bots", tools={"llm": ["lookup_order", "refund_everything"]})
    with pytest.raises(ConfigError, match="refund_everything"):
        load_handlers(load_bot(bot_dir))


async def test_a_handler_that_crashes_mid_flow_ends_the_flow_and_the_llm_answers(tmp_path: Path) -> None:
    settings = offline_settings(tmp_path, llm=[])  # this handlers.py declares no tools
    (settings.bots_dir / "support" / "handlers.py").write_text(
        "from core.handlers import BotHandlers\nbot = BotHandlers()\n\n"
        "@bot.intent('cancellation')\n"
        "async def cancellation(turn):\n"
        "    if turn.state.get('step'):\n"
        "        raise RuntimeError('bug in step two')\n"
        "    await turn.save_state(step='confirm')\n"
        "    turn.reply('Sure?')\n"
    )
    async with conversation(settings) as chat:
        await chat.say("I want to cancel my subscription")
        answer = await chat.say("yes")
        fields = (await chat.runtime.sessions.load(SESSION)).fields  # type: ignore[union-attr]
        turns = chat.turns
    assert "offline mode" in answer.text  # the turn still got an answer
    assert "bug in step two" in turns[1]["error"]
    assert fields["flow"] == ""


def test_an_action_handler_needs_a_plain_button_id() -> None:
    from core.handlers import BotHandlers

    with pytest.raises(ConfigError, match=r"@bot.action\('no spaces'\).*letters, digits"):
        BotHandlers().action("no spaces")


async def test_buttons_a_handler_offers_go_with_the_models_answer_when_it_falls_through(tmp_path: Path) -> None:
    settings = offline_settings(tmp_path, llm=[])  # this handlers.py declares no tools
    (settings.bots_dir / "support" / "handlers.py").write_text(
        "from core.handlers import BotHandlers, Button\nbot = BotHandlers()\n\n"
        "@bot.intent('cancellation')\n"
        "async def cancellation(turn):\n"
        "    turn.note('Offer to connect the user with a person.')\n"
        "    turn.offer([Button('handoff', 'Talk to a person')])\n"
    )
    async with conversation(settings) as chat:
        answer = await chat.say("I want to cancel my subscription")
    assert "offline mode" in answer.text  # the model (offline) answered
    assert [(b.id, b.label) for b in answer.actions] == [("handoff", "Talk to a person")]
