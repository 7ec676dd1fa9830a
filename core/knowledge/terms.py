"""The terms of a text, as BM25 (core.knowledge.lexical) and the offline answer (core.llm.grounded) compare
them; no dependencies, so the offline provider can import it without loading BM25."""

from __future__ import annotations

import re

__all__ = ["query_terms", "tokens"]

# Words and numbers; "$12.50" -> "12.50", "10,000" -> "10000" (joined before splitting), "ios16" stays whole.
_TOKEN = re.compile(r"[a-z0-9]+(?:\.[0-9]+)?")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
# Function words and question words: they match every chunk and would drown the rare terms.
_STOPWORD_TEXT = (
    "a an and are as at be but by can could did do does for from had has have how i if in into is it its me my "
    "of on or our so than that the their them then there these they this to was we were what when where which "
    "who why will with would you your yours i'm im it's there's can't don't cannot much many "
    # The same contractions typed without the apostrophe, as people do in chat ("whats the max ...").
    "whats hows wheres whos thats theres dont doesnt didnt cant wont isnt arent wasnt ive youre"
)
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())


# A question asks what something costs; documents say what it is priced at.
_SYNONYMS = {"cost": "price", "costs": "price", "costing": "price", "pricing": "price", "priced": "price"}


def _stem(word: str) -> str:
    """A light fold of plurals and verb forms ("plans" -> "plan", "exporting" -> "export", "archived" and
    "archive" -> "archiv"), enough for support text (a full stemmer would be one more dependency for little
    gain on short chunks). Both sides go through it, so the stems need only agree, not be words."""
    word = _SYNONYMS.get(word, word)
    if not word.isalpha() or len(word) <= 3:
        return word
    for suffix, keep in (("ies", "y"), ("ied", "y"), ("ing", ""), ("ed", ""), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            if suffix == "es" and not word.endswith(("ches", "shes", "sses", "xes", "zes")):
                continue  # "prices" -> "price" via "s" below, not "pric"
            if suffix == "s" and word.endswith(("ss", "us", "is")):
                break
            word = word[: -len(suffix)] + keep
            # "resetting" and "reset", "stopped" and "stop" meet: a doubled final consonant is undone, as in
            # Porter's stemmer, but not l, s or z ("billing", "passed") nor down to two letters ("added").
            if suffix in ("ing", "ed") and len(word) > 3 and word[-1] == word[-2] and word[-1] not in "aeiouylsz":
                word = word[:-1]
            break
    # "insurance" and "insured" meet at "insur" (after the plural: "balances" and "balance" at "bal")
    for suffix in ("ance", "ence"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    # "price"/"priced"/"pricing" and "archive"/"archived" meet without their final e.
    return word[:-1] if word.endswith("e") and len(word) > 4 else word


def tokens(text: str) -> list[str]:
    """The terms BM25 sees: lower case, numbers kept whole, stop words dropped, lightly stemmed."""
    text = _THOUSANDS.sub("", text.lower())
    # Single letters are left out ("what's" -> "what", "s"); single digits are kept ("3 projects").
    return [_stem(w) for w in _TOKEN.findall(text) if w not in _STOPWORDS and (len(w) > 1 or w.isdigit())]


# "How much is a ride?", "how much for a day pass", "how much?": a price asked for without saying "price" or
# "cost" ("how much storage" asks for an amount of something else, and is left alone).
_HOW_MUCH = re.compile(
    r"\bhow\s+much(?:\s+(?:is|are|does|do|did|will|would|was|were|for|to|would\s+it\s+be)\b|\s*[?!.]*\s*$)",
    re.IGNORECASE,
)
_PRICE = _stem("price")


def query_terms(question: str) -> list[str]:
    """The terms of a question, as retrieval and the offline answer look for them: `tokens`, and "price" when
    it asks "how much" for something, since "how much", being common words, is not a term itself and the
    documents say "prices" ("Prices and passes": €1 to unlock)."""
    terms = tokens(question)
    if _PRICE not in terms and _HOW_MUCH.search(question):
        terms.append(_PRICE)
    return terms
