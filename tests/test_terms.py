"""The terms BM25 and the answer decision compare (core.knowledge.terms): word forms that must meet, and one
question a rider asks that the Pedalpoint documents answer in other forms of its words, with the packaged ONNX
embedder and a real chromadb."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.knowledge.ranking import Ranker
from tests.support.harness import REPO
from tests.support.knowledge import ingested

PEDALPOINT = REPO / "bench" / "data" / "heldout" / "bots" / "pedalpoint" / "knowledge"


@pytest.mark.parametrize(
    ("question", "document"),
    [
        ("carry", "carried"),  # "-ied" folds like "-ies": both "carry"
        ("copy", "copied"),
        ("insured", "insurance"),  # "-ance"/"-ence" after the verb endings: both "insur"
        ("balances", "balance"),
        ("preferences", "preference"),
        ("prices", "priced"),  # unchanged: the final e still goes
        ("reset", "resetting"),  # a doubled final consonant is undone after "-ing" and "-ed"
        ("stop", "stopped"),
        ("ship", "shipping"),
        ("get", "getting"),
    ],
)
def test_word_forms_meet_at_one_term(question: str, document: str) -> None:
    assert tokens_of(question) == tokens_of(document)


def test_short_words_and_other_endings_are_left_alone() -> None:
    # A suffix is only cut when three letters stay: "fence", "since" and "dance" keep their letters.
    assert tokens_of("fence since dance tied") == ["fenc", "sinc", "danc", "tied"]
    # A doubled l, s or z stays ("billing", "passed", "buzzing"), and "added" does not become "ad".
    assert tokens_of("billing passed buzzing added") == ["bill", "pass", "buzz", "add"]


def tokens_of(text: str) -> list[str]:
    from core.knowledge.terms import tokens

    return tokens(text)


async def test_a_question_in_other_word_forms_than_the_page_is_answered(tmp_path: Path) -> None:
    # "Children cannot be carried on Pedalpoint bikes": before, "carry" (the question) and "carried" (the page)
    # were "carry" and "carri", so the page seemed to lack the question's main verb and the answer decision
    # refused a question the page answers.
    async with ingested(tmp_path, "pedalpoint", PEDALPOINT) as knowledge:
        options = knowledge.options
        question = "can I carry my kid on the bike"
        ranker = Ranker(await knowledge.collection("pedalpoint"))
        found = await ranker.candidates(question, k=options.top_k, min_score=options.min_score)
        assert found is not None and found[0][0].source == "safety-and-riding-rules.md"
        passages = await knowledge.search("pedalpoint", question)
        assert passages is not None and [p.source for p in passages][:1] == ["safety-and-riding-rules.md"]


@pytest.mark.parametrize(
    ("question", "asks_price"),
    [
        ("how much is a ride?", True),
        ("How much for a day pass", True),
        ("how much?", True),
        ("how much does it cost", True),  # "cost" is "price" already, once
        ("how much storage do I get", False),  # an amount of something else
        ("how do I pay", False),
    ],
)
def test_how_much_asks_for_a_price(question: str, asks_price: bool) -> None:
    from core.knowledge.terms import query_terms

    terms = query_terms(question)
    assert terms.count("pric") == (1 if asks_price else 0)
    assert [t for t in terms if t != "pric"] == [t for t in tokens_of(question) if t != "pric"]


async def test_how_much_is_a_ride_finds_the_prices_page(tmp_path: Path) -> None:
    # "how much" is two stop words, so before the question's only term was "ride", which the price table
    # does not say: the prices page was not among the four passages found, and the offline answer quoted a
    # ride's time limit and a card hold instead of a price.
    async with ingested(tmp_path, "pedalpoint", PEDALPOINT) as knowledge:
        options = knowledge.options
        ranker = Ranker(await knowledge.collection("pedalpoint"))
        found = await ranker.candidates("how much is a ride?", k=options.top_k, min_score=options.min_score)
        assert found is not None and "prices-and-passes.md" in {p.source for p in found[0]}
