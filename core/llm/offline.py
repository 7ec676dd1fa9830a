"""The provider used when no API key is configured: deterministic, instant, and honest about it."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

from core.llm.base import LLMRequest, StreamChunk, Usage
from core.tokens import estimate_tokens

_GREETING = re.compile(r"^\s*(hi|hello|hey|good (morning|afternoon|evening)|hiya|howdy)\b", re.IGNORECASE)
_THANKS = re.compile(r"\b(thanks|thank you|cheers)\b", re.IGNORECASE)
_EXCERPT_CHARS = 120


class OfflineProvider:
    """Answers without a language model, saying so plainly instead of pretending."""

    name = "offline"
    model = "offline"

    def answer(self, request: LLMRequest) -> str:
        question = next((m.content for m in reversed(request.messages) if m.role == "user"), "").strip()
        if _GREETING.match(question):
            return (
                "Hello! I'm running in **offline mode**: no language model is configured, "
                "so I can't give real answers yet. Ask anyway and I'll tell you what I received."
            )
        if _THANKS.search(question):
            return "You're welcome! (I'm in offline mode, with no language model configured.)"
        excerpt = " ".join(question.split())
        if len(excerpt) > _EXCERPT_CHARS:
            excerpt = excerpt[: _EXCERPT_CHARS - 1].rstrip() + "…"
        return (
            f"I received your message: “{excerpt}”\n\n"
            "I'm running in **offline mode**: no language model is configured, so I can't answer it "
            "properly yet. An operator can set `OPENAI_API_KEY` or `ANTHROPIC_API_KEY` "
            "to turn on real answers."
        )

    async def stream(self, request: LLMRequest) -> AsyncIterator[StreamChunk]:
        text = self.answer(request)
        words = re.findall(r"\S+\s*", text)
        # A few chunks, so channels that stream exercise their delta path even offline.
        step = max(1, len(words) // 4)
        for i in range(0, len(words), step):
            await asyncio.sleep(0)
            yield StreamChunk(text="".join(words[i : i + step]))
        tokens_in = sum(estimate_tokens(m.content) for m in request.messages)
        yield StreamChunk(usage=Usage(tokens_in=tokens_in, tokens_out=estimate_tokens(text), estimated=True))
