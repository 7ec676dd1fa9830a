"""Typos mended against the documents' words (core.knowledge.spelling), and left alone where a word the
documents lack means the question is one they do not answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.knowledge.spelling import Speller, english_words
from core.knowledge.terms import tokens
from tests.support.harness import REPO
from tests.support.knowledge import ingested

DOCUMENTS = "To reset a forgotten password, open the sign-in page. Cancel your subscription under Billing. " + (
    "Receipts and invoices are emailed. The start page lists your boards. Export a project as CSV."
)


def speller(text: str = DOCUMENTS) -> Speller:
    known = set(text.lower().replace(".", " ").replace(",", " ").split())
    held = set(tokens(text))
    return Speller(known, holds=held.__contains__, dictionary=english_words())


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        ("forgot my pasword", "forgot my password"),  # a letter left out
        ("how do I cancell my subscribtion", "how do I cancel my subscription"),  # one added, one changed
        ("where are my invoices and reciepts", "where are my invoices and receipts"),  # two swapped
        ("can I export my recipts as a PDF", "can I export my receipts as a PDF"),
        ("how do i add ppl to my board", "how do i add people to my board"),  # chat shorthand, spelt out
        ("reset my pw pls", "reset my password please"),
    ],
)
def test_a_typo_becomes_the_documents_word_one_edit_away(typed: str, meant: str) -> None:
    assert speller().mend(typed) == meant


@pytest.mark.parametrize(
    "text",
    [
        "does it work on a smart TV?",  # "smart" is a word, though the documents say "start"
        "i forgot my pasowrd",  # two edits from "password": too far to be sure
        "is there an app for my Gmail",  # a name, typed as one: never changed
        "is there a gmail add-on",  # the first letter is kept: not "email"
        "my boadr",  # short words are left alone
        "whats new",  # a stop word typed as people do
        "my receipt",  # a form of a word the documents use ("receipts")
    ],
)
def test_words_that_are_not_typos_of_the_documents_words_are_left_alone(text: str) -> None:
    assert speller().mend(text) == text


def test_shorthand_the_documents_use_as_it_is_stays() -> None:
    assert speller("Set a PW for the PDF export.").mend("what is a pw") == "what is a pw"


def test_a_typo_two_words_are_equally_close_to_is_left_alone() -> None:
    # "acount" is one edit from both "account" and "amount": guessing could answer the wrong question.
    assert speller("Your account and the amount due.").mend("my acount") == "my acount"


def test_the_english_words_are_read_from_the_installed_model() -> None:
    words = english_words()
    assert {"password", "smart", "bread", "receipts"} <= words
    assert not {"pasword", "subscribtion"} & words


async def test_a_question_with_a_typo_finds_the_page_the_word_meant(tmp_path: Path) -> None:
    # Before, "pasword" split into pieces for the embedding (cosine 0.26 to the page, under the threshold) and
    # was a term no chunk holds, so the example bot said "I don't know" to "forgot my pasword".
    async with ingested(tmp_path, "support", REPO / "bots" / "support" / "knowledge") as knowledge:
        typed = await knowledge.search("support", "forgot my pasword")
        spelt = await knowledge.search("support", "forgot my password")
        assert typed and spelt is not None and [p.source for p in typed] == [p.source for p in spelt]
        assert typed[0].source == "account-and-passwords.md"
