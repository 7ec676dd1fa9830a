"""Logs never carry a widget session's id: the turn log and every other line show a hash of it."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from core.logging import configure_logging, hash_web_session_ids
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
    configure_logging("json", "INFO")
    async with (
        running_app(make_settings(tmp_path)) as (_, base),
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{base}/ws") as ws,
    ):
        session = await ws.receive_json()
        await ws.send_json({"type": "message", "id": "m1", "text": "hello"})
        while (await ws.receive_json(timeout=5))["type"] != "reply":
            pass
    logged = capsys.readouterr().err
    assert '"event": "turn"' in logged and "support:web:#" in logged
    assert session["session_id"] not in logged


async def test_a_turn_is_one_readable_line_on_the_console(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("console", "INFO")
    async with (
        running_app(make_settings(tmp_path)) as (_, base),
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{base}/ws") as ws,
    ):
        await ws.receive_json()
        await ws.send_json({"type": "message", "id": "m1", "text": "hello"})
        while (await ws.receive_json(timeout=5))["type"] != "reply":
            pass
    logged = capsys.readouterr().err
    (line,) = [line for line in logged.splitlines() if " turn " in line]
    assert "turn support/web web:#" in line and " ms, " in line and " tokens" in line
    # The dashboard fields stay in the JSON line; the console line does not spell them out.
    assert "attempts=" not in line and "envelope_id" not in line
