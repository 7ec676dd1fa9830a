"""The provider used when no API key is configured: deterministic, instant, and honest about it.

With knowledge passages in the request it answers from them: the sentences of the best passages that share
the most words with the question, each cited [n], then the sources. When the knowledge was searched and
nothing relevant was found it says plainly that it does not know yet, instead of guessing.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence

from core.knowledge.passage import Passage
from core.llm.base import LLMRequest, StreamChunk, Usage
from core.memory.facts import LocalFactExtractor
from core.tokens import estimate_tokens

_GREETING = re.compile(r"^\s*(hi|hello|hey|good (morning|afternoon|evening)|hiya|howdy)\b", re.IGNORECASE)
_THANKS = re.compile(r"\b(thanks|thank you|cheers)\b", re.IGNORECASE)
_EXCERPT_CHARS = 120
_WORD = re.compile(r"[a-z0-9]+")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9*\"'(])")
_LIST_MARKER = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")
_STOPWORDS = frozenset(
    _WORD.findall(
        """
        a an and are as at be been but by can could do does did for from had has have how i if in into is it
        its me my of on or our so than that the their them then there these they this to too was we were
        what when where which who why will with would you your yours am any some just not no
        """
    )
)
#: how much of the best passages an offline answer quotes
_MAX_SENTENCES = 3
_MAX_PASSAGES = 2
_ANSWER_CHARS = 600
OFFLINE_GROUNDED_NOTE = "_(Offline mode: quoted from the knowledge base, without a language model.)_"


class OfflineProvider:
    """Answers without a language model, saying so plainly instead of pretending."""

    name = "offline"
    model = "offline"

    def __init__(self) -> None:
        self._facts = LocalFactExtractor()

    def answer(self, request: LLMRequest) -> str:
        question = next((m.content for m in reversed(request.messages) if m.role == "user"), "").strip()
        if _GREETING.match(question):
            return _greeting(knowledge=request.passages is not None)
        if _THANKS.search(question):
            return "You're welcome! (I'm in offline mode, with no language model configured.)"
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
        tokens_in = sum(estimate_tokens(m.content) for m in request.messages)
        yield StreamChunk(usage=Usage(tokens_in=tokens_in, tokens_out=estimate_tokens(text), estimated=True))


def grounded_answer(question: str, passages: Sequence[Passage], *, excerpt: str) -> str:
    """The best passages, condensed, with their sources; or "I don't know that yet" when there are none."""
    if not passages:
        return (
            f"I don't know that yet: I found nothing about “{excerpt}” in what I've been given.\n\n"
            "_(I'm running in offline mode, answering only from the knowledge base.)_"
        )
    terms = _terms(question)
    best = passages[0].score
    # The runner-up is quoted only when it is nearly as relevant and comes from elsewhere in the documents.
    chosen = [passages[0]] + [
        p for p in passages[1:_MAX_PASSAGES] if p.score >= best - 0.05 and p.label != passages[0].label
    ]
    parts: list[str] = []
    budget = _ANSWER_CHARS
    for number, passage in enumerate(chosen, start=1):
        text = _condense(passage.text, terms, budget)
        if not text:
            continue
        parts.append(f"{text} [{number}]")
        budget -= len(text)
        if budget <= 80:
            break
    sources = " · ".join(f"[{n}] {p.label}" for n, p in enumerate(chosen[: len(parts)], start=1))
    return "\n\n".join([*parts, f"Sources: {sources}", OFFLINE_GROUNDED_NOTE])


def _terms(text: str) -> set[str]:
    return {_stem(w) for w in _WORD.findall(text.lower()) if w not in _STOPWORDS}


def _stem(word: str) -> str:
    # Just enough to match "invoices"/"invoice" and "cancelled"/"cancel"; not a real stemmer.
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def _units(text: str) -> list[str]:
    """The passage as sentences and list items, Markdown emphasis kept, heading lines dropped."""
    units: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or line.startswith("|"):
            continue
        line = _LIST_MARKER.sub("", line)
        units.extend(s.strip() for s in _SENTENCE.split(line) if s.strip())
    return units


def _condense(text: str, terms: set[str], budget: int) -> str:
    """The sentences that share the most words with the question, in their original order."""
    units = _units(text)
    if not units:
        return ""
    scored = sorted(
        range(len(units)),
        key=lambda i: (-len(terms & _terms(units[i])), i),
    )
    keep: list[int] = []
    used = 0
    for i in scored:
        if len(keep) == _MAX_SENTENCES:
            break
        if keep and not terms & _terms(units[i]):
            break  # only the first pick may share no word with the question
        if used + len(units[i]) > budget and keep:
            continue
        keep.append(i)
        used += len(units[i])
    chosen = [units[i] for i in sorted(keep)]
    condensed = " ".join(u if u.endswith((".", "!", "?", ":")) else f"{u}." for u in chosen)
    if len(condensed) > budget:
        condensed = condensed[: budget - 1].rsplit(" ", 1)[0] + "…"
    return condensed


def _greeting(*, knowledge: bool) -> str:
    """What offline mode can do, in the words of what it will actually do next: with a knowledge base it
    answers from it (so "can't give real answers" would be untrue), without one it can only echo."""
    if knowledge:
        return (
            "Hello! I'm running in **offline mode**: no language model is configured, so I answer by "
            "quoting the parts of my knowledge base that match your question, with their sources. "
            "What would you like to know?"
        )
    return (
        "Hello! I'm running in **offline mode**: no language model is configured and I have no knowledge "
        "base to quote, so I can only tell you what I received. An operator can set `OPENAI_API_KEY` or "
        "`ANTHROPIC_API_KEY` to turn on real answers."
    )
