"""Typos in a question, mended against the words of the bot's own documents.

People type fast in a chat window: "forgot my pasword", "how do i cancell my subscribtion". The embedding
reads such a word as pieces ("pas", "##word") and lands far from the page that answers it (cosine 0.26
against 0.60 for "password"), and BM25 finds no such term, so the question got "I don't know". A misspelt word
is replaced by the one word of the documents one edit away (a letter left out, added, changed, or two letters
swapped), so the search, the answer decision and the offline answer read what was meant.

Deliberately narrow, because a word the documents lack is also the sign of a question they do not answer
("is there a discount for seniors?", "does it work on a smart TV?"), and mending "smart" into "start" would
answer it:
- only a word that is no English word: not a whole word of the embedding model's vocabulary (about 22,000
  words, shipped with the model), not a word of the documents, and not a form of one ("receipts" when they
  say "receipt");
- only words of five letters or more (short words have too many neighbours);
- only a word typed in lower case: a capitalised word is a name, and a name the documents never mention
  must keep meaning "I don't know";
- the first letter is kept (typos rarely hit it, and it keeps "gmail" from becoming "email");
- one edit only, and only when exactly one word of the documents is that close.

Chat shorthand ("ppl", "pw", "acct") is spelt out too, unless the documents use it as it is.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Collection

from core.knowledge.terms import tokens

__all__ = ["MIN_LENGTH", "Speller", "english_words"]

#: words shorter than this are never changed (but for the chat shorthand below)
MIN_LENGTH = 5
# Chat shorthand, spelt out unless the documents use it as it is: no edit distance finds "people" in "ppl".
_SHORTHAND = {
    "ppl": "people",
    "pls": "please",
    "plz": "please",
    "pw": "password",
    "pwd": "password",
    "acct": "account",
    "msg": "message",
    "msgs": "messages",
    "u": "you",
    "ur": "your",
    "thx": "thanks",
    "b4": "before",
}
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9]*")
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


class Speller:
    """Mends a question's typos into the words of one set of documents.

    `known`: the documents' words, lower case; `holds`: whether a term (core.knowledge.terms) is among the
    documents' terms; `dictionary`: words that are spelt right whether or not the documents use them.
    """

    def __init__(self, known: Collection[str], *, holds: Callable[[str], bool], dictionary: Collection[str]) -> None:
        self._known = known
        self._holds = holds
        self._dictionary = dictionary

    def correct(self, word: str) -> str | None:
        """The one word of the documents `word` is a typo of, or None (not a typo, or no single candidate)."""
        if word in _SHORTHAND and word not in self._known:
            return _SHORTHAND[word]
        if len(word) < MIN_LENGTH or not word.isalpha() or not word.islower():
            return None
        if word in self._known or word in self._dictionary:
            return None
        terms = tokens(word)
        if not terms or any(map(self._holds, terms)):
            return None  # a stop word typed as people do ("whats"), or a form of a word the documents use
        found = {edit for edit in _edits(word) if edit[0] == word[0] and edit in self._known}
        return found.pop() if len(found) == 1 else None

    def mend(self, text: str) -> str:
        """`text` with each typo `correct` finds replaced, everything else as it was."""

        def replace(match: re.Match[str]) -> str:
            return self.correct(match.group(0)) or match.group(0)

        return _WORD.sub(replace, text)


@functools.lru_cache(maxsize=1)
def english_words() -> frozenset[str]:
    """The whole lower-case words of the embedding model's vocabulary (a file of the installed package, read
    once): what `Speller` leaves alone even when the documents never use it."""
    # Imported here: the offline answer imports this module, and the embeddings module loads numpy.
    from core.knowledge.embeddings import packaged_tokenizer_path

    vocabulary = json.loads(packaged_tokenizer_path().read_text(encoding="utf-8"))["model"]["vocab"]
    return frozenset(word for word in vocabulary if word.isalpha() and word.islower())


def _edits(word: str) -> set[str]:
    splits = [(word[:i], word[i:]) for i in range(len(word) + 1)]
    deletes = [a + b[1:] for a, b in splits if b]
    swaps = [a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1]
    changes = [a + c + b[1:] for a, b in splits if b for c in _LETTERS]
    inserts = [a + c + b for a, b in splits for c in _LETTERS]
    return set(deletes + swaps + changes + inserts)
