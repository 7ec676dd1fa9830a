"""The running summary: messages that leave the history window are folded into it (extractive
offline, by the bot's model when one is configured), it reaches the prompt, and the context stays
bounded however long the conversation grows.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine
from structlog.testing import capture_logs

from core.memory.summary import HEADER, LocalSummarizer, _gist, plan_fold, window
from core.runtime import Runtime
from core.settings import Settings
from core.stores.base import StoredMessage, Summary
from core.stores.sql import SqlHistoryStore
from core.tokens import estimate_tokens
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.scripted import Answer, Fail
from tests.support.harness import make_settings, write_bot
from tests.support.llm import FAST, llm_settings
from tests.test_memory import Conversation, envelope, running

SESSION = envelope("x", msg_id="x").session_id


def msg(seq: int, text: str | None = None, *, role: str | None = None, notice: bool = False) -> StoredMessage:
    return StoredMessage(
        role=role or ("user" if seq % 2 else "assistant"),  # type: ignore[arg-type]
        content=text or f"message {seq}",
        seq=seq,
        meta={"kind": "notice"} if notice else {},
        created_at=datetime(2025, 3, 1, tzinfo=UTC),
    )


# --------------------------------------------------------------------------------------------------
# The fold rule and the extractive summary


def test_nothing_is_folded_while_every_unsummarized_message_fits_the_window() -> None:
    messages = [msg(i) for i in range(1, 7)]

    assert plan_fold(messages, max_messages=6, token_budget=1000) is None
    assert plan_fold([], max_messages=6, token_budget=1000) is None
    assert plan_fold([msg(i) for i in range(1, 8)], max_messages=0, token_budget=1000) is None


def test_once_the_window_overflows_the_oldest_are_folded_down_to_half_of_it() -> None:
    messages = [msg(i) for i in range(1, 8)]

    plan = plan_fold(messages, max_messages=6, token_budget=1000)

    assert plan is not None
    assert [m.seq for m in plan.fold] == [1, 2, 3, 4]
    assert [m.seq for m in plan.keep] == [5, 6, 7]
    assert plan.through_seq == 4


def test_the_token_budget_overflows_the_window_too_and_notices_are_never_folded() -> None:
    long = "word " * 100  # about 130 tokens each
    messages = [msg(1, long), msg(2, long), msg(3, "ok", notice=True), msg(4, long), msg(5, long)]

    assert [m.seq for m in window(messages, max_messages=20, token_budget=300)] == [4, 5]
    plan = plan_fold(messages, max_messages=20, token_budget=300)

    assert plan is not None
    assert [m.seq for m in plan.fold] == [1, 2, 4]
    assert [m.seq for m in plan.keep] == [5]


def test_the_extractive_summary_keeps_the_gist_the_thread_and_its_budget() -> None:
    summarizer = LocalSummarizer(max_tokens=120)
    first = summarizer.fold(
        None,
        [
            msg(1, "My export to CSV fails with error 42. It started yesterday. Other text that is dropped."),
            msg(2, "Sorry to hear that. Try clearing the cache first. Then retry."),
            msg(3, "rate limited", notice=True),
        ],
    )
    assert first == (
        f"{HEADER}\n"
        "- The user said: “My export to CSV fails with error 42. It started yesterday.”\n"
        "- You answered: “Sorry to hear that.”"
    )

    text = first
    for i in range(4, 60):
        text = summarizer.fold(text, [msg(i, f"Question number {i} about topic {i} with some detail.")])
        assert estimate_tokens(text) <= 120

    lines = text.splitlines()
    assert lines[0] == HEADER
    assert lines[1] == "- The user said: “My export to CSV fails with error 42. It started yesterday.”"
    assert lines[2] == "- …"
    assert lines[-1] == "- The user said: “Question number 59 about topic 59 with some detail.”"


def test_an_llm_summary_is_kept_as_a_bullet_when_the_local_summarizer_takes_over() -> None:
    text = LocalSummarizer().fold(f"{HEADER}\nThe user cannot export to CSV.", [msg(5, "Still broken.")])

    assert text == f"{HEADER}\n- The user cannot export to CSV.\n- The user said: “Still broken.”"


# --------------------------------------------------------------------------------------------------
# End to end


def small_window_bot(tmp_path: Path, **models: Any) -> Path:
    bots = tmp_path / "bots"
    write_bot(
        bots,
        history={"max_messages": 6, "token_budget": 600},
        limits={"messages_per_minute": 100_000, "messages_per_hour": 100_000},
        models={**FAST, **models} if models else {},
    )
    return bots


@contextlib.contextmanager
def statements_reading(table: str) -> Iterator[list[str]]:
    """Every SELECT from `table` that any engine of this process runs meanwhile."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and f"FROM {table}" in statement:
            seen.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", record)


async def wait_for_summary(runtime: Runtime) -> None:
    """The fold runs after the reply is out: wait for it to store the summary."""
    for _ in range(200):
        if await runtime.history.summary(SESSION) is not None:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("no summary was stored")


async def read_summary(settings: Settings) -> Summary | None:
    store = SqlHistoryStore.from_url(settings.effective_database_url)
    try:
        return await store.summary(SESSION)
    finally:
        await store.close()


async def test_offline_the_summary_appears_once_history_passes_the_window(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, bots_dir=small_window_bot(tmp_path))
    async with running(settings) as (runtime, channel):
        chat = Conversation(runtime, channel)
        for i in range(3):
            await chat.say(f"Question {i}: how do I export project {i}?")
        # 6 messages: they all fit the window (6 messages, 600 tokens), so nothing is folded.
        assert await runtime.history.summary(SESSION) is None
        with statements_reading("messages") as reads:
            await chat.say("Fourth question about invoices.")
            await wait_for_summary(runtime)
        # The turn held every unsummarized message (its window and the two it stored): no read of the history.
        assert reads == []
    summary = await read_summary(settings)

    # 8 messages > 6: folded down to the newest 3, so the summary covers seq 1..5.
    assert summary is not None and summary.through_seq == 5
    assert summary.text.startswith(HEADER)
    assert "- The user said: “Question 0: how do I export project 0?”" in summary.text
    assert "- The user said: “Question 2: how do I export project 2?”" in summary.text
    assert "Fourth question" not in summary.text


@pytest.fixture
async def openai_fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake


async def test_scripted_llm_summarizes_and_the_prompt_carries_the_summary_instead_of_the_old_messages(
    tmp_path: Path, openai_fake: FakeOpenAI
) -> None:
    openai_fake.always("gpt-4o", Answer("An answer."))
    settings = llm_settings(tmp_path, openai_fake, None, bots_dir=small_window_bot(tmp_path, chain=["openai:gpt-4o"]))
    async with running(settings) as (runtime, channel):
        chat = Conversation(runtime, channel)
        for i in range(3):
            await chat.say(f"Question {i} about exports?")
        # The fourth turn makes 8 messages: after its reply the summary request folds 1..5.
        openai_fake.queue(None, Answer("An answer."), Answer("The user asked about exports 0 to 2."))
        await chat.say("Question 3 about exports?")
        await chat.say("Question 4 about exports?")
    summary = await read_summary(settings)

    requests = [r.body for r in openai_fake.requests]
    assert len(requests) == 6  # five answers and one summary; the questions asked for no extraction
    fold = requests[4]
    assert "running summary" in fold["messages"][0]["content"]
    assert fold["messages"][1]["content"] == (
        "Summary so far:\n(none yet)\n\nNew messages:\n"
        "User: Question 0 about exports?\nAssistant: An answer.\nUser: Question 1 about exports?\n"
        "Assistant: An answer.\nUser: Question 2 about exports?"
    )
    assert summary is not None and summary.through_seq == 5
    assert summary.text == f"{HEADER}\nThe user asked about exports 0 to 2."
    last = requests[5]["messages"]
    assert "Summary of the earlier conversation" in last[0]["content"]
    assert "The user asked about exports 0 to 2." in last[0]["content"]
    # Only what the summary does not cover follows it: seq 6..8, then the new message.
    assert [m["content"] for m in last[1:]] == [
        "An answer.",
        "Question 3 about exports?",
        "An answer.",
        "Question 4 about exports?",
    ]


async def test_a_failing_llm_summary_falls_back_to_the_extractive_one(tmp_path: Path, openai_fake: FakeOpenAI) -> None:
    openai_fake.always("gpt-4o", Answer("An answer."))
    settings = llm_settings(tmp_path, openai_fake, None, bots_dir=small_window_bot(tmp_path, chain=["openai:gpt-4o"]))
    with capture_logs() as logs:
        async with running(settings) as (runtime, channel):
            chat = Conversation(runtime, channel)
            for i in range(3):
                await chat.say(f"Question {i} about exports?")
            openai_fake.queue(None, Answer("An answer."), Fail(400), Fail(400))
            await chat.say("Question 3 about exports?")
    summary = await read_summary(settings)

    assert summary is not None and summary.through_seq == 5
    assert "- The user said: “Question 0 about exports?”" in summary.text
    assert [e["event"] for e in logs if e["event"].startswith("memory_summary")] == [
        "memory_summary_failed",
        "memory_summary_folded",
    ]


async def test_the_context_stays_bounded_over_a_long_conversation(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, bots_dir=small_window_bot(tmp_path))
    turns = 150
    with capture_logs() as logs:
        async with running(settings) as (runtime, channel):
            chat = Conversation(runtime, channel)
            for i in range(turns):
                await chat.say(f"Message {i}: my export of project {i} to CSV fails with error {i}, what now?")
    tokens_in = [e["tokens_in"] for e in logs if e["event"] == "turn"]
    whole_history = sum(estimate_tokens(m.content) for m in await _all_messages(settings))

    assert len(tokens_in) == turns
    # System prompt + message (turn 1), plus at most the window's budget and the summary's.
    bound = tokens_in[0] + 600 + LocalSummarizer().max_tokens + 100
    assert max(tokens_in) <= bound
    assert whole_history > 5 * max(tokens_in)  # what sending the whole history would have cost
    summary = await read_summary(settings)
    assert summary is not None and summary.through_seq > 2 * turns - 7


async def _all_messages(settings: Settings) -> list[StoredMessage]:
    store = SqlHistoryStore.from_url(settings.effective_database_url)
    try:
        return await store.after(SESSION, 0)
    finally:
        await store.close()


def _gist_of_the_whole_text(text: str, max_words: int, *, sentences: int) -> str:
    """The gist's definition, read from the whole text (the summarizer reads only its first words)."""
    flat = " ".join(text.replace("“", '"').replace("”", '"').split())
    first = " ".join(re.split(r"(?<=[.!?])\s+", flat)[:sentences])
    words = first.split()
    if len(words) > max_words:
        return " ".join(words[:max_words]).rstrip(",;:") + "…"
    return first


def test_a_bullet_reads_only_the_first_words_and_keeps_the_same_gist() -> None:
    rng = random.Random(7)
    pieces = [
        "word",
        "Longer",
        "x",
        "“quoted”",
        "end.",
        "ask?",
        "wow!",
        "a,",
        "b;",
        "c:",
        "…",
        "\n",
        "\t",
        "  ",
        "\u00a0",
    ]
    texts = ["", "One.", "Hello there. How are you? Fine!", "a " * 50, "No stop at all " * 12]
    texts += [" ".join(rng.choice(pieces) for _ in range(rng.randint(0, 90))) for _ in range(2000)]
    for text in texts:
        for max_words, sentences in ((40, 2), (20, 1), (3, 1), (1, 2)):
            expected = _gist_of_the_whole_text(text, max_words, sentences=sentences)
            assert _gist(text, max_words, sentences=sentences) == expected, (text, max_words, sentences)
