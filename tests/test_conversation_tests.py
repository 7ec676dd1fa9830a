"""`relaybot test`: the example bot's conversations pass, and the runner reports what it must.

The runner's own tests use a copy of the example bot without its knowledge folder (nothing to
ingest, so each run takes about a second); the example bot's suite runs as `make test` users run it,
as a process, knowledge and all.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from core.bots import load_bot
from core.cli import main
from core.intents.llm import classification_prompt
from core.llm.base import ChatMessage, LLMRequest
from core.llm.scripted import INTENT_PROMPT_OPENING, ScriptedProvider, request_kind
from core.memory.llm import FACTS_SCHEMA, SUMMARY_PROMPT
from core.stores.base import StoredMessage
from core.stores.sql import SqlHistoryStore
from tests.support.harness import REPO, write_bot

PASSING = """
tests:
  - name: order lookup
    turns:
      - say: Can you check order TL-10042?
        intent: billing
        handler: billing
        tool_called: {name: lookup_order, arguments: {order_id: TL-10042}}
        reply_contains: "**paid**"
  - name: cancelling, then no
    turns:
      - say: I'd like to cancel Tasklane
        intent: cancellation
      - say: no
        reply_contains: I've left your subscription as it is
"""

FAILING = """
tests:
  - name: expects the wrong intent
    turns:
      - say: hello
        reply_contains: offline mode
      - say: Can you check order TL-10042?
        intent: cancellation
        reply_contains: refunded
        tool_called: {name: lookup_order, arguments: {order_id: TL-99999}}
"""


@pytest.fixture
def bots_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The example bot without its knowledge, as the only bot; `relaybot test` runs on temp data."""
    bots = tmp_path / "bots"
    target = write_bot(bots, "support")
    shutil.rmtree(target / "knowledge")
    shutil.rmtree(target / "tests", ignore_errors=True)
    (target / "tests").mkdir()
    for name, value in {
        "RELAYBOT_BOTS_DIR": str(bots),
        "RELAYBOT_DATA_DIR": str(tmp_path / "data"),
        "RELAYBOT_DEFAULT_BOT": "support",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("REDIS_URL", "DATABASE_URL", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    return bots


def write_tests(bots_dir: Path, name: str, text: str) -> Path:
    path = bots_dir / "support" / "tests" / name
    path.write_text(text)
    return path


def test_a_passing_conversation_passes(bots_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_tests(bots_dir, "pass.yaml", PASSING)
    assert main(["test"]) == 0
    out = capsys.readouterr().out
    assert "PASS  pass.yaml::order lookup" in out
    assert "PASS  pass.yaml::cancelling, then no" in out
    assert "2 passed in" in out


def test_a_failing_expectation_fails_with_a_readable_diff(bots_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_tests(bots_dir, "fail.yaml", FAILING)
    assert main(["test"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  fail.yaml::expects the wrong intent" in out
    # Which turn (with its line), what the bot did, each expectation's expected and actual, and the reply.
    assert f"turn 2 ({path}:7), the user said: 'Can you check order TL-10042?'" in out
    assert 'the bot: intent=billing, handler=billing, tools=lookup_order(order_id="TL-10042") -> ok' in out
    assert "    intent:\n      expected: 'cancellation'\n      actual:   'billing'" in out
    assert "    reply_contains:\n      expected: 'refunded'\n      actual:   not in the reply" in out
    assert 'expected: lookup_order(order_id="TL-99999", ...)' in out
    assert "      | Order **TL-10042**: Team plan, 5 seats" in out
    assert "turn 1 (" not in out  # the turn that met its expectations is not in the diff
    assert "0 passed, 1 failed" in out


def test_a_handoff_expectation_that_does_not_hold_fails_with_the_state(
    bots_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_tests(
        bots_dir,
        "handoff-wrong.yaml",
        """
tests:
  - name: expects the bot to keep a conversation the user wants a person for
    turns:
      - say: let me talk to a real person
        handoff: bot
""",
    )
    assert main(["test", "-k", "expects the bot"]) == 1
    out = capsys.readouterr().out
    assert "    handoff:\n      expected: bot\n      actual:   pending_human" in out


def test_a_bad_file_is_a_clear_error_with_file_line_test_and_turn(
    bots_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_tests(
        bots_dir,
        "bad.yaml",
        """
tests:
  - name: typo
    channel: fax
    turns:
      - say: hello
        reply_contain: offline
      - say: hi
        handoff: maybe
      - say: hi
        click: topic.billing
""",
    )
    assert main(["test"]) == 2
    err = capsys.readouterr().err
    assert f"{path}:4: test 'typo': channel: unknown channel 'fax'" in err
    assert f"{path}:7: test 'typo', turn 1: unknown key 'reply_contain'" in err
    assert f"{path}:9: test 'typo', turn 2: handoff: Input should be 'bot', 'pending_human' or 'human'" in err
    assert "turn 3: a turn either says something (say: TEXT) or clicks a button (click: ACTION_ID)" in err


def test_a_click_on_a_button_the_previous_reply_did_not_offer_fails_the_conversation(
    bots_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_tests(
        bots_dir,
        "click.yaml",
        """
tests:
  - name: forged click
    turns:
      - say: /help
      - click: cancel.yes
""",
    )
    assert main(["test"]) == 1
    out = capsys.readouterr().out
    assert "click: 'cancel.yes' is not a button of the previous reply (it offered: none)" in out


def test_not_valid_yaml_names_the_line(bots_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_tests(bots_dir, "broken.yaml", "tests:\n  - name: x\n    turns: [\n")
    assert main(["test"]) == 2
    assert f"{path}:4: not valid YAML" in capsys.readouterr().err


def test_yes_and_no_are_what_the_user_said_not_booleans(bots_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_tests(
        bots_dir,
        "flow.yaml",
        """
tests:
  - name: yes stays yes
    turns:
      - say: I'd like to cancel Tasklane
      - say: yes
        reply_contains: why you're cancelling
""",
    )
    assert main(["test"]) == 0, capsys.readouterr().out


def test_k_selects_conversations_and_junit_lists_the_failures(
    bots_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_tests(bots_dir, "pass.yaml", PASSING)
    write_tests(bots_dir, "fail.yaml", FAILING)
    assert main(["test", "-k", "ORDER LOOKUP"]) == 0
    out = capsys.readouterr().out
    assert "pass.yaml::order lookup" in out and "cancelling" not in out and "fail.yaml" not in out

    junit = tmp_path / "reports" / "conversations.xml"
    assert main(["test", "--junit", str(junit)]) == 1
    root = ET.parse(junit).getroot()
    assert root.tag == "testsuites" and root.get("tests") == "3" and root.get("failures") == "1"
    cases = {case.get("name"): case for case in root.iter("testcase")}
    assert set(cases) == {"order lookup", "cancelling, then no", "expects the wrong intent"}
    failure = cases["expects the wrong intent"].find("failure")
    assert failure is not None and failure.get("message", "").startswith("turn 2: intent: expected 'cancellation'")
    assert "the reply was:" in (failure.text or "")
    assert cases["order lookup"].find("failure") is None

    assert main(["test", "-k", "nothing matches this"]) == 2
    assert "no conversation tests matching -k 'nothing matches this'" in capsys.readouterr().err


def test_a_model_script_that_runs_short_fails_the_conversation(
    bots_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_tests(
        bots_dir,
        "model.yaml",
        """
tests:
  - name: one answer for two questions
    model: ["Kanban boards: yes."]
    turns:
      - say: does Tasklane support Kanban boards?
        reply_contains: Kanban boards
      - say: can tasks have more than one assignee?
""",
    )
    assert main(["test"]) == 1
    out = capsys.readouterr().out
    assert "model script: the model was asked for answer #2, but the script has 1" in out


def test_script_steps_go_to_the_request_kind_they_answer() -> None:
    bot = load_bot(REPO / "bots" / "support")
    assert classification_prompt(bot).startswith(INTENT_PROMPT_OPENING)

    def request(system: str, **extra: object) -> LLMRequest:
        return LLMRequest(messages=(ChatMessage("system", system), ChatMessage("user", "hi")), **extra)  # type: ignore[arg-type]

    assert request_kind(request(classification_prompt(bot))) == "intent"
    assert request_kind(request(SUMMARY_PROMPT)) == "summary"
    assert request_kind(request("x", json_schema=FACTS_SCHEMA)) == "facts"
    assert request_kind(request(bot.system_prompt)) == "answer"
    assert ScriptedProvider.fixed("hi").name == "scripted"


def test_the_example_bot_ships_conversation_tests_that_pass(tmp_path: Path) -> None:
    """What `make test` runs: the example bot's suite, as a process, with its knowledge ingested."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL", "OPENAI_API_KEY")}
    env.update({"RELAYBOT_DATA_DIR": str(tmp_path / "data"), "HF_HUB_OFFLINE": "1"})
    junit = tmp_path / "support.xml"
    result = subprocess.run(
        [sys.executable, "-m", "core.cli", "test", "--bot", "support", "--junit", str(junit)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    root = ET.parse(junit).getroot()
    assert int(root.get("tests", "0")) >= 15 and root.get("failures") == "0"


async def test_record_turns_a_session_from_the_history_into_a_test_that_passes(
    bots_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    session_id = "support:web:w-123"
    start = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
    history = SqlHistoryStore.from_url(f"sqlite:///{tmp_path / 'data' / 'relaybot.db'}")
    await history.create_schema()
    exchanges = [
        ("/start", "Hi! I'm the Tasklane support assistant. Ask me about plans, billing, your account or a problem."),
        ("I'd like to cancel Tasklane", "I can help you cancel your **Tasklane** subscription. Just to be sure: ..."),
        ("no", "No problem, I've left your subscription as it is. Anything else I can help with?"),
    ]
    try:
        for n, (said, replied) in enumerate(exchanges):
            at = start + timedelta(seconds=30 * n)
            await history.append(
                session_id=session_id,
                bot="support",
                channel="web",
                user_id="web:visitor",
                messages=[
                    StoredMessage(role="user", content=said, created_at=at),
                    StoredMessage(role="assistant", content=replied, created_at=at + timedelta(seconds=1)),
                ],
            )
    finally:
        await history.close()

    assert await asyncio.to_thread(main, ["test", "record", "--session", session_id]) == 0
    written = bots_dir / "support" / "tests" / "recorded-web-w-123.yaml"
    assert f"wrote {written}: 3 turn(s)" in capsys.readouterr().out
    recorded = yaml.safe_load(written.read_text())["tests"][0]
    assert recorded["channel"] == "web" and recorded["now"] == "2025-03-03T09:00:00+00:00"
    assert recorded["turns"][1] == {
        "wait": "30s",
        "say": "I'd like to cancel Tasklane",
        "reply_contains": "I can help you cancel your Tasklane subscription.",
    }
    assert recorded["turns"][2]["say"] == "no"  # a string, not YAML's boolean
    # The bot still answers that way: the recorded conversation passes as a test.
    assert await asyncio.to_thread(main, ["test", str(written)]) == 0, capsys.readouterr().out

    assert await asyncio.to_thread(main, ["test", "record", "--session", session_id]) == 2
    assert "exists; choose another file with --out" in capsys.readouterr().err


CLOCKED = """
tests:
  - name: the date in the prompt follows the test's clock
    now: 2026-03-01T23:30:00Z
    model: ["Hello!", "Hello again!"]
    turns:
      - say: does Tasklane support Kanban boards?
        prompt_contains: "Today (UTC): 2026-03-01"
      - wait: 45m
        say: does it have a timeline view?
        prompt_contains: "Today (UTC): 2026-03-01"
"""


def test_the_prompt_date_is_the_tests_and_a_wrong_one_fails_showing_the_prompt(
    bots_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_tests(bots_dir, "clock.yaml", CLOCKED)
    assert main(["test"]) == 1
    out = capsys.readouterr().out
    # 45 minutes after 23:30 it is the next day: the second expectation fails, and says what the prompt said.
    assert f"turn 2 ({path}:9), the user said: 'does it have a timeline view?'" in out
    assert (
        "    prompt_contains:\n      expected: 'Today (UTC): 2026-03-01'\n"
        "      actual:   not in the system prompt: 'About the user you are talking to: / - Channel: web / "
        "- Today (UTC): 2026-03-02'"
    ) in out
    assert "turn 1 (" not in out

    path.write_text(CLOCKED.replace("- wait: 45m", "- wait: 25m"))
    assert main(["test"]) == 0, capsys.readouterr().out


def test_a_daily_token_budget_spent_resets_at_midnight_on_the_tests_clock(
    bots_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_tests(
        bots_dir,
        "budget.yaml",
        """
tests:
  - name: spent, refused, reset
    now: 2026-03-01T22:00:00Z
    model:
      - {answer: "Everything about exports.", tokens: 500000}
      - "Exports are under Settings."
    turns:
      - say: tell me everything about exports
        reply_contains: Everything about exports
      - say: one more thing
        reply_contains: "today's usage limit for this assistant. Please try again in about 2 hours"
      - at: 2026-03-02T00:00:00Z
        say: where are exports?
        reply_contains: Exports are under Settings
""",
    )
    assert main(["test"]) == 0, capsys.readouterr().out


def test_a_turn_set_before_the_previous_one_is_a_bad_file(bots_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    back = """
tests:
  - name: time goes back
    now: 2026-03-01T09:00:00Z
    turns:
      - say: hello
      - at: 2026-03-01T08:00:00Z
        say: hello again
"""
    path = write_tests(bots_dir, "back.yaml", back)
    assert main(["test"]) == 2
    assert (
        f"{path}:3: test 'time goes back': turn 2: at: 2026-03-01T08:00:00+00:00 is before the previous message "
        "(2026-03-01T09:00:00+00:00); the clock only goes forward"
    ) in capsys.readouterr().err

    path.write_text(back.replace("say: hello again", "wait: 1h\n        say: hello again"))
    assert main(["test"]) == 2
    assert (
        f"{path}:7: test 'time goes back', turn 2: a turn sets the clock (at: TIME) or moves it (wait: DURATION), "
        "not both"
    ) in capsys.readouterr().err
