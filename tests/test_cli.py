"""The `relaybot` command as a user runs it: real processes, real stdin/stdout."""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import select
import shutil
import socket
import sqlite3
import struct
import subprocess
import sys
import termios
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyte
import pytest

from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.scripted import Answer
from tests.support.harness import REPO, write_bot


def relaybot(tmp_path: Path, *args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL", "OPENAI_API_KEY")}
    # The example bot's 15 documents take half a minute to read: only the test of that reads them.
    clean.update(
        {
            "RELAYBOT_DATA_DIR": str(tmp_path / "data"),
            "HF_HUB_OFFLINE": "1",
            "RELAYBOT_KNOWLEDGE__INGEST_ON_START": "false",
            **env,
        }
    )
    return subprocess.run(
        [sys.executable, "-m", "core.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=REPO,
        env=clean,
        timeout=60,
    )


def test_chat_answers_lines_from_stdin_and_remembers_the_conversation(tmp_path: Path) -> None:
    first = relaybot(tmp_path, "chat", stdin="hello\nHow do I reset my password?\n/quit\nnever sent\n")
    assert first.returncode == 0, first.stderr
    lines = [line for line in first.stdout.splitlines() if line.startswith("bot> ")]
    assert len(lines) == 2
    # The greeting: the bot's welcome, then a paragraph on offline mode.
    greeting = first.stdout.split("bot> ")[1]
    assert greeting.startswith("Hi! I'm the Tasklane support assistant.") and "offline mode" in greeting
    assert "How do I reset my password?" in first.stdout
    assert "never sent" not in first.stdout

    again = relaybot(tmp_path, "chat", stdin="thanks\n")
    assert again.returncode == 0, again.stderr
    assert "You're welcome" in again.stdout
    with sqlite3.connect(tmp_path / "data" / "relaybot.db") as db:
        (count,) = db.execute("select count(*) from messages").fetchone()
        sessions = {row[0] for row in db.execute("select distinct session_id from messages")}
    assert count == 6
    assert len(sessions) == 1 and next(iter(sessions)).startswith("support:cli:terminal:")


def _bot_knowing_only_its_mascot(tmp_path: Path, **sections: dict[str, Any]) -> Path:
    """The example bot with one document ("Our mascot": a purple owl named Tally); its bots dir."""
    bots = tmp_path / "bots"
    bot = write_bot(bots, **sections)
    shutil.rmtree(bot / "knowledge")
    (bot / "knowledge").mkdir()
    (bot / "knowledge" / "mascot.md").write_text(
        "---\ntitle: Our mascot\n---\n# The Tasklane mascot\n\nThe Tasklane mascot is a purple owl named Tally.\n"
    )
    return bots


def test_chat_reads_its_bots_documents_before_the_first_question_and_skips_them_when_unchanged(
    tmp_path: Path,
) -> None:
    bots = _bot_knowing_only_its_mascot(tmp_path)
    on = {"RELAYBOT_BOTS_DIR": str(bots), "RELAYBOT_KNOWLEDGE__INGEST_ON_START": "true"}
    first = relaybot(tmp_path, "chat", stdin="What is the name of the Tasklane mascot?\n", **on)
    assert first.returncode == 0, first.stderr
    assert "Tally" in first.stdout and "Our mascot" in first.stdout  # quoted, with its source
    assert "knowledge of 'support': " in first.stderr  # what was read, beside the conversation
    again = relaybot(tmp_path, "chat", stdin="What is the name of the Tasklane mascot?\n", **on)
    assert again.returncode == 0, again.stderr
    assert "Tally" in again.stdout and "knowledge of 'support'" not in again.stderr  # nothing new to read


def test_chat_shows_buttons_as_numbered_choices_and_a_number_or_a_label_clicks_them(tmp_path: Path) -> None:
    done = relaybot(tmp_path, "chat", stdin="/start\n3\nno, keep it\n")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[1] == "     [1] Billing  [2] A problem  [3] Cancel"
    assert "do you want to cancel it?" in lines[2] and lines[3] == "     [1] Yes, cancel it  [2] No, keep it"
    assert "I've left your subscription as it is" in lines[4] and len(lines) == 5  # no choices offered
    with sqlite3.connect(tmp_path / "data" / "relaybot.db") as db:
        query = "select content, json_extract(meta, '$.action') from messages where role = 'user' order by seq"
        said = db.execute(query)
        assert said.fetchall() == [("/start", None), ("Cancel", "topic.cancel"), ("No, keep it", "cancel.no")]


def test_an_unknown_bot_is_a_clear_configuration_error(tmp_path: Path) -> None:
    result = relaybot(tmp_path, "chat", "--bot", "nope")
    assert result.returncode == 2
    assert "no bot named 'nope'" in result.stderr


def test_a_broken_bot_file_names_the_file_and_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bots" / "support"
    bad.mkdir(parents=True)
    (bad / "bot.toml").write_text('name = "support"\n[limits]\nmessages_per_minute = "lots"\n')
    result = relaybot(tmp_path, "chat", RELAYBOT_BOTS_DIR=str(tmp_path / "bots"))
    assert result.returncode == 2
    assert "bot.toml" in result.stderr and "messages_per_minute" in result.stderr


def test_a_missing_bots_folder_says_how_to_fix_it(tmp_path: Path) -> None:
    result = relaybot(tmp_path, "run", "--port", "1", RELAYBOT_BOTS_DIR=str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert "RELAYBOT_BOTS_DIR" in result.stderr


def test_a_busy_port_is_one_line_and_exit_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = relaybot(tmp_path, "run", "--port", str(port))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"relaybot: port {port} is in use; use --port"]


def test_version() -> None:
    result = subprocess.run([sys.executable, "-m", "core.cli", "--version"], capture_output=True, text=True, cwd=REPO)
    assert result.stdout.strip() == "relaybot 0.1.0"


def test_doctor_passes_on_embedded_defaults_and_warns_about_offline_mode(tmp_path: Path) -> None:
    result = relaybot(tmp_path, "doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "✓ bots: support" in result.stdout
    assert "! llm: no OPENAI_API_KEY or ANTHROPIC_API_KEY" in result.stdout
    assert "all checks passed" in result.stdout


def test_doctor_says_when_nobody_can_sign_in_to_the_console(tmp_path: Path) -> None:
    before = relaybot(tmp_path, "doctor")
    assert "! console: no operator accounts" in before.stdout
    assert "fix: relaybot operator add EMAIL" in before.stdout
    added = relaybot(
        tmp_path,
        "operator",
        "add",
        "ana@example.com",
        "--password-stdin",
        stdin="correct horse battery",
        RELAYBOT_CONSOLE__PASSWORD_ROUNDS="4",
    )
    assert added.returncode == 0, added.stderr
    after = relaybot(tmp_path, "doctor")
    assert "✓ console: 1 operator: ana@example.com" in after.stdout
    assert after.returncode == 0, after.stdout
    off = relaybot(tmp_path, "doctor", RELAYBOT_CONSOLE__ENABLED="false")
    assert "console:" not in off.stdout


def test_doctor_names_what_to_fix_for_a_broken_production_setup(tmp_path: Path, redis_url: str) -> None:
    closed = redis_url.rsplit(":", 1)[0] + ":1/0"
    result = relaybot(tmp_path, "doctor", RELAYBOT_BUS="redis", REDIS_URL=closed)
    assert result.returncode == 1
    assert "✗ redis:" in result.stdout and "is redis-server running, and is REDIS_URL right?" in result.stdout
    assert "✗ secret key" in result.stdout and "RELAYBOT_SECRET_KEY" in result.stdout
    ok = relaybot(tmp_path, "doctor", RELAYBOT_BUS="redis", REDIS_URL=redis_url, RELAYBOT_SECRET_KEY="x" * 32)
    assert ok.returncode == 0, ok.stdout
    assert "✓ redis: Redis 7" in ok.stdout
    assert "! redis persistence: appendonly is off" in ok.stdout


def test_doctor_names_half_configured_channels(tmp_path: Path) -> None:
    result = relaybot(tmp_path, "doctor", SLACK_BOT_TOKEN="xoxb-1", TWILIO_ACCOUNT_SID="AC123")
    assert result.returncode == 1
    assert "✗ slack: SLACK_BOT_TOKEN is set but SLACK_SIGNING_SECRET is not" in result.stdout
    assert "✗ twilio: only one of TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN is set" in result.stdout
    fixed = relaybot(
        tmp_path,
        "doctor",
        SLACK_BOT_TOKEN="xoxb-1",
        SLACK_SIGNING_SECRET="s",
        TWILIO_ACCOUNT_SID="AC123",
        TWILIO_AUTH_TOKEN="t",
    )
    assert fixed.returncode == 0, fixed.stdout
    started = fixed.stdout.split("relaybot run would start:")[1].splitlines()[0]
    assert "slack" in started and "twilio" in started
    assert "! twilio: no public base URL" in fixed.stdout


def _read_until(fd: int, marker: bytes, seen: bytearray, timeout: float = 60) -> None:
    """Read the terminal's output until `marker` has appeared once more (or the program ended)."""
    wanted = seen.count(marker) + 1
    deadline = time.monotonic() + timeout
    while seen.count(marker) < wanted:
        if time.monotonic() > deadline:
            raise AssertionError(f"no {marker!r} on the terminal; it showed:\n{seen.decode(errors='replace')}")
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the program closed the terminal
                return
            if not chunk:
                return
            seen += chunk


@dataclass
class Terminal:
    """What a chat on a terminal left: the bytes the program wrote, and the screen they draw."""

    raw: bytes
    screen: pyte.Screen

    @property
    def rows(self) -> list[str]:
        """The screen's rows, without trailing blanks."""
        return [row.rstrip() for row in self.screen.display]


def chat_on_terminal(
    tmp_path: Path, typed: list[str], *, width: int = 50, height: int = 40, **env_vars: str
) -> Terminal:
    """`relaybot chat` on a pseudo-terminal of this size: each line typed once the program shows its
    prompt, then Ctrl-D. The bytes go through a VT100 emulator (pyte), so the test reads the screen a
    person sees, cursor movements and in-place redraws included."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL", "OPENAI_API_KEY")}
    env.update(
        RELAYBOT_DATA_DIR=str(tmp_path / "data"),
        HF_HUB_OFFLINE="1",
        TERM="xterm-256color",
        RELAYBOT_KNOWLEDGE__INGEST_ON_START="false",
        **env_vars,
    )
    env.pop("COLUMNS", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "core.cli", "chat"], stdin=slave, stdout=slave, stderr=slave, cwd=REPO, env=env
    )
    os.close(slave)
    seen = bytearray()
    try:
        _read_until(master, b"you> ", seen)
        for line in typed:
            os.write(master, line.encode() + b"\n")
            _read_until(master, b"you> ", seen)
        os.write(master, b"\x04")  # Ctrl-D
        _read_until(master, b"\0never", seen, timeout=30)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    screen = pyte.Screen(width, height)
    pyte.ByteStream(screen).feed(bytes(seen))
    return Terminal(bytes(seen), screen)


def test_chat_on_a_terminal_renders_markdown_wraps_it_and_leaves_on_a_new_line(tmp_path: Path) -> None:
    width = 50
    terminal = chat_on_terminal(tmp_path, ["hello"], width=width)
    rows = terminal.rows
    first = next(n for n, row in enumerate(rows) if row.startswith("bot> "))
    end = next(n for n, row in enumerate(rows) if row.startswith("you>") and n > first)
    answer = rows[first:end]
    assert "offline mode" in " ".join(" ".join(answer).split())  # the greeting, with **offline mode** rendered
    assert "**" not in " ".join(answer)
    # Wrapped to the terminal's width, each further line hanging under the text, not under "bot>" (an empty
    # row: the blank line between two paragraphs).
    text_rows = [row for row in answer[1:] if row]
    assert len(text_rows) > 1 and all(row.startswith("     ") and row[5] != " " for row in text_rows)
    # Ctrl-D: the shell's next prompt starts on a line of its own.
    assert terminal.screen.cursor.x == 0 and rows[terminal.screen.cursor.y] == ""


#: the model's answer, streamed word by word: long enough to wrap over several lines of the terminal
STREAMED = (
    "Tasklane is a project tool for small teams: boards, timelines and guests in one place, "
    "with mobile apps that keep everything in sync."
)
TOPICS = "     [1] Billing  [2] A problem  [3] Cancel"


def _bot_offering_topics_with_the_models_answer(tmp_path: Path) -> Path:
    """The example bot on the OpenAI fake alone: a greeting gets the model's (streamed) answer with
    the three topics as buttons (its `general` handler)."""
    bots = tmp_path / "bots"
    write_bot(bots, models={"chain": ["openai:gpt-4o"]})
    return bots


@pytest.mark.parametrize(
    ("width", "choices"),
    [
        (50, [TOPICS]),
        # Narrower than the choices: they wrap between two choices, under the reply's text.
        (34, ["     [1] Billing  [2] A problem", "     [3] Cancel"]),
    ],
)
async def test_a_streamed_reply_with_buttons_ends_cleanly_and_the_choices_show_once_under_it(
    tmp_path: Path, width: int, choices: list[str]
) -> None:
    bots = _bot_offering_topics_with_the_models_answer(tmp_path)
    async with FakeOpenAI() as fake:
        fake.queue(None, Answer(text=STREAMED, token_delay=0.03))
        fake.always(None, Answer(text='{"facts": []}'))  # the fact extraction after the reply
        terminal = await asyncio.to_thread(
            chat_on_terminal,
            tmp_path,
            ["hello"],
            width=width,
            RELAYBOT_BOTS_DIR=str(bots),
            OPENAI_API_KEY="sk-test",
            OPENAI_BASE_URL=fake.base_url,
        )
    # It streamed: the reply was drawn, and redrawn in place, many times before the final one.
    assert terminal.raw.count(b"bot> ") >= 5
    rows = terminal.rows
    start = next(n for n, row in enumerate(rows) if row.startswith("bot> "))
    end = rows.index(choices[0])
    # The screen: the whole answer once (no piece of an earlier draw left over), wrapped under the
    # label, then the choices on the lines right under it, once, then the prompt.
    assert " ".join(row[5:] for row in rows[start:end]) == STREAMED
    assert all(row.startswith("     ") for row in rows[start + 1 : end])
    assert [row for row in rows if row.startswith("bot> ")] == [rows[start]]
    assert rows[end : end + len(choices)] == choices
    assert sum(row.lstrip().startswith("[1]") for row in rows) == 1
    assert rows[end + len(choices)] == "you>"
    assert all(row == "" for row in rows[end + len(choices) + 1 :])


async def _piped_chat_streaming(
    tmp_path: Path, bots: Path, answer: str, *, stdin: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """`relaybot chat` with stdin and stdout piped, the model (the OpenAI fake) streaming `answer`
    word by word, and nothing to remember from the user's lines."""
    async with FakeOpenAI() as fake:
        fake.queue(None, Answer(text=answer, token_delay=0.03))
        fake.always(None, Answer(text='{"facts": []}'))
        return await asyncio.to_thread(
            relaybot,
            tmp_path,
            "chat",
            stdin=stdin,
            RELAYBOT_BOTS_DIR=str(bots),
            OPENAI_API_KEY="sk-test",
            OPENAI_BASE_URL=fake.base_url,
            **env,
        )


async def test_a_streamed_reply_with_buttons_piped_is_one_line_and_the_choices_under_it(tmp_path: Path) -> None:
    bots = _bot_offering_topics_with_the_models_answer(tmp_path)
    done = await _piped_chat_streaming(tmp_path, bots, STREAMED, stdin="hello\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"bot> {STREAMED}", TOPICS]


async def test_a_streamed_answer_piped_is_written_whole_with_the_sources_it_cites(tmp_path: Path) -> None:
    bots = _bot_knowing_only_its_mascot(tmp_path, models={"chain": ["openai:gpt-4o"]})
    done = await _piped_chat_streaming(
        tmp_path,
        bots,
        "Our mascot is a purple owl called Tally [1].",
        stdin="What is the name of the Tasklane mascot?\n",
        RELAYBOT_KNOWLEDGE__INGEST_ON_START="true",
    )
    assert done.returncode == 0, done.stderr
    # Streamed by the model, written once as the reply ends: its text, then the sources it cites.
    assert done.stdout.count("bot> ") == 1
    assert done.stdout.splitlines()[0] == "bot> Our mascot is a purple owl called Tally [1]."
    assert "Sources: [1] Our mascot" in done.stdout
