"""Logs never carry a widget session's id: the turn log and every other line show a hash of it."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import aiohttp
import pytest
import structlog

from core.logging import configure_logging, hash_web_session_ids
from core.logsink import LineSink
from tests.support.harness import make_settings, running_app


def test_web_ids_are_hashed_and_other_channels_ids_are_kept() -> None:
    event = hash_web_session_ids(
        None,
        "info",
        {"session_id": "support:web:abc123", "user_id": "web:abc123", "channel": "web", "reply_to": "abc123"},
    )
    assert "abc123" not in str(event)
    assert event["session_id"].startswith("support:web:#") and event["user_id"].startswith("web:#")
    # The same id hashes the same way in every line, so one conversation can still be followed.
    assert event["session_id"].removeprefix("support:") == event["user_id"]
    other = {"session_id": "support:slack:C1:1700000000.000100", "user_id": "slack:U1", "channel": "slack"}
    assert hash_web_session_ids(None, "info", dict(other)) == other


async def test_a_web_turn_logs_no_raw_session_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sink = configure_logging("json", "INFO")
    async with (
        running_app(make_settings(tmp_path)) as (_, base),
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{base}/ws") as ws,
    ):
        session = await ws.receive_json()
        await ws.send_json({"type": "message", "id": "m1", "text": "hello"})
        while (await ws.receive_json(timeout=5))["type"] != "reply":
            pass
    sink.flush()  # lines are written by the sink's thread
    logged = capsys.readouterr().err
    turns = [event for event in map(json.loads, logged.splitlines()) if event["event"] == "turn"]
    assert len(turns) == 1 and turns[0]["session_id"].startswith("support:web:#")
    assert session["session_id"] not in logged


async def test_a_turn_is_one_readable_line_on_the_console(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sink = configure_logging("console", "INFO")
    async with (
        running_app(make_settings(tmp_path)) as (_, base),
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{base}/ws") as ws,
    ):
        await ws.receive_json()
        await ws.send_json({"type": "message", "id": "m1", "text": "hello"})
        while (await ws.receive_json(timeout=5))["type"] != "reply":
            pass
    sink.flush()  # lines are written by the sink's thread
    logged = capsys.readouterr().err
    (line,) = [line for line in logged.splitlines() if " turn " in line]
    assert "turn support/web web:#" in line and " ms, " in line and " tokens" in line
    # The dashboard fields stay in the JSON line; the console line does not spell them out.
    assert "attempts=" not in line and "envelope_id" not in line


class _StuckFile:
    """A stderr whose reader has stopped: each write blocks until the test lets it go."""

    def __init__(self) -> None:
        self.moving = threading.Event()
        self.written: list[str] = []

    def write(self, text: str) -> int:
        self.moving.wait(timeout=10)
        self.written.append(text)
        return len(text)

    def flush(self) -> None:
        pass


def test_a_stuck_stderr_never_blocks_the_logger_and_drops_are_counted() -> None:
    stuck = _StuckFile()
    sink = LineSink(stuck, max_pending=100)  # type: ignore[arg-type]
    try:
        started = time.monotonic()
        for i in range(5000):
            sink.msg(f"line {i}")
        assert time.monotonic() - started < 2  # never waited on the stuck file
        stuck.moving.set()
        sink.flush()
        sink.msg("after")
        sink.flush()
    finally:
        sink.close()
    lines = "".join(stuck.written).splitlines()
    assert lines[0] == "line 0" and lines[-1] == "after"
    kept = [line for line in lines if line.startswith("line ")]
    (note,) = [line for line in lines if "dropped" in line]
    # What could wait was kept in order (at most 100 waiting, and 100 more if the writer took the
    # first ones before it got stuck); the rest is counted, not silently lost.
    assert kept == [f"line {i}" for i in range(len(kept))] and 100 <= len(kept) <= 200
    assert note == f"relaybot: {5000 - len(kept)} log lines dropped: stderr was not taking them"


async def test_async_log_calls_render_on_the_calling_thread_and_filtered_levels_write_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    sink = configure_logging("json", "WARNING")
    threads: list[str] = []

    def record_thread(logger: object, method: str, event: structlog.typing.EventDict) -> structlog.typing.EventDict:
        threads.append(threading.current_thread().name)
        return event

    processors = structlog.get_config()["processors"]
    structlog.configure(processors=[record_thread, *processors])
    log = structlog.get_logger("test")
    await log.ainfo("filtered_out")
    await log.awarning("kept", detail=1)
    sink.flush()
    logged = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [line["event"] for line in logged] == ["kept"] and logged[0]["detail"] == 1
    assert threads == [threading.current_thread().name]  # no trip to the thread pool
