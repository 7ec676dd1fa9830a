"""A lexical guard in front of the similarity threshold: questions about things the documents never name.

Embeddings rate "How do I cancel my Spotify subscription" close to a product's own cancellation page, above
many genuine questions, so no threshold separates them. But such a question names something (Spotify,
Netflix) that appears nowhere in the knowledge: a capitalized or camel-case word, not at the start of the
question and not an acronym, that the documents never use is taken to mean the question is about something
else, and nothing is retrieved.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_WORD = re.compile(r"[A-Za-z][A-Za-z0-9]*")
#: days and months are capitalised but name no thing a document must mention: "I cancelled on Thursday" is
#: answered by the page about cancelling before the weekly cutoff
CALENDAR_WORDS = frozenset(
    [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
    ]
)
_VOCAB_WORD = re.compile(r"[a-z0-9]+")


def vocabulary(texts: Iterable[str]) -> set[str]:
    words: set[str] = set()
    for text in texts:
        words.update(_VOCAB_WORD.findall(text.lower()))
    return words


def unknown_names(question: str, known: set[str]) -> list[str]:
    """The names in `question` that the knowledge never mentions."""
    names: list[str] = []
    for sentence in re.split(r"[.!?]\s+", question):
        for position, word in enumerate(_WORD.findall(sentence)):
            if position == 0 or word.isupper() or word == "I" or word.lower() in CALENDAR_WORDS:
                continue  # sentence starts are capitalized anyway; acronyms (PR, SSO) are too often jargon
            if (word[0].isupper() or any(c.isupper() for c in word[1:])) and word.lower() not in known:
                names.append(word)
    return names
