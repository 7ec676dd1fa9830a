"""The running summary: what happens to messages that leave the history window.

The model sees the newest messages that fit the bot's `[history]` window. Once the messages not
yet summarized no longer fit, the oldest of them are folded into the session's running summary,
down to half the window, so a fold (an LLM call when a model is configured) happens once every
few turns rather than on every turn, and no message is ever out of both the window and the
summary. The summary is bounded too (`max_tokens`), so the context stays the same size however
long the conversation grows.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from core.bots import BotConfig
from core.stores.base import StoredMessage
from core.tokens import estimate_tokens, token_parts, tokens_of

__all__ = [
    "DEFAULT_SUMMARY_TOKENS",
    "FoldPlan",
    "LocalSummarizer",
    "Summarizer",
    "clip_tokens",
    "plan_fold",
    "window",
]

DEFAULT_SUMMARY_TOKENS = 300
HEADER = "Earlier in this conversation:"
_GAP = "- …"
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


class Summarizer(Protocol):
    async def summarize(
        self, previous: str | None, messages: Sequence[StoredMessage], *, bot: BotConfig, user_key: str
    ) -> str:
        """`previous` (the running summary, if any) updated with `messages`, oldest first."""
        ...


def in_context(message: StoredMessage) -> bool:
    """Whether a stored message is part of the conversation the model sees (not a notice)."""
    return message.role in ("user", "assistant") and not message.is_notice


def window(messages: Sequence[StoredMessage], *, max_messages: int, token_budget: int) -> list[StoredMessage]:
    """What HistoryWindowStage shows of `messages` (oldest first, notices included as stored):
    among the last `max_messages`, the newest conversation messages that fit `token_budget`."""
    kept: list[StoredMessage] = []
    budget = token_budget
    for message in reversed(messages[-max_messages:] if max_messages > 0 else []):
        if not in_context(message):
            continue
        cost = message.tokens
        if cost > budget:
            break
        budget -= cost
        kept.append(message)
    kept.reverse()
    return kept


@dataclass(frozen=True, slots=True)
class FoldPlan:
    fold: list[StoredMessage]
    keep: list[StoredMessage]
    through_seq: int


def plan_fold(
    unsummarized: Sequence[StoredMessage], *, max_messages: int, token_budget: int, keep_fraction: float = 0.5
) -> FoldPlan | None:
    """What to fold, or None while every unsummarized message is still in the window.

    `unsummarized`: the session's stored messages after the summary's `through_seq`, oldest first.
    """
    talk = [m for m in unsummarized if in_context(m)]
    if max_messages <= 0 or not talk:
        return None
    if len(window(unsummarized, max_messages=max_messages, token_budget=token_budget)) == len(talk):
        return None
    keep = window(
        unsummarized,
        max_messages=max(1, int(max_messages * keep_fraction)),
        token_budget=int(token_budget * keep_fraction),
    )
    first_kept = keep[0].seq if keep else None
    fold = [m for m in talk if first_kept is None or (m.seq is not None and m.seq < first_kept)]
    if not fold:
        return None
    through = fold[-1].seq
    if through is None:
        raise ValueError("only stored messages (with a seq) can be folded")
    return FoldPlan(fold=fold, keep=keep, through_seq=through)


def clip_tokens(text: str, max_tokens: int) -> str:
    """`text` cut at a word boundary to about `max_tokens` (offline estimate), with an ellipsis."""
    if estimate_tokens(text) <= max_tokens:
        return text
    words = text.split()
    low, high = 0, len(words)
    while low < high:  # the longest prefix of words that fits
        mid = (low + high + 1) // 2
        if estimate_tokens(" ".join(words[:mid])) + 1 <= max_tokens:
            low = mid
        else:
            high = mid - 1
    return " ".join(words[:low]).rstrip(",;:") + "…"


class LocalSummarizer:
    """An extractive summary: the gist of each folded message as a bullet, within `max_tokens`.

    The user's words carry the thread (what they asked, what they said about their situation),
    so each user message keeps its first sentences; an answer keeps its first sentence only.
    When the bullets outgrow the budget the oldest go, except the first, which is usually what
    the conversation is about; a "…" marks where bullets were dropped.
    """

    def __init__(self, *, max_tokens: int = DEFAULT_SUMMARY_TOKENS, user_words: int = 40, assistant_words: int = 20):
        self.max_tokens = max_tokens
        self._user_words = user_words
        self._assistant_words = assistant_words

    async def summarize(
        self,
        previous: str | None,
        messages: Sequence[StoredMessage],
        *,
        bot: BotConfig | None = None,
        user_key: str = "",
    ) -> str:
        return self.fold(previous, messages)

    def fold(self, previous: str | None, messages: Sequence[StoredMessage]) -> str:
        # An LLM's summary is prose: kept as one bullet when the local summarizer takes over.
        earlier = [line.strip() for line in (previous or "").splitlines() if line.strip() and line.strip() != HEADER]
        lines = [line if line.startswith("- ") else f"- {line}" for line in earlier]
        lines.extend(self._bullet(m) for m in messages if in_context(m) and m.content.strip())
        return self._fit(lines)

    def _bullet(self, message: StoredMessage) -> str:
        if message.role == "user":
            return f"- The user said: “{_gist(message.content, self._user_words, sentences=2)}”"
        return f"- You answered: “{_gist(message.content, self._assistant_words, sentences=1)}”"

    def _fit(self, lines: list[str]) -> str:
        # The estimate of the lines joined is kept as running sums of each line's parts, so
        # dropping the oldest bullets one by one costs one pass, not one pass per bullet dropped.
        body = list(lines)
        parts = [token_parts(line) for line in [HEADER, *body]]
        total = [sum(column) for column in zip(*parts, strict=True)]

        def change(line: str, sign: int) -> None:
            for i, value in enumerate(token_parts(line)):
                total[i] += sign * value

        while len(body) > 2 and tokens_of((total[0], total[1], total[2])) > self.max_tokens:
            # Keep the first bullet (the thread's opening) and the gap marker; drop the next oldest.
            if body[1] == _GAP:
                change(body.pop(2), -1)
            else:
                change(body[1], -1)
                body[1] = _GAP
                change(_GAP, +1)
        text = "\n".join([HEADER, *body])
        # `total` is the estimate of `text` (no piece spans a line break), so it is not read again.
        fits = tokens_of((total[0], total[1], total[2])) <= self.max_tokens
        return text if fits else clip_tokens(text, self.max_tokens)


def _gist(text: str, max_words: int, *, sentences: int) -> str:
    # Only the first max_words + 1 words can be in the gist (a longer first sentence is cut to
    # max_words anyway), so a long answer costs no more to fold than a short one.
    head = text.split(None, max_words + 1)[: max_words + 1]
    flat = " ".join(head).replace("“", '"').replace("”", '"')
    first = " ".join(_SENTENCE.split(flat)[:sentences])
    words = first.split()
    if len(words) > max_words:
        return " ".join(words[:max_words]).rstrip(",;:") + "…"
    return first
