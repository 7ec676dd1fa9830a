"""Whether the passages found for a question answer it: the "I don't know" decision, on four kinds of evidence.

A cosine threshold alone cannot tell "who founded Tasklane?" from "what is Tasklane?": both are close to the
product's overview, and a question on the product's own topic that its documents do not answer ("can I pay
with a gift card?", "is there an app for my smartwatch?") is as close to the nearest passage, in cosine, as
many questions they do answer. What the near misses lack is the question's own rare words: "gift",
"smartwatch", "founded" are in none of the passages found. So the decision weighs:

- `cosine`: the best cosine similarity of a candidate chunk to the question (what the threshold used alone);
- `coverage`: the share of the question's terms (core.knowledge.terms: stemmed, stop words dropped) found in
  the passages about to be quoted, each term weighted by its BM25 inverse document frequency in the
  collection, so a missing rare word ("gift") costs much and a missing common one ("help") little;
- `unknown`: the share of the question's terms, weighted the same way, that no chunk of the collection holds
  at all. A term missing from the passages found may be elsewhere in the documents (a wrong passage, or a
  paraphrase the embedding bridges); one missing from every document ("smartwatch", "revenue", "drone") is
  something the documents never talk about, so it counts again;
- `untyped`: 1 when the question asks for a kind of answer (how many, when, who, where) that none of the
  passages' sentences about it supplies (core.knowledge.answer_types): "how many people work at Tasklane?"
  shares all its words with the overview, which holds no figure near them.

A question is answered when `cosine >= min_score` (a floor: below it nothing is near at all) and
`cosine + coverage_weight * coverage - unknown_weight * unknown - type_weight * untyped >= min_evidence`: a
plane, so a passage less close in meaning must share more of the question's words, and one sharing few must be
very close. The constants were chosen by `python bench/knowledge.py --tune` on the example bot's three labelled
sets and the Forkful product's, never on the sealed Toothwise set (see docs/knowledge.md#quality).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from core.knowledge.terms import tokens

__all__ = ["AnswerRule", "Evidence", "coverage", "unknown_share"]


@dataclass(frozen=True, slots=True)
class Evidence:
    """What the decision sees of one question's search."""

    #: the best cosine similarity of any candidate chunk to the question
    cosine: float
    #: the IDF-weighted share of the question's terms that the passages contain (1.0 when it has no terms)
    coverage: float
    #: the IDF-weighted share of the question's terms that no chunk of the collection contains
    unknown: float = 0.0
    #: 1.0 when the question asks for a kind of answer (a number, a time, a person, a place) that none of the
    #: passages' sentences about it supplies (core.knowledge.answer_types), else 0.0
    untyped: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class AnswerRule:
    """Answer when the best passage is near (`min_score`) and near enough for the words it shares."""

    min_score: float
    coverage_weight: float = 0.0
    min_evidence: float = -1.0
    unknown_weight: float = 0.0
    type_weight: float = 0.0

    def answers(self, evidence: Evidence) -> bool:
        if evidence.cosine < self.min_score:
            return False
        weighed = (
            evidence.cosine
            + self.coverage_weight * evidence.coverage
            - self.unknown_weight * evidence.unknown
            - self.type_weight * evidence.untyped
        )
        return weighed >= self.min_evidence


def coverage(question: str, passages: Iterable[str], idf: Callable[[str], float]) -> float:
    """The share of the question's terms, weighted by `idf`, that occur in `passages` (1.0 if it has none)."""
    terms = list(dict.fromkeys(tokens(question)))
    total = sum(idf(term) for term in terms)
    if total <= 0:
        return 1.0
    found: set[str] = set()
    for text in passages:
        found.update(tokens(text))
    return sum(idf(term) for term in terms if term in found) / total


def unknown_share(question: str, idf: Callable[[str], float], known: Callable[[str], bool]) -> float:
    """The share of the question's terms, weighted by `idf`, for which `known` is false (0.0 if it has none)."""
    terms = list(dict.fromkeys(tokens(question)))
    total = sum(idf(term) for term in terms)
    if total <= 0:
        return 0.0
    return sum(idf(term) for term in terms if not known(term)) / total
