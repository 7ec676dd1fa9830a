"""Answer types (core.knowledge.answer_types): the kind of answer a question asks for, and whether the sentences
of the passages about it can supply one."""

from __future__ import annotations

import pytest

from core.knowledge.answer_types import AnswerType, expected_type, sentences, supplies, untyped
from core.knowledge.answerability import AnswerRule, Evidence
from core.knowledge.lexical import LexicalIndex, LexicalRow


@pytest.mark.parametrize(
    ("question", "kind"),
    [
        ("how much does the Team plan cost?", AnswerType.NUMBER),
        ("what's the price of the Business plan", AnswerType.NUMBER),
        ("How many people work at Tasklane?", AnswerType.NUMBER),
        ("how long do invitations stay valid", AnswerType.NUMBER),
        ("how often do you back up my data?", AnswerType.NUMBER),
        ("when was Tasklane founded?", AnswerType.TIME),
        ("my card payment failed, when will you retry it", AnswerType.TIME),
        ("what time will my box arrive", AnswerType.TIME),
        ("which days can you deliver?", AnswerType.TIME),
        ("who founded Tasklane?", AnswerType.PERSON),
        ("who can delete a project", AnswerType.PERSON),
        ("where is your head office?", AnswerType.PLACE),
        ("which countries do you ship to?", AnswerType.PLACE),
    ],
)
def test_the_question_form_gives_the_kind_of_answer(question: str, kind: AnswerType) -> None:
    assert expected_type(question) is kind


@pytest.mark.parametrize(
    "question",
    [
        "is there a limit on how many projects I can have?",  # asks whether
        "can I pay with a gift card?",
        "does it cost extra to add a guest?",
        "how do I reset my password",  # asks how to
        "what plans do you have?",
        "the app keeps crashing when I open the menu",  # "when" joining, not asking
        "what happens to SSO when we go back to Team",
        "",
    ],
)
def test_questions_that_ask_whether_or_how_to_ask_for_no_type(question: str) -> None:
    assert expected_type(question) is None


def test_a_second_sentence_can_carry_the_question() -> None:
    assert expected_type("I'm on the Team plan. How fast will you reply?") is AnswerType.NUMBER
    assert expected_type("Are you hiring? Who do I write to?") is AnswerType.PERSON


def test_each_type_is_supplied_by_what_answers_it_and_not_by_other_words() -> None:
    assert supplies(AnswerType.NUMBER, "The Team plan is $8 per user per month.")
    assert supplies(AnswerType.NUMBER, "Invitations are valid for seven days.")
    assert not supplies(AnswerType.NUMBER, "Tasklane is a project-management app for small teams.")
    assert supplies(AnswerType.TIME, "Failed payments are retried after 3 days.")
    assert supplies(AnswerType.TIME, "Boxes arrive on Tuesday or Wednesday.")
    assert not supplies(AnswerType.TIME, "Update the card on file under Settings.")
    assert supplies(AnswerType.PERSON, "Only owners and admins can delete a project.")
    assert supplies(AnswerType.PERSON, "The company was started by Jane Doe and Omar Said.", "who founded it?")
    assert supplies(AnswerType.PERSON, "Tasklane is made by Tasklane Labs Inc. in Lisbon.", "who makes it?")
    # One capitalised word, or a product label in bold, names no one.
    assert not supplies(AnswerType.PERSON, "Tasklane connects with Slack.", "who founded Tasklane?")
    assert not supplies(AnswerType.PERSON, "Documents are in the **Trust Center**.", "who founded Tasklane?")
    assert supplies(AnswerType.PLACE, "API keys are under Settings → Developers.", "where do I create an API key")
    assert supplies(AnswerType.PLACE, "We ship to Canada and the US.", "which countries do you ship to?")
    assert not supplies(AnswerType.PLACE, "Tasklane is a project-management app for small teams.", "where is it?")


def test_table_rows_are_read_under_their_header() -> None:
    text = "First replies:\n\n| Plan | First reply |\n|---|---|\n| Team | 1 business day |\n## Next\nDone."
    assert sentences(text) == ["First replies:", "| Plan | First reply | | Team | 1 business day |", "Done."]


PAGES = [
    "Tasklane is a project-management app for small teams. It connects with Slack and GitHub.",
    "The Team plan costs $8 per user per month. Invite people to work on your projects from Settings.",
]


def index() -> LexicalIndex:
    return LexicalIndex.build("r1", [LexicalRow(id=str(i), audience="*", text=t) for i, t in enumerate(PAGES)])


def test_untyped_looks_at_the_sentences_about_the_question_only() -> None:
    idf = index().idf
    # The price is in the sentence that speaks of the Team plan's cost: typed.
    assert untyped("how much does the Team plan cost?", PAGES, idf) == 0.0
    # "$8" is on the page, but not in the sentences about people and work; nor a person in those about Tasklane.
    assert untyped("how many people work at Tasklane?", PAGES[:1], idf) == 1.0
    assert untyped("who founded Tasklane?", PAGES[:1], idf) == 1.0
    # No type asked, nothing to miss; and nothing about the question at all misses it.
    assert untyped("can I invite people?", PAGES, idf) == 0.0
    assert untyped("when is the conference?", PAGES, idf) == 1.0


def test_a_missing_type_weighs_against_answering() -> None:
    rule = AnswerRule(min_score=0.32, coverage_weight=1.5, min_evidence=0.66, unknown_weight=0.2, type_weight=1.5)
    # "how many people work at Tasklane?": every word found, close in meaning, but no figure near them.
    assert rule.answers(Evidence(cosine=0.59, coverage=1.0))
    assert not rule.answers(Evidence(cosine=0.59, coverage=1.0, untyped=1.0))
    # Without its weight the evidence changes nothing (the rule before it).
    assert AnswerRule(min_score=0.32, coverage_weight=1.5, min_evidence=0.66).answers(
        Evidence(cosine=0.59, coverage=1.0, untyped=1.0)
    )
