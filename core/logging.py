"""structlog set-up: JSON in production, readable on a terminal (one line per turn); context through contextvars."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import sys
from typing import Any, Literal

import orjson
import structlog

from core.logsink import LineSink, configure_sink

#: log fields that may carry a web session's id ("support:web:ID", "web:ID")
_ID_FIELDS = ("session_id", "user_id", "conversation_id", "reply_to")


def hash_web_session_ids(logger: object, method: str, event: structlog.typing.EventDict) -> structlog.typing.EventDict:
    """A widget's session id names the conversation its token proves: logs carry a short hash of it
    (the same hash in every line, so a conversation can still be followed), never the id itself."""
    web = event.get("channel") == "web"
    for key in _ID_FIELDS:
        value = event.get(key)
        if not isinstance(value, str):
            continue
        head, marker, raw = value.rpartition("web:")
        if marker and raw and not raw.startswith("#") and (head == "" or head.endswith(":")):
            event[key] = f"{head}web:#{_short_hash(raw)}"
        elif web and key in ("conversation_id", "reply_to") and value and not value.startswith("#"):
            event[key] = f"#{_short_hash(value)}"
    return event


@functools.lru_cache(maxsize=4096)
def _short_hash(value: str) -> str:
    # Cached: a conversation's every line hashes the same ids again.
    return hashlib.sha256(value.encode()).hexdigest()[:16]


def _json_line(event: structlog.typing.EventDict, **dumps_kw: Any) -> str:
    """One JSON line per event, through orjson: the standard library's encoder took a third of an
    INFO `turn` line's cost (some thirty fields, one line per message). Values neither encodes go
    through structlog's fallback (`default`), as with its own renderer; what orjson refuses (an
    integer past 64 bits) goes through the standard library."""
    try:
        return orjson.dumps(event, default=dumps_kw.get("default"), option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(event, **dumps_kw)


class ConsoleRenderer:
    """structlog's console renderer, except that a `turn` event is one short line a person reads at a glance.

    The JSON `turn` event (production) carries some twenty fields for dashboards; on a developer's
    terminal that is a wall of text per message. The console line keeps what one looks for while
    trying the bot: who, which intent, who answered, how long, how many tokens, and any error.
    """

    def __init__(self) -> None:
        self._default = structlog.dev.ConsoleRenderer()

    def __call__(self, logger: object, method: str, event: structlog.typing.EventDict) -> str:
        if event.get("event") == "turn":
            return turn_line(event)
        return str(self._default(logger, method, event))


def turn_line(event: structlog.typing.EventDict) -> str:
    """`12:03:41 turn support/web web:#3f9a…: billing → offline, 12 ms, 35→48 tokens`."""
    clock = str(event.get("timestamp", ""))[11:19]
    user = event.get("user_id") or "?"
    intent = event.get("intent") or "-"
    if event.get("handler"):
        intent = f"{intent} (handler {event['handler']})"
    answered = event.get("provider") or "no model"
    if event.get("model") and event.get("model") != answered:
        answered = f"{answered}:{event['model']}"
    flags = [name for name in ("fallback_used", "cache_hit") if event.get(name)]
    if flags:
        answered += " (" + ", ".join(flag.removesuffix("_used").replace("_", " ") for flag in flags) + ")"
    parts = [f"{event.get('latency_ms', 0):.0f} ms", f"{event.get('tokens_in', 0)}→{event.get('tokens_out', 0)} tokens"]
    tools = event.get("tool_calls") or []
    if tools:
        parts.append(f"{len(tools)} tool call(s)")
    if event.get("error"):
        parts.append(f"error: {event['error']}")
    return f"{clock} turn {event.get('bot')}/{event.get('channel')} {user}: {intent} → {answered}, " + ", ".join(parts)


def configure_logging(fmt: Literal["auto", "json", "console"] = "auto", level: str = "INFO") -> LineSink:
    """structlog for this process: lines to stderr through a writer thread (`core.logsink`); the
    returned sink's `flush()` waits for what was logged so far."""
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer(serializer=_json_line) if fmt == "json" else ConsoleRenderer()
    )
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        hash_web_session_ids,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        renderer,
    ]
    return configure_sink(processors, logging.getLevelNamesMapping()[level.upper()], sys.stderr)
