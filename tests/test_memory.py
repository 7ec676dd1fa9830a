"""Memory of user facts: extraction (local and by a scripted LLM), storage, replacement, use in the
prompt, the memory commands, and that all of it happens after the reply, never before it.

End-to-end tests run the real runtime (bus, worker, pipeline, SQLite history) with a recording
channel; LLM tests aim the real OpenAI SDK at the fake server in tests/fakes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from core.bots import BotConfig
from core.envelope import Envelope, Reply
from core.errors import StoreError
from core.memory import facts as facts_module
from core.memory.commands import MemoryCommand, parse_command
from core.memory.facts import ExtractedFact, LocalFactExtractor
from core.memory.llm import FACTS_SCHEMA, parse_facts
from core.pipeline.pipeline import Pipeline
from core.pipeline.turn import Turn
from core.runtime import Runtime
from core.settings import Settings
from core.stores.base import HistoryStore
from core.stores.sql import SqlHistoryStore
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.scripted import Answer, Fail
from tests.support.harness import make_settings
from tests.support.llm import llm_settings, write_bot_models
from tests.support.recording_channel import RecordingChannel

BOT = "support"

# --------------------------------------------------------------------------------------------------
# The local extractor


FACT_STATEMENTS: list[tuple[str, dict[str, str]]] = [
    ("My name is Alice", {"name": "Alice"}),
    ("my name is alice", {"name": "Alice"}),
    ("Hi! You can call me Jean-Luc Picard.", {"name": "Jean-Luc Picard"}),
    ("I'm on the Pro plan", {"plan": "Pro"}),
    ("My name is Alice and I am on the Team plan", {"name": "Alice", "plan": "Team"}),
    ("we're on the business plan since May", {"plan": "Business"}),
    ("My subscription is Enterprise.", {"plan": "Enterprise"}),
    ("I'm based in Tokyo", {"location": "Tokyo"}),
    ("I live in New York, USA and work remotely", {"location": "New York, USA"}),
    ("My email is Alice.Smith@Example.com.", {"email": "alice.smith@example.com"}),
    ("reach me at bob+tasks@example.org please", {"email": "bob+tasks@example.org"}),
    ("My phone number is +1 (555) 123-4567", {"phone": "+1 (555) 123-4567"}),
    ("text me at 0612345678", {"phone": "0612345678"}),
    ("My order number is #a-12345", {"order_number": "A-12345"}),
    ("Where is order 98765?", {"order_number": "98765"}),
    # Statements of change: the new value (stored under the same key, so it replaces the old one).
    ("Actually I moved to Lisbon.", {"location": "Lisbon"}),
    ("We've just relocated to Lyon, France", {"location": "Lyon, France"}),
    ("I now live in Rome", {"location": "Rome"}),
    ("I upgraded to Pro.", {"plan": "Pro"}),
    ("we switched to the Business plan last week", {"plan": "Business"}),
    ("my new email is New@Example.com", {"email": "new@example.com"}),
    ("My new phone number is 555 123 4567", {"phone": "555 123 4567"}),
    ("Actually, call me Bob.", {"name": "Bob"}),
    (
        "Hello, my name is Alice, I\u2019m based in Lyon, France. I'm on the Team+ plan; my email is a@b.co",
        {"name": "Alice", "location": "Lyon, France", "plan": "Team+", "email": "a@b.co"},
    ),
]


@pytest.mark.parametrize(("text", "expected"), FACT_STATEMENTS)
def test_local_extractor_finds_the_common_facts(text: str, expected: dict[str, str]) -> None:
    found = {f.key: f.value for f in LocalFactExtractor().extract_now(text)}

    assert found == expected


def test_every_pattern_is_tried_on_every_text_it_could_match() -> None:
    """The extractor skips a pattern unless the text holds a word of its gate (most messages state
    no fact); a gate that missed a spelling would drop that fact silently."""
    found_texts = [text for text, _ in FACT_STATEMENTS]
    # Case and the letters re.IGNORECASE equates with ASCII ones (dotless i, long s, Kelvin sign).
    variants = [
        v
        for text in found_texts
        for v in (
            text,
            text.upper(),
            text.swapcase(),
            text.replace("i", "\u0131"),
            text.replace("s", "\u017f"),
            text.replace("n", "N").replace("e", "E"),
            text.replace(" ", "\t"),
        )
    ]
    tried = 0
    for text in variants:
        for key, gate, pattern in facts_module._PATTERNS:
            if pattern.search(text):
                tried += 1
                assert not facts_module.gate_words(text).isdisjoint(gate), (key, text)
    assert tried > len(found_texts)
    # And the gate changes nothing the extractor finds, on the cases above and their variants.
    extractor = LocalFactExtractor()
    for text in variants:
        ungated = {}
        for key, _, pattern in facts_module._PATTERNS:
            if key not in ungated and (value := extractor._match(key, pattern, text)):
                ungated[key] = value[: facts_module.MAX_VALUE_CHARS]
        assert {f.key: f.value for f in extractor.extract_now(text)} == ungated, text


@pytest.mark.parametrize(
    "text",
    [
        "How do I export my tasks?",
        "I forgot my password",
        "I'm on the phone with my manager",
        "I'm on the team that runs billing",
        "I'm based in the office most days",
        "I use Chrome",
        "I have a question about the Business plan",
        "Please send the invoice to bob@example.com",
        "What is the Pro plan?",
        "my name is not important",
        "The order is late",
        "I moved to a new house",
        "I upgraded to Windows 11",
        "I switched to Chrome",
    ],
)
def test_local_extractor_takes_nothing_that_is_not_a_statement_about_the_user(text: str) -> None:
    assert LocalFactExtractor().extract_now(text) == []


def test_an_llm_answer_is_read_only_in_the_agreed_json_shape() -> None:
    fenced = '```json\n{"facts": [{"key": "Company", "value": " Initech "}, {"key": "plan", "value": "Pro"}]}\n```'

    assert parse_facts(fenced) == [ExtractedFact("company", "Initech"), ExtractedFact("plan", "Pro")]
    assert parse_facts('{"facts": []}') == []
    # Keys are normalised to snake_case; items that cannot be are dropped, not the whole answer.
    assert parse_facts('{"facts": [{"key": "Order Number", "value": "A1"}, {"key": "???", "value": "x"}]}') == [
        ExtractedFact("order_number", "A1")
    ]
    for bad in ("Sure! The user is called Alice.", '{"name": "Alice"}', '{"facts": [{"key": "name"}]}', "{"):
        with pytest.raises(ValueError):
            parse_facts(bad)


# --------------------------------------------------------------------------------------------------
# Memory commands


@pytest.mark.parametrize(
    ("text", "command"),
    [
        ("What do you remember about me?", MemoryCommand("recall")),
        ("what do you know about me", MemoryCommand("recall")),
        ("Hey, can you tell me what you remember?", MemoryCommand("recall")),
        ("What information do you have on me?", MemoryCommand("recall")),
        ("Forget everything", MemoryCommand("forget_all")),
        ("please forget everything you know about me!", MemoryCommand("forget_all")),
        ("Forget that.", MemoryCommand("forget_last")),
        ("could you forget it?", MemoryCommand("forget_last")),
        ("Forget my phone number", MemoryCommand("forget_key", key="phone", named="phone number")),
        ("please forget my email address", MemoryCommand("forget_key", key="email", named="email address")),
        ("forget my company", MemoryCommand("forget_key", key="company", named="company")),
        ("forget my new email", MemoryCommand("forget_key", key="email", named="email")),
        # Natural phrasings map to the key the extractor stores the fact under.
        ("Forget where I live", MemoryCommand("forget_key", key="location", named="location")),
        ("please forget where I'm based", MemoryCommand("forget_key", key="location", named="location")),
        ("forget which plan we're on", MemoryCommand("forget_key", key="plan", named="plan")),
        ("forget what you call me", MemoryCommand("forget_key", key="name", named="name")),
        ("forget what my phone number is", MemoryCommand("forget_key", key="phone", named="phone")),
        # A question about one fact, named the same ways (answered only if that fact is stored).
        ("What's my name?", MemoryCommand("ask_key", key="name", named="name")),
        ("who am I", MemoryCommand("ask_key", key="name", named="name")),
        ("what is my email address?", MemoryCommand("ask_key", key="email", named="email address")),
        ("hey, what was my email again?", MemoryCommand("ask_key", key="email", named="email")),
        ("where do I live?", MemoryCommand("ask_key", key="location", named="location")),
        ("Where am I based?", MemoryCommand("ask_key", key="location", named="location")),
        ("do you know where I live?", MemoryCommand("ask_key", key="location", named="location")),
        ("which plan am I on?", MemoryCommand("ask_key", key="plan", named="plan")),
        ("what plan do we have", MemoryCommand("ask_key", key="plan", named="plan")),
        ("remind me which plan I'm on", MemoryCommand("ask_key", key="plan", named="plan")),
        ("can you tell me my phone number?", MemoryCommand("ask_key", key="phone", named="phone number")),
        ("what's my company?", MemoryCommand("ask_key", key="company", named="company")),
    ],
)
def test_memory_commands_are_recognised(text: str, command: MemoryCommand) -> None:
    assert parse_command(text) == command


@pytest.mark.parametrize(
    "text",
    [
        "I forgot my password",
        "Don't forget that I'm on the Pro plan",
        "What do you remember about the export feature?",
        "How do I make the app forget my login?",
        "Forget about the invoice, how do I export my tasks?",
        "What do you know about SSO?",
        "What is my plan's storage limit?",
        "what's my best option for 10 users?",
        "do you know the opening hours?",
        "where do I find my invoices?",
        "which plan should I choose?",
        "where am I?",
        "What's my plan? I'm on Pro I think",
    ],
)
def test_ordinary_messages_are_not_memory_commands(text: str) -> None:
    assert parse_command(text) is None


# --------------------------------------------------------------------------------------------------
# End to end, offline (the local extractor)


class SnapshotChannel(RecordingChannel):
    """Records, with each reply, the facts stored at the moment it was delivered."""

    def __init__(self, history: HistoryStore) -> None:
        super().__init__("api")
        self._history = history
        self.facts_at_delivery: list[dict[str, str]] = []

    async def deliver(self, reply: Reply) -> Any:
        if reply.final:
            envelope_user = reply.reply_to.split("|")[1]
            facts = await self._history.facts(reply.bot, envelope_user)
            self.facts_at_delivery.append({f.key: f.value for f in facts})
        return await super().deliver(reply)


def envelope(text: str, *, msg_id: str, user: str = "api:alice", conversation: str = "c1") -> Envelope:
    # reply_to carries the user too, so the snapshot channel can look their facts up.
    return Envelope.create(
        bot=BOT,
        channel="api",
        channel_message_id=msg_id,
        conversation_id=conversation,
        user_id=user,
        text=text,
        reply_to=f"{conversation}|{user}",
    )


async def stored_facts(settings: Settings, user: str = "api:alice") -> dict[str, str]:
    """The facts in the database, read after the runtime closed (so every follow-up has finished)."""
    store = SqlHistoryStore.from_url(settings.effective_database_url)
    try:
        return {f.key: f.value for f in await store.facts(BOT, user)}
    finally:
        await store.close()


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[tuple[Runtime, SnapshotChannel]]:
    runtime = await Runtime.from_settings(settings)
    channel = SnapshotChannel(runtime.history)
    runtime.add_channel(channel)
    await runtime.start()
    try:
        yield runtime, channel
    finally:
        await runtime.close()


class Conversation:
    def __init__(self, runtime: Runtime, channel: RecordingChannel) -> None:
        self.runtime, self.channel, self.sent = runtime, channel, 0

    async def say(self, text: str, *, user: str = "api:alice", conversation: str = "c1") -> Reply:
        self.sent += 1
        await self.runtime.bus.publish(envelope(text, msg_id=f"m{self.sent}", user=user, conversation=conversation))
        # Generous: the first turn of a process loads models (intents), and the machine is shared.
        replies = await self.channel.wait_for(self.sent, within=60)
        return replies[-1]


async def test_offline_facts_are_stored_after_the_reply_with_their_source_and_a_later_one_replaces_an_earlier(
    tmp_path: Path,
) -> None:
    async with running(make_settings(tmp_path)) as (runtime, channel):
        chat = Conversation(runtime, channel)
        with capture_logs() as logs:
            await chat.say("Hi, my name is Alice and I'm on the Basic plan.")
            await chat.say("We moved: I'm based in Tokyo now. Also I'm on the Pro plan since today.")
            await chat.say("How do I export my tasks?")

        facts = {f.key: f for f in await runtime.history.facts(BOT, "api:alice")}
        # Each reply went out before its own message's facts were stored (extraction is after the reply).
        assert channel.facts_at_delivery == [
            {},
            {"name": "Alice", "plan": "Basic"},
            {"name": "Alice", "plan": "Pro", "location": "Tokyo"},
        ]
    assert {k: f.value for k, f in facts.items()} == {"name": "Alice", "plan": "Pro", "location": "Tokyo"}
    assert facts["plan"].source == "We moved: I'm based in Tokyo now. Also I'm on the Pro plan since today."
    assert facts["name"].source == "Hi, my name is Alice and I'm on the Basic plan."
    assert facts["plan"].updated_at > facts["name"].updated_at
    stored = [e for e in logs if e["event"] == "memory_facts_stored"]
    assert [e["keys"] for e in stored] == [["name", "plan"], ["location", "plan"]]


async def test_offline_the_bot_says_what_it_remembers_and_forgets_on_request(tmp_path: Path) -> None:
    async with running(make_settings(tmp_path)) as (runtime, channel):
        chat = Conversation(runtime, channel)
        empty = await chat.say("What do you remember about me?")
        told = await chat.say("My name is Alice. My email is alice@example.com and my phone number is +44 20 7946 0958")
        await chat.say("I'm on the Pro plan")
        recall = await chat.say("what do you know about me?")
        forget_that = await chat.say("Forget that.")
        forget_email = await chat.say("Please forget my email address")
        forget_phone_again = await chat.say("forget my email")
        after = await chat.say("What do you remember?")
        everything = await chat.say("Forget everything")
        nothing_left = await chat.say("what do you remember about me")

        saved = await runtime.history.after(envelope("x", msg_id="x").session_id, 0)

    assert "I don't remember anything about you yet" in empty.text
    assert told.text == "Thanks, I'll remember that. What can I help you with?"  # offline, yet not an echo
    assert "offline mode" not in recall.text
    for line in ("**Name:** Alice", "**Email:** alice@example.com", "**Phone:** +44 20 7946 0958", "**Plan:** Pro"):
        assert line in recall.text
    assert forget_that.text == "Done: I've forgotten your plan (Pro)."
    assert forget_email.text == "Done: I've forgotten your email (alice@example.com)."
    assert forget_phone_again.text == "I don't have your email stored, so there's nothing to forget."
    assert "**Name:** Alice" in after.text and "Plan" not in after.text and "Email" not in after.text
    assert everything.text == "Done: I've forgotten everything I knew about you (2 facts)."
    assert "I don't remember anything about you yet" in nothing_left.text
    # The commands are part of the conversation like any other exchange.
    assert [m.content for m in saved if m.role == "user"][-1] == "what do you remember about me"


@pytest.mark.parametrize(
    ("before", "change", "key", "old", "new"),
    [
        ("I live in Paris", "Actually I moved to Lisbon.", "location", "Paris", "Lisbon"),
        ("I'm based in Tokyo", "I moved to Osaka last month", "location", "Tokyo", "Osaka"),
        ("I'm on the Basic plan", "I'm now on the Pro plan", "plan", "Basic", "Pro"),
        ("I'm on the Basic plan", "We upgraded to Business.", "plan", "Basic", "Business"),
        ("My email is a@example.com", "my new email is b@example.com", "email", "a@example.com", "b@example.com"),
        ("My name is Alice", "Actually, call me Al.", "name", "Alice", "Al"),
    ],
)
async def test_offline_a_statement_of_change_replaces_the_remembered_value(
    tmp_path: Path, before: str, change: str, key: str, old: str, new: str
) -> None:
    async with running(make_settings(tmp_path)) as (runtime, channel):
        chat = Conversation(runtime, channel)
        await chat.say(before)
        await chat.say(change)
        recall = await chat.say("What do you remember about me?")

    assert await stored_facts(make_settings(tmp_path)) == {key: new}
    assert f"{new} (you told me" in recall.text and f"{old} (you told me" not in recall.text


async def test_offline_a_question_about_one_fact_is_answered_from_the_store_and_an_unknown_one_as_any_question(
    tmp_path: Path,
) -> None:
    async with running(make_settings(tmp_path)) as (runtime, channel):
        chat = Conversation(runtime, channel)
        before = await chat.say("where do I live?")
        await chat.say("I live in Berlin")
        await chat.say("Actually I moved to Munich.")
        where = await chat.say("where do I live?")
        based = await chat.say("do you know where I'm based?")
        no_email = await chat.say("what's my email?")
        await chat.say("I'm on the Team plan")
        plan = await chat.say("which plan am I on?")
        await chat.say("forget where I live")
        forgotten = await chat.say("Where do I live?")
        turns = await runtime.history.after(envelope("x", msg_id="x").session_id, 0)

    # Not stored: the question goes on through the turn like any other (here, with no knowledge: the echo).
    for ordinary in (before, no_email, forgotten):
        assert ordinary.text.startswith("I received your message: "), ordinary.text
    assert where.text.startswith("You're based in Munich (you told me on ")
    assert where.text.endswith("If that has changed, just tell me.")
    assert "Berlin" not in where.text
    assert based.text == where.text
    assert plan.text.startswith("You're on the Team plan (you told me on ")
    # A question is not a statement: nothing was learned from it, and it is kept in the history.
    assert await stored_facts(make_settings(tmp_path)) == {"plan": "Team"}
    assert [m.content for m in turns if m.role == "user"].count("where do I live?") == 2


async def test_offline_forget_in_natural_words_forgets_that_fact_and_the_commands_still_work(tmp_path: Path) -> None:
    async with running(make_settings(tmp_path)) as (runtime, channel):
        chat = Conversation(runtime, channel)
        await chat.say("My name is Alice, I live in Paris and I'm on the Pro plan. My phone number is 0612345678")
        await chat.say("Actually I moved to Lisbon.")
        where = await chat.say("Forget where I live")
        plan = await chat.say("please forget which plan I'm on")
        again = await chat.say("forget where I live")
        recall = await chat.say("What do you remember about me?")
        phone = await chat.say("forget what my phone number is")
        last = await chat.say("what do you know about me?")

    assert where.text == "Done: I've forgotten your location (Lisbon)."
    assert plan.text == "Done: I've forgotten your plan (Pro)."
    assert again.text == "I don't have your location stored, so there's nothing to forget."
    assert "**Name:** Alice" in recall.text and "**Phone:** 0612345678" in recall.text
    assert "Location" not in recall.text and "Plan" not in recall.text
    assert phone.text == "Done: I've forgotten your phone (0612345678)."
    assert "**Name:** Alice" in last.text and "Phone" not in last.text
    assert await stored_facts(make_settings(tmp_path)) == {"name": "Alice"}


async def test_offline_facts_follow_the_user_into_a_new_session_but_not_to_another_user(tmp_path: Path) -> None:
    async with running(make_settings(tmp_path)) as (runtime, channel):
        chat = Conversation(runtime, channel)
        await chat.say("My name is Alice and I'm based in Tokyo", conversation="monday")
        # Facts are stored after the reply, under the conversation's lock; the next turn of the same
        # conversation runs only once that is done (another conversation would not wait for it).
        await chat.say("Thanks!", conversation="monday")
        later = await chat.say("What do you remember about me?", conversation="friday")
        other = await chat.say("What do you remember about me?", user="api:bob", conversation="friday-bob")

    assert (
        envelope("x", msg_id="x", conversation="monday").session_id
        != envelope("x", msg_id="x", conversation="friday").session_id
    )
    assert "**Name:** Alice" in later.text and "**Location:** Tokyo" in later.text
    assert "I don't remember anything about you yet" in other.text


async def test_facts_extraction_finishes_before_a_clean_shutdown_and_survives_a_restart(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    runtime = await Runtime.from_settings(settings)
    channel = SnapshotChannel(runtime.history)
    runtime.add_channel(channel)
    await runtime.start()
    try:
        await runtime.bus.publish(envelope("I'm based in Oslo", msg_id="m1"))
        await channel.wait_for(1)
    finally:
        await runtime.close()

    reopened = SqlHistoryStore.from_url(settings.effective_database_url)
    try:
        assert [(f.key, f.value) for f in await reopened.facts(BOT, "api:alice")] == [("location", "Oslo")]
    finally:
        await reopened.close()


# --------------------------------------------------------------------------------------------------
# End to end with a scripted LLM (the real OpenAI SDK against the fake server)


def facts_json(**facts: str) -> str:
    return json.dumps({"facts": [{"key": k, "value": v} for k, v in facts.items()]})


def system_of(request_body: dict[str, Any]) -> str:
    return str(request_body["messages"][0]["content"])


@pytest.fixture
async def openai_fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake


def scripted_settings(tmp_path: Path, fake: FakeOpenAI) -> Settings:
    bots = write_bot_models(tmp_path / "bots", chain=["openai:gpt-4o"])
    return llm_settings(tmp_path, fake, None, bots_dir=bots)


async def test_scripted_llm_extracts_facts_as_json_and_a_later_one_replaces_an_earlier(
    tmp_path: Path, openai_fake: FakeOpenAI
) -> None:
    openai_fake.queue(
        None,
        Answer("Nice to meet you, Alice."),
        Answer(facts_json(name="Alice", company="Initech", plan="Basic")),
        Answer("Congratulations on the upgrade."),
        Answer(facts_json(plan="Pro")),
        Answer("The Pro plan includes SSO, Alice."),
    )
    settings = scripted_settings(tmp_path, openai_fake)
    async with running(settings) as (runtime, channel):
        chat = Conversation(runtime, channel)
        await chat.say("Hi, I'm Alice from Initech, we have the basic subscription")
        await chat.say("Good news: we upgraded to the top tier today.")
        await chat.say("Does our plan include SSO?")
        # A question about one stored fact is answered from the store, without the model.
        asked = await chat.say("Which plan am I on?")
    facts = await stored_facts(settings)

    assert facts == {"name": "Alice", "company": "Initech", "plan": "Pro"}
    answer_1, extract_1, answer_2, extract_2, answer_3 = (r.body for r in openai_fake.requests)
    # Extraction: a separate, deterministic request that asks for the JSON shape and reads only the message.
    assert '{"facts": [{"key": "plan", "value": "Pro"}]}' in system_of(extract_1)
    assert extract_1["temperature"] == 0.0
    assert extract_1["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": FACTS_SCHEMA, "strict": True},
    }
    assert "response_format" not in answer_1  # answers stay free text
    assert extract_1["messages"][1] == {
        "role": "user",
        "content": "Hi, I'm Alice from Initech, we have the basic subscription",
    }
    assert "- plan: Basic" in system_of(extract_2)  # what is known already goes with it
    # The facts are in the system message of the turns that follow.
    assert "Known user facts" not in system_of(answer_1)
    assert "- Name: Alice\n- Plan: Basic" in system_of(answer_2)
    assert "- Company: Initech\n- Name: Alice\n- Plan: Pro" in system_of(answer_3)
    # Questions: no extraction request was made for either, and none at all for "Which plan am I on?".
    assert openai_fake.count() == 5
    assert asked.text.startswith("You're on the Pro plan (you told me on ")


async def test_scripted_llm_extraction_runs_after_the_reply_and_its_failure_falls_back_to_local(
    tmp_path: Path, openai_fake: FakeOpenAI
) -> None:
    openai_fake.queue(
        None,
        Answer("Hello Alice."),
        # Not JSON: unreadable. (No delay: the bot's 0.3 s first-token timeout would make a busy machine retry,
        # and a retry takes the next scripted answer.) Extraction after the reply shows in facts_at_delivery.
        Answer("Sure, here is what I found."),
        Answer("Noted."),
        Fail(500),
        Fail(500),
    )
    settings = scripted_settings(tmp_path, openai_fake)
    with capture_logs() as logs:
        async with running(settings) as (runtime, channel):
            chat = Conversation(runtime, channel)
            first = await chat.say("My name is Alice, I'm based in Tokyo.")
            second = await chat.say("My order number is 77812, please check it.")
    facts = await stored_facts(settings)

    assert first.text == "Hello Alice." and second.text == "Noted."
    assert channel.facts_at_delivery == [{}, {"name": "Alice", "location": "Tokyo"}]
    assert facts == {"name": "Alice", "location": "Tokyo", "order_number": "77812"}
    events = [e["event"] for e in logs if e["event"].startswith("memory_extraction")]
    assert events == ["memory_extraction_unreadable", "memory_extraction_failed"]


async def test_memory_commands_never_call_the_llm(tmp_path: Path, openai_fake: FakeOpenAI) -> None:
    openai_fake.queue(None, Answer("Hi Alice."), Answer(facts_json(name="Alice")))
    async with running(scripted_settings(tmp_path, openai_fake)) as (runtime, channel):
        chat = Conversation(runtime, channel)
        await chat.say("My name is Alice")
        recall = await chat.say("What do you remember about me?")
        forget = await chat.say("forget everything")

    assert openai_fake.count() == 2
    assert "**Name:** Alice" in recall.text
    assert forget.text == "Done: I've forgotten everything I knew about you (1 fact)."


@pytest.mark.parametrize("side_by_side", [True, False], ids=["side-by-side", "one-by-one"])
async def test_a_failing_follow_up_stage_is_logged_and_does_not_stop_the_others(side_by_side: bool) -> None:
    ran: list[str] = []

    async def broken(turn: Turn) -> None:
        raise StoreError("history database unreachable")

    async def fine(turn: Turn) -> None:
        ran.append(turn.envelope.text)

    pipeline = Pipeline(stages=[], closing=[], after=[broken, fine], after_side_by_side=lambda turn: side_by_side)
    bot = BotConfig(name=BOT)
    with capture_logs() as logs:
        reply, turn = await pipeline.run_turn(envelope("My name is Alice", msg_id="m1"), bot)
        await pipeline.follow_up(turn)

    assert reply.text == bot.models.static_fallback  # no stage answered: the static message
    assert ran == ["My name is Alice"]
    (failed,) = [e for e in logs if e["event"] == "turn_follow_up_failed"]
    assert failed["error"] == "StoreError: history database unreachable"


@pytest.mark.parametrize("side_by_side", [True, False], ids=["side-by-side", "one-by-one"])
async def test_follow_up_stages_overlap_only_when_they_may_wait_on_a_model(side_by_side: bool) -> None:
    events: list[str] = []

    def stage(name: str) -> Callable[[Turn], Awaitable[None]]:
        async def run(turn: Turn) -> None:
            events.append(f"{name} starts")
            await asyncio.sleep(0.01)  # a model call, in miniature
            events.append(f"{name} ends")

        return run

    pipeline = Pipeline(
        stages=[], closing=[], after=[stage("facts"), stage("summary")], after_side_by_side=lambda turn: side_by_side
    )
    _, turn = await pipeline.run_turn(envelope("hello", msg_id="m1"), BotConfig(name=BOT))
    await pipeline.follow_up(turn)

    if side_by_side:
        assert events[:2] == ["facts starts", "summary starts"]
    else:
        assert events == ["facts starts", "facts ends", "summary starts", "summary ends"]
