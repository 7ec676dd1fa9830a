"""The answer decision (core.knowledge.answerability): closeness in meaning and the question's own words."""

from __future__ import annotations

from core.knowledge.answerability import AnswerRule, Evidence, coverage, unknown_share
from core.knowledge.lexical import LexicalIndex, LexicalRow

PAGES = [
    "Accepted payment methods: Visa, Mastercard and American Express cards, PayPal, and bank transfer.",
    "Update the card on file under Settings, Billing, Payment method.",
    "Failed payments are retried after 3 days; update the card to pay at once.",
    "Invoices are emailed to the billing contact each month.",
]


def index() -> LexicalIndex:
    return LexicalIndex.build("r1", [LexicalRow(id=str(i), audience="*", text=t) for i, t in enumerate(PAGES)])


def test_a_rare_word_missing_from_the_passages_costs_more_than_a_common_one() -> None:
    idf = index().idf
    # "card" is on three pages of four: its absence would say little. "gift" is on none: the passages do not
    # speak of what is asked.
    assert idf("gift") > idf("invoic") > idf("card")
    gift = coverage("can I pay with a gift card?", [PAGES[0]], idf)
    transfer = coverage("is bank transfer accepted?", [PAGES[0]], idf)
    assert transfer == 1.0 and gift < 0.5


def test_a_question_of_stop_words_only_is_fully_covered() -> None:
    assert coverage("what is it?", [PAGES[0]], index().idf) == 1.0


def test_the_rule_answers_a_close_passage_that_shares_few_words_and_a_less_close_one_that_shares_many() -> None:
    rule = AnswerRule(min_score=0.2, coverage_weight=1.0, min_evidence=0.8)
    assert rule.answers(Evidence(cosine=0.7, coverage=0.2))  # near in meaning
    assert rule.answers(Evidence(cosine=0.3, coverage=0.6))  # the question's words, less near
    assert not rule.answers(Evidence(cosine=0.45, coverage=0.2))  # a near miss: neither
    assert not rule.answers(Evidence(cosine=0.15, coverage=1.0))  # below the floor, whatever it shares
    # Without a coverage weight the rule is the cosine threshold alone (the default before the rule).
    assert AnswerRule(min_score=0.33).answers(Evidence(cosine=0.33, coverage=0.0))
    assert not AnswerRule(min_score=0.33).answers(Evidence(cosine=0.32, coverage=1.0))


def test_a_word_no_document_holds_counts_as_unknown_and_one_held_elsewhere_does_not() -> None:
    built = index()
    # "invoices" is on the fourth page only, not on the first (the passage found): missing from the passage,
    # not unknown. "gift" is on no page at all.
    assert coverage("gift card invoices", [PAGES[0]], built.idf) < 0.5
    share = unknown_share("gift card invoices", built.idf, built.holds)
    assert share == built.idf("gift") / (built.idf("gift") + built.idf("card") + built.idf("invoic"))
    assert unknown_share("card invoices", built.idf, built.holds) == 0.0
    assert unknown_share("what is it?", built.idf, built.holds) == 0.0


def test_unknown_words_weigh_against_answering() -> None:
    rule = AnswerRule(min_score=0.3, coverage_weight=1.5, min_evidence=0.66, unknown_weight=0.2)
    assert rule.answers(Evidence(cosine=0.48, coverage=0.18, unknown=0.0))
    assert not rule.answers(Evidence(cosine=0.48, coverage=0.18, unknown=0.8))  # "an app for my smartwatch?"
