"""structlog set-up: JSON in production, readable on a terminal; context through contextvars."""

from __future__ import annotations

import hashlib
import logging
import sys
from typing import Literal

import structlog

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


def _short_hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:16]


def configure_logging(fmt: Literal["auto", "json", "console"] = "auto", level: str = "INFO") -> None:
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            hash_web_session_ids,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
