"""The offline token estimate: its counts are defined by three regular expressions."""

from __future__ import annotations

import random
import re

from core.llm.base import ChatMessage, context_tokens
from core.stores.base import StoredMessage
from core.tokens import estimate_tokens, token_parts, tokens_of

# The definition, scan by scan: words, other non-space pieces, and extra tokens for long words.
WORDS = re.compile(r"\w+")
OTHERS = re.compile(r"[^\w\s]")
LONG_WORDS = re.compile(r"\w{9,}")

# Letters and digits of several scripts, combining marks, underscores, punctuation, emoji, and
# whitespace the way Unicode has it (no-break, em and ideographic spaces, separators, NEL).
ALPHABET = (
    "abcxyzABC0189_éßñ語日本ž٣\u0301\u200d"
    ".,;:!?'\"“”\u2018\u2019…-\u2013—()[]{}*`#@/\\%€$😀👍🏽"
    " \t\n\r\x0b\x0c\x1c\x1f\x85\u00a0\u2003\u2028\u3000"
)


def defined_parts(text: str) -> tuple[int, int, int]:
    long_extra = sum(len(word) // 8 for word in LONG_WORDS.findall(text))
    return len(WORDS.findall(text)), len(OTHERS.findall(text)), long_extra


def test_token_parts_count_what_the_three_scans_count() -> None:
    rng = random.Random(1907)
    texts = [
        "",
        "Hello, world!",
        "internationalization_and_localization, again",
        "I'm running in **offline mode**: `OPENAI_API_KEY` …",
        "- The user said: “How much does the Pro plan cost per month?”",
    ]
    texts += ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 200))) for _ in range(3000)]
    texts += [" ".join("".join(rng.choice("aé語_1") for _ in range(rng.randint(1, 30))) for _ in range(9))]
    for text in texts:
        token_parts.cache_clear()
        assert token_parts(text) == defined_parts(text), repr(text)


def test_a_multiline_estimate_is_the_sum_of_its_lines() -> None:
    lines = ["Earlier in this conversation:", "- The user said: “hello”", "- You answered: “Hi! How can I help?”"]
    total = [sum(column) for column in zip(*(defined_parts(line) for line in lines), strict=True)]
    assert estimate_tokens("\n".join(lines)) == tokens_of((total[0], total[1], total[2]))


def test_messages_carry_their_estimates_into_the_context() -> None:
    stored = StoredMessage(role="user", content="How much does the Pro plan cost per month?")
    assert stored.tokens == estimate_tokens(stored.content)
    assert stored.restamped(seq=3, created_at=stored.created_at, meta={}).tokens == stored.tokens

    carried = ChatMessage("user", stored.content, tokens=stored.tokens)
    assert carried == ChatMessage("user", stored.content)  # the estimate is not part of the message
    # A message's own count is taken as given; one without is estimated.
    assert context_tokens(
        [ChatMessage("user", "hello", tokens=99), ChatMessage("user", "hello")]
    ) == 99 + estimate_tokens("hello")
