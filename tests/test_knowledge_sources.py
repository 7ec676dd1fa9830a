"""A reply's sources: only what the answer cites, renumbered, the same list in the text and in `sources`."""

from __future__ import annotations

from core.knowledge.passage import Passage
from core.knowledge.sources import cite

PLANS = Passage(text="Team costs $8.", source="plans.md", title="Plans and pricing", heading="Team")
PLANS_OVERVIEW = Passage(text="Four plans.", source="plans.md", title="Plans and pricing", heading="Plans and pricing")
BILLING = Passage(
    text="Invoices are PDFs.", source="billing.md", title="Billing", heading="Invoices", url="https://h.example/billing"
)
TEAM_AGAIN = Passage(text="Team has SSO.", source="plans.md", title="Plans and pricing", heading="Team")


def test_only_the_cited_passages_are_sources_numbered_in_the_order_they_are_cited() -> None:
    answer = cite("Invoices are PDFs [3]. Team costs $8 [1].", [PLANS, PLANS_OVERVIEW, BILLING])
    assert answer.text == (
        "Invoices are PDFs [1]. Team costs $8 [2].\n\n"
        "Sources: [1] [Billing](https://h.example/billing) (Invoices) · [2] Plans and pricing (Team)"
    )
    assert answer.sources == ("[1] [Billing](https://h.example/billing) (Invoices)", "[2] Plans and pricing (Team)")
    assert [p.source for p in answer.passages] == ["billing.md", "plans.md"]


def test_a_document_without_a_section_is_cited_by_its_title_and_one_section_has_one_number() -> None:
    answer = cite("Four plans [2]; Team costs $8 [1] and has SSO [3].", [PLANS, PLANS_OVERVIEW, TEAM_AGAIN])
    assert answer.text.startswith("Four plans [1]; Team costs $8 [2] and has SSO [2].")
    assert answer.sources == ("[1] Plans and pricing", "[2] Plans and pricing (Team)")


def test_an_answer_that_cites_nothing_lists_nothing() -> None:
    for text in ("Hello! How can I help?", "I don't know that yet.", "See RFC [7]."):
        answer = cite(text, [PLANS, BILLING])
        assert answer.text == text and answer.sources == () and answer.passages == ()
    assert cite("Team costs $8 [1].", []).sources == ()


def test_the_models_own_sources_list_is_replaced_by_the_same_list_as_the_field() -> None:
    text = "Team costs $8 [1], invoices are PDFs [2].\n\nSources:\n[1] plans.md\n[2] billing.md"
    answer = cite(text, [PLANS, BILLING])
    assert answer.text.count("Sources:") == 1
    assert answer.text.endswith("\n\nSources: " + " · ".join(answer.sources))
    # [1, 2] is two citations; a bracketed year or a Markdown link is not a citation.
    answer = cite("Both [1, 2], since [2024], see [1](https://x.example).", [PLANS, BILLING])
    assert answer.text.startswith("Both [1][2], since [2024], see [1](https://x.example).")
    assert len(answer.sources) == 2
