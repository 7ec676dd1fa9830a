"""`relaybot test record --session ID`: a conversation from the history becomes a test file.

The user's messages become the turns, in order, with their timing (`now`, `wait`); each reply gives
a `reply_contains` anchor (its opening words), which the author edits into what must really hold.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from core.errors import ConfigError
from core.stores.base import StoredMessage

__all__ = ["MAX_MESSAGES", "anchor", "default_path", "recorded_test", "render"]

#: the longest anchor taken from a reply: enough to recognise it, short enough to survive small edits
ANCHOR_CHARS = 60
#: the most messages a recording reads
MAX_MESSAGES = 2000
_MARKUP = re.compile(r"[*_`>#]+")


def anchor(reply: str) -> str:
    """The opening words of a reply: its first line, to the end of the first sentence, without Markdown."""
    first = next((line for line in reply.splitlines() if line.strip()), "")
    text = " ".join(_MARKUP.sub("", first).split())
    sentence = re.match(r"(.+?[.!?:])(\s|$)", text)
    if sentence is not None:
        text = sentence.group(1)
    if len(text) > ANCHOR_CHARS:
        text = text[:ANCHOR_CHARS].rsplit(" ", 1)[0]
    return text


def recorded_test(session_id: str, messages: Sequence[StoredMessage]) -> dict[str, Any]:
    """The test (as YAML-ready data) of a session's messages, oldest first."""
    parts = session_id.split(":", 2)
    if len(parts) != 3:
        raise ConfigError(f"{session_id!r} is not a session id (bot:channel:conversation, as the logs show)")
    _, channel, _ = parts
    turns: list[dict[str, Any]] = []
    previous: datetime | None = None
    start: datetime | None = None
    for index, message in enumerate(messages):
        if message.role != "user":
            continue
        turn: dict[str, Any] = {}
        if previous is not None and (gap := round((message.created_at - previous).total_seconds())) >= 1:
            turn["wait"] = f"{gap}s"
        turn["say"] = message.content
        start = start or message.created_at
        previous = message.created_at
        reply = next((m for m in messages[index + 1 :] if m.role != "user"), None)
        if reply is not None and (words := anchor(reply.content)):
            turn["reply_contains"] = words
        turns.append(turn)
    if not turns:
        raise ConfigError(f"session {session_id!r} has no messages from the user in the history")
    return {
        "name": f"recorded from session {session_id}",
        "channel": channel,
        "now": start.isoformat() if start is not None else None,
        "turns": turns,
    }


def render(test: dict[str, Any], *, session_id: str) -> str:
    header = (
        f"# Recorded from session {session_id} by `relaybot test record`.\n"
        "# Each reply_contains is the opening of the reply the bot gave then: edit it (and add intent,\n"
        "# tool_called, facts...) into what must hold. docs/testing-conversations.md has every key.\n"
    )
    body = yaml.safe_dump({"tests": [test]}, sort_keys=False, allow_unicode=True, width=110)
    return header + body


def default_path(bots_dir: Path, session_id: str) -> Path:
    bot, _, rest = session_id.partition(":")
    slug = re.sub(r"[^a-z0-9]+", "-", rest.lower()).strip("-")[:60] or "session"
    return bots_dir / bot / "tests" / f"recorded-{slug}.yaml"
