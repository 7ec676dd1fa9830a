"""The provider used when no API key is configured: deterministic, instant, and honest about it.

With knowledge passages in the request it answers from them (core.llm.grounded: the few sentences, list items
or table rows that answer, each cited [n]; the pipeline lists the cited sources, as for a model). When the
knowledge was searched and nothing relevant was found it says plainly that it does not know yet, instead of
guessing.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from core.llm.base import LLMRequest, StreamChunk, estimated_usage
from core.llm.grounded import OFFLINE_GROUNDED_NOTE, grounded_answer
from core.memory.facts import LocalFactExtractor
from core.smalltalk import is_small_talk

_GREETING = re.compile(r"^\s*(hi|hello|hey|good (morning|afternoon|evening)|hiya|howdy)\b", re.IGNORECASE)
_THANKS = re.compile(r"\b(thanks|thank you|cheers)\b", re.IGNORECASE)
_GOODBYE = re.compile(
    r"\b(bye|goodbye|see (you|ya)|take care|later|cya|good night|have a \w+ \w+"
    r"|that'?s (all|it|everything)|that is all)\b",
    re.IGNORECASE,
)
# "help", "what can you do?", "who are you?": a new user finding out what the bot is. Looked up in the
# knowledge base they found nothing ("I don't know that yet: I found nothing about “help”").
_ABOUT_THE_BOT = re.compile(
    r"^\W*(?:help(?:\s+me)?|menu|what\s+(?:can|do)\s+you\s+do|what\s+are\s+you(?:\s+for)?|who\s+are\s+you"
    r"|how\s+(?:can|do)\s+you\s+help(?:\s+me)?|what\s+can\s+(?:i|you)\s+(?:ask|help\s+(?:me\s+)?with)(?:\s+you)?"
    r"|are\s+you\s+(?:a\s+)?(?:bot|robot|human|person|real(?:\s+person)?|an?\s+ai))\W*$",
    re.IGNORECASE,
)
_EXCERPT_CHARS = 120
__all__ = ["OFFLINE_GROUNDED_NOTE", "OfflineProvider", "grounded_answer"]


class OfflineProvider:
    """Answers without a language model, saying so plainly instead of pretending."""

    name = "offline"
    model = "offline"
    #: answers in place, never waiting (see core.llm.base.IN_PROCESS)
    in_process = True

    def __init__(self, *, introduction: str = "") -> None:
        #: what the bot says it is (its `welcome`), for "hello", "help" and "who are you?"
        self._introduction = introduction.strip()
        self._facts = LocalFactExtractor()

    def answer(self, request: LLMRequest) -> str:
        question = next((m.content for m in reversed(request.messages) if m.role == "user"), "").strip()
        if _GREETING.match(question) or _ABOUT_THE_BOT.match(question):
            return _greeting(self._introduction, knowledge=request.passages is not None)
        if _THANKS.search(question):
            return "You're welcome! (I'm in offline mode, with no language model configured.)"
        if is_small_talk(question):
            # "bye", "ok", "great": nothing to look up, and "I found nothing about “bye”" would be absurd.
            if _GOODBYE.search(question):
                return "Goodbye! If anything else comes up, just write here."
            return "All right. Is there anything else I can help you with?"
        excerpt = " ".join(question.split())
        if len(excerpt) > _EXCERPT_CHARS:
            excerpt = excerpt[: _EXCERPT_CHARS - 1].rstrip() + "…"
        if not request.passages and "?" not in question and self._facts.extract_now(question):
            # "My name is Alice": the user telling, not asking; the memory stage keeps it after the reply.
            return "Thanks, I'll remember that. What can I help you with?"
        if request.passages is not None:
            return grounded_answer(question, request.passages, excerpt=excerpt)
        return (
            f"I received your message: “{excerpt}”\n\n"
            "I'm running in **offline mode**: no language model is configured, so I can't answer it "
            "properly yet. An operator can set `OPENAI_API_KEY` or `ANTHROPIC_API_KEY` "
            "to turn on real answers."
        )

    async def stream(self, request: LLMRequest) -> AsyncIterator[StreamChunk]:
        text = self.answer(request)
        # One piece: the answer exists whole at once, and a channel would show nothing of it before
        # the reply anyway (the first streamed piece waits ~50 ms, see core.delivery.coalesce).
        yield StreamChunk(text=text)
        yield StreamChunk(usage=estimated_usage(request, text))


def _greeting(introduction: str, *, knowledge: bool) -> str:
    """The bot's introduction, then what offline mode can do, in the words of what it will actually do next:
    with a knowledge base it answers from it (so "can't give real answers" would be untrue), without one it
    can only echo."""
    opening = f"{introduction}\n\nI'm" if introduction else "Hello! I'm"
    if knowledge:
        return (
            f"{opening} running in **offline mode**: no language model is configured, so I answer by "
            "quoting the parts of my knowledge base that match your question, with their sources. "
            "What would you like to know?"
        )
    return (
        f"{opening} running in **offline mode**: no language model is configured and I have no knowledge "
        "base to quote, so I can only tell you what I received. An operator can set `OPENAI_API_KEY` or "
        "`ANTHROPIC_API_KEY` to turn on real answers."
    )
