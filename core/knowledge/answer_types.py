"""The kind of answer a question asks for, and whether a sentence can supply it (classic QA answer typing).

"Who founded Tasklane?" asks for a person, "how many people work there?" for a number, "when was it
founded?" for a date. A near miss is often close to a passage in meaning and shares its words, but no
sentence of it that speaks of what the question speaks of holds a name, a figure or a date. Read from the
question's form only, with regular expressions: no model, nothing per message but a few string scans.

Questions that ask whether (start with "is", "can", "do" ...) or how to do something ask for no type; so
does "what ..." unless it asks for a price, a time or a place in so many words.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable

from core.knowledge.relevance import CALENDAR_WORDS
from core.knowledge.terms import tokens

__all__ = ["AnswerType", "expected_type", "sentences", "supplies", "untyped"]


class AnswerType(enum.Enum):
    NUMBER = "number"  # an amount, a price, a count, a duration, a frequency
    TIME = "time"  # a time, a date, a weekday, a delay
    PERSON = "person"  # a person, a role or an organisation
    PLACE = "place"  # a place, an address, or where in the product


# A question that asks whether: its first word is an auxiliary verb ("is there ...", "can I ...").
_YES_NO = re.compile(
    r"^\s*(?:is|are|was|were|do|does|did|can|could|will|would|should|shall|may|might|must|has|have|had|"
    r"isn't|aren't|don't|doesn't|can't|won't|am)\b",
    re.IGNORECASE,
)
_ASKS_TIME = re.compile(
    # "when" asking ("when will you retry it", "when?"), not joining ("it crashes when I open the menu")
    r"\b(?:when(?=\s+(?:will|would|do|does|did|is|are|was|were|can|could|should|shall|must)\b|\s*\?|$)|"
    r"how\s+soon|what\s+time|(?:what|which)\s+(?:days?|dates?|months?|year|hours?))\b",
    re.IGNORECASE,
)
_ASKS_NUMBER = re.compile(
    r"\b(?:how\s+(?:much|many|long|often|old|big|large|far|fast)|costs?|price[sd]?|pricing|fees?)\b", re.IGNORECASE
)
_ASKS_PERSON = re.compile(r"\b(?:who|whom|whose)\b", re.IGNORECASE)
_ASKS_PLACE = re.compile(
    r"\b(?:where|(?:what|which)\s+(?:address|country|countries|city|cities|region|regions))\b", re.IGNORECASE
)
# Checked in this order, in each sentence of the question: the first that matches gives the type.
_ASKS: tuple[tuple[AnswerType, re.Pattern[str]], ...] = (
    (AnswerType.TIME, _ASKS_TIME),
    (AnswerType.NUMBER, _ASKS_NUMBER),
    (AnswerType.PERSON, _ASKS_PERSON),
    (AnswerType.PLACE, _ASKS_PLACE),
)

_NUMBER_WORDS = (
    r"one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|twenty|thirty|forty|fifty|hundred|"
    r"thousand|million|once|twice|half|dozen|unlimited|free"
)
_DURATION_WORDS = (
    r"seconds?|minutes?|hours?|days?|weeks?|months?|years?|hourly|daily|weekly|monthly|yearly|annual(?:ly)?"
)
_NUMBER = re.compile(rf"\d|[$€£¥%]|\b(?:{_NUMBER_WORDS}|{_DURATION_WORDS})\b", re.I)
_TIME = re.compile(
    rf"\d|\b(?:{_NUMBER_WORDS}|{_DURATION_WORDS}|{'|'.join(CALENDAR_WORDS)}|today|tomorrow|tonight|morning|"
    r"afternoon|evening|night|midnight|noon|immediately|instantly|right\s+away|at\s+once|date|deadline|period|"
    r"renewal|until|within|before|after)\b",
    re.I,
)
# Who: a role the documents give ("only owners and admins can ...") or a name (below).
_ROLE = re.compile(
    r"\b(?:owners?|admins?|administrators?|members?|guests?|managers?|anyone|everyone|nobody|"
    r"no\s+one|staff|founders?|ceo)\b",
    re.I,
)
_ORGANISATION = re.compile(r"\b(?:Inc|Ltd|LLC|GmbH|SAS|Corp|Corporation|Company|AG|BV)\b\.?")
# Where: a place or the part of the product a thing is found in.
_PLACE = re.compile(
    r"\d|\b(?:under|menu|page|tab|sidebar|panel|button|section|dashboard|settings|profile|corner|top|bottom|"
    r"left|right|address|office|street|city|country|countries|region|eu|us|uk|europe|located|based)\b",
    re.I,
)
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")
_BOLD = re.compile(r"\*\*[^*]+\*\*")
#: a sentence is about the question when it shares a third of what the best one shares (IDF-weighted) or more:
#: at a half, the first reply times of the support page ("| Team | Within 1 business day |") were not about "how
#: fast does support answer on Business", outweighed by the page's opening sentence that repeats the question
ABOUT_SHARE = 1 / 3
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def expected_type(question: str) -> AnswerType | None:
    """The kind of answer `question` asks for; None for a question that asks whether, or how to."""
    for sentence in _SENTENCE.split(question.strip()):
        if not sentence or _YES_NO.match(sentence):
            continue
        for kind, pattern in _ASKS:
            if pattern.search(sentence):
                return kind
    return None


def _names(sentence: str, question_words: set[str], *, run: int) -> bool:
    """Whether `sentence` names something the question does not: `run` capitalised words in a row past its
    first word, none a day, a month or a word of the question. Bold text is left out: in help pages it marks
    the product's own labels (**Trust Center**, **Profile**), not people or places."""
    words = _WORD.findall(_BOLD.sub(" , ", sentence))
    streak = 0
    for word in words[1:]:
        name = word[0].isupper() and word.lower() not in question_words and word.lower() not in CALENDAR_WORDS
        streak = streak + 1 if name else 0
        if streak >= run:
            return True
    return False


def supplies(kind: AnswerType, sentence: str, question: str = "") -> bool:
    """Whether `sentence` holds an answer of `kind`: a figure, a time, a name or a role, a place."""
    if kind is AnswerType.NUMBER:
        return bool(_NUMBER.search(sentence))
    if kind is AnswerType.TIME:
        return bool(_TIME.search(sentence))
    question_words = {w.lower() for w in _WORD.findall(question)}
    if kind is AnswerType.PERSON:
        # A person's name is two words ("Jane Doe"); one capitalised word is as often a product's.
        return bool(_ROLE.search(sentence) or _ORGANISATION.search(sentence)) or _names(sentence, question_words, run=2)
    return bool(_PLACE.search(sentence)) or _names(sentence, question_words, run=1)


def sentences(text: str) -> list[str]:
    """`text` cut into sentences and lines (list items; table rows each under its table's first row, which
    names the columns), Markdown markers left in, heading lines left out."""
    out: list[str] = []
    header: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("|"):
            if set(line) <= set("|:- "):
                continue
            if header is None:
                header = line
            else:
                out.append(f"{header} {line}")
            continue
        header = None
        if line and not line.startswith("#"):
            out += [s.strip() for s in _SENTENCE.split(line) if s.strip()]
    return out


def untyped(question: str, passages: Iterable[str], idf: Callable[[str], float]) -> float:
    """1.0 when `question` asks for a kind of answer that none of the passages' sentences about it supplies,
    else 0.0. The sentences about it: those sharing the most of the question's terms, weighted by `idf`
    (ABOUT_SHARE of the best one at least), so a figure elsewhere in the passage does not count."""
    kind = expected_type(question)
    if kind is None:
        return 0.0
    terms = set(tokens(question))
    scored: list[tuple[float, str]] = []
    for text in passages:
        for sentence in sentences(text):
            shared = sum(idf(term) for term in terms & set(tokens(sentence)))
            if shared > 0:
                scored.append((shared, sentence))
    if not scored:
        return 1.0
    best = max(score for score, _ in scored)
    about = [sentence for score, sentence in scored if score >= ABOUT_SHARE * best]
    return 0.0 if any(supplies(kind, sentence, question) for sentence in about) else 1.0
