"""Optional response cache: an exact match on the assembled context gets the earlier answer.

Off unless a bot sets `[models] cache_ttl_seconds`. The key covers the bot, the model chain, the
generation settings and every message of the context, and (unless the bot sets `cache_shared`)
the user: one user's answer is never served to another, since the context can carry what the
bot knows about that user. Only complete answers are stored, never a cut stream or the static
message.

Backends side by side: memory.py (one process), redis.py (every worker).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from core.llm.base import LLMRequest

__all__ = ["SHARED_SCOPE", "CachedAnswer", "ResponseCache", "cache_key"]

SHARED_SCOPE = "*shared*"


@dataclass(frozen=True, slots=True, kw_only=True)
class CachedAnswer:
    text: str
    provider: str
    model: str


class ResponseCache(Protocol):
    async def get(self, key: str) -> CachedAnswer | None: ...

    async def put(self, key: str, answer: CachedAnswer, *, ttl_seconds: float) -> None: ...


def cache_key(*, bot: str, scope: str, steps: Sequence[str], request: LLMRequest) -> str:
    """A digest of everything that shapes the answer; `scope` is the user, or SHARED_SCOPE."""
    material = {
        "bot": bot,
        "scope": scope,
        "steps": list(steps),
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "messages": [[m.role, m.content] for m in request.messages],
    }
    raw = json.dumps(material, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()
