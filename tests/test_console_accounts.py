"""Operator accounts: `relaybot operator add/list/remove` as a user runs it, and the accounts table
on SQLite and PostgreSQL (passwords stored as bcrypt hashes only)."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import sqlite3
import subprocess
import sys
import termios
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from core.console.accounts import OperatorAccounts, OperatorExists, PasswordRejected
from tests.support.harness import REPO
from tests.support.servers import PostgresServer

PASSWORD = "correct horse battery"


def relaybot(tmp_path: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(RELAYBOT_DATA_DIR=str(tmp_path / "data"), RELAYBOT_CONSOLE__PASSWORD_ROUNDS="4")
    return subprocess.run(
        [sys.executable, "-m", "core.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=60,
    )


def test_operator_add_list_remove_from_the_command_line(tmp_path: Path) -> None:
    added = relaybot(
        tmp_path, "operator", "add", "Ana@Example.com", "--bots", "support", "--password-stdin", stdin=PASSWORD
    )
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == "added operator ana@example.com (support)"
    assert relaybot(tmp_path, "operator", "add", "ben@example.com", "--password-stdin", stdin=PASSWORD).returncode == 0

    listed = relaybot(tmp_path, "operator", "list")
    assert listed.returncode == 0, listed.stderr
    lines = [line.split("\t")[:2] for line in listed.stdout.splitlines()]
    assert lines == [["ana@example.com", "support"], ["ben@example.com", "all bots"]]

    with sqlite3.connect(tmp_path / "data" / "relaybot.db") as db:
        stored = dict(db.execute("select email, password_hash from operators").fetchall())
    assert all(h.startswith("$2b$") for h in stored.values())
    assert PASSWORD not in "".join(stored.values())

    again = relaybot(tmp_path, "operator", "add", "ana@example.com", "--password-stdin", stdin=PASSWORD)
    assert again.returncode == 1
    assert "already exists" in again.stderr

    removed = relaybot(tmp_path, "operator", "remove", "ANA@example.com")
    assert removed.returncode == 0, removed.stderr
    gone = relaybot(tmp_path, "operator", "remove", "ana@example.com")
    assert gone.returncode == 1
    assert "no operator 'ana@example.com'" in gone.stderr
    assert [line.split("\t")[0] for line in relaybot(tmp_path, "operator", "list").stdout.splitlines()] == [
        "ben@example.com"
    ]


def test_operator_add_refuses_a_short_password_and_an_unknown_bot(tmp_path: Path) -> None:
    short = relaybot(tmp_path, "operator", "add", "ana@example.com", "--password-stdin", stdin="hunter2")
    assert short.returncode == 1
    assert "at least 10 characters" in short.stderr
    unknown = relaybot(
        tmp_path, "operator", "add", "ana@example.com", "--bots", "nope", "--password-stdin", stdin=PASSWORD
    )
    assert unknown.returncode == 2
    assert "no bot named 'nope'" in unknown.stderr
    assert relaybot(tmp_path, "operator", "list").stdout == ""


PROMPT = re.compile(rb"password(?: again)?: ")


def _wait_for_echo_off(terminal: int, within: float = 10.0) -> None:
    """Until the program on the terminal has turned echo off (getpass does, around its prompt):
    what is typed before that would show on the screen."""
    deadline = time.monotonic() + within
    while termios.tcgetattr(terminal)[3] & termios.ECHO:
        if time.monotonic() > deadline:
            pytest.fail("the password prompt never turned the terminal's echo off")
        time.sleep(0.01)


def _run_on_a_terminal(tmp_path: Path, args: list[str], answers: list[str]) -> tuple[int, str]:
    """Run `relaybot` with a pseudo-terminal as its controlling terminal (getpass reads /dev/tty),
    typing each of `answers` when it prompts."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(RELAYBOT_DATA_DIR=str(tmp_path / "data"), RELAYBOT_CONSOLE__PASSWORD_ROUNDS="4")
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "core.cli", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=REPO,
        env=env,
        start_new_session=True,
        # The new session's controlling terminal: the pty, so /dev/tty is it.
        preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
    )
    os.close(slave)
    output = b""
    answered = 0
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 1024)
            except OSError:
                break  # the child closed the terminal
            if not chunk:
                break
            output += chunk
            # One answer per prompt shown (the newline getpass prints after an answer comes before
            # the next prompt, so "the output ends with a prompt" alone would answer twice).
            if answered < len(answers) and len(PROMPT.findall(output)) > answered:
                _wait_for_echo_off(master)
                os.write(master, answers[answered].encode() + b"\n")
                answered += 1
        try:
            return proc.wait(timeout=30), output.decode(errors="replace")
        except subprocess.TimeoutExpired:
            pytest.fail(f"relaybot {' '.join(args)} did not finish; its terminal showed: {output!r}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def test_operator_add_asks_for_the_password_twice_without_echo(tmp_path: Path) -> None:
    code, output = _run_on_a_terminal(tmp_path, ["operator", "add", "ana@example.com"], [PASSWORD, PASSWORD + "x"])
    assert code == 1
    assert "the two passwords differ; nothing was stored" in output
    assert PASSWORD not in output  # getpass turned echo off
    code, output = _run_on_a_terminal(tmp_path, ["operator", "add", "ana@example.com"], [PASSWORD, PASSWORD])
    assert code == 0, output
    assert "added operator ana@example.com (all bots)" in output


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def accounts(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OperatorAccounts]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/data/relaybot.db"
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        url = server.url
        engine = create_async_engine(url)
        async with engine.begin() as conn:
            await conn.execute(text("DROP TABLE IF EXISTS operators"))
        await engine.dispose()
    store = await OperatorAccounts.open(url, rounds=4)
    yield store
    await store.close()


async def test_verify_accepts_only_the_operators_own_password(accounts: OperatorAccounts) -> None:
    await accounts.add("ana@example.com", PASSWORD, bots=["support", "sales"])
    operator = await accounts.verify(" ANA@example.com ", PASSWORD)
    assert operator is not None
    assert operator.email == "ana@example.com"
    assert operator.bots == ("support", "sales")
    assert operator.serves("sales") and not operator.serves("billing")
    assert await accounts.verify("ana@example.com", PASSWORD.upper()) is None
    assert await accounts.verify("nobody@example.com", PASSWORD) is None
    assert await accounts.verify("ana@example.com", "x" * 100) is None


async def test_accounts_refuse_duplicates_and_bad_passwords(accounts: OperatorAccounts) -> None:
    await accounts.add("ana@example.com", PASSWORD)
    with pytest.raises(OperatorExists, match="already exists"):
        await accounts.add("Ana@Example.com", PASSWORD)
    with pytest.raises(PasswordRejected, match="at most 72 bytes"):
        await accounts.add("ben@example.com", "é" * 40)
    assert [o.email for o in await accounts.list()] == ["ana@example.com"]
    assert (await accounts.get("ana@example.com")) is not None
    assert await accounts.remove("ana@example.com")
    assert await accounts.get("ana@example.com") is None
    assert await accounts.verify("ana@example.com", PASSWORD) is None
