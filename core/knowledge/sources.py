"""A reply's sources: the passages its answer cites, listed for people the same way in the text and in the
reply's `sources` field.

The model (and the offline provider) cites the passages of its context as [1], [2], numbered as they were
given. Only the passages the answer cites are sources: an answer that cites none did not use the knowledge
(a greeting, "I don't know"), and lists none. The cited ones are numbered again in the order the answer first
cites them (so the list reads [1], [2], whatever the context's numbering was), passages of the same document
and section share a number, and the list is appended to the text as its last paragraph:

    Sources: [1] Plans and pricing (Team) · [2] [Billing and invoices](https://help.example.com/billing)

Each entry of `sources` is one of those, "[n] " included; a title is a Markdown link when the document's
front matter gives a `url`. A "Sources:" paragraph the model wrote itself at the end is replaced.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from core.frozen import fast_init
from core.knowledge.passage import Passage

__all__ = ["SOURCES_PREFIX", "CitedAnswer", "cite"]

SOURCES_PREFIX = "Sources: "
# [1], [2, 3] or [1][2]; not a Markdown link's text ("[1](https://...)").
_CITATION = re.compile(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\](?!\()")
_TRAILING_SOURCES = re.compile(r"\n\s*\n\s*(?:\*\*|__)?Sources?(?:\*\*|__)?\s*:(?:(?!\n\s*\n).)*\s*\Z", re.S | re.I)


@fast_init
@dataclass(frozen=True, slots=True)
class CitedAnswer:
    #: the answer with its citations renumbered and, if it cites any, the Sources paragraph last
    text: str
    #: "[1] Title (Section)" for each cited document section, as listed in the text
    sources: tuple[str, ...]
    #: the passage behind each entry of `sources`, in the same order
    passages: tuple[Passage, ...]


def cite(text: str, passages: Sequence[Passage]) -> CitedAnswer:
    """`text` (an answer given `passages`, numbered from 1) with the sources it cites."""
    if not passages:
        return CitedAnswer(text=text, sources=(), passages=())
    # Citations are read from the whole text, a list the model wrote at the end included; that list is
    # then replaced by ours.
    body = _TRAILING_SOURCES.sub("", text.rstrip())
    renumber: dict[int, int] = {}
    by_label: dict[str, int] = {}
    cited: list[Passage] = []
    for match in _CITATION.finditer(text):
        for number in _numbers(match.group(1)):
            if 1 <= number <= len(passages) and number not in renumber:
                passage = passages[number - 1]
                if passage.label not in by_label:
                    cited.append(passage)
                    by_label[passage.label] = len(cited)
                renumber[number] = by_label[passage.label]
    if not cited:
        return CitedAnswer(text=text, sources=(), passages=())

    def replace(match: re.Match[str]) -> str:
        numbers = _numbers(match.group(1))
        if not all(n in renumber for n in numbers):
            return match.group(0)  # not (only) a citation of a passage: "[2024]", "[3]" of 2 passages
        return "".join(f"[{n}]" for n in dict.fromkeys(renumber[n] for n in numbers))

    sources = tuple(f"[{n}] {p.markdown_label}" for n, p in enumerate(cited, start=1))
    body = _CITATION.sub(replace, body)
    return CitedAnswer(
        text=f"{body.rstrip()}\n\n{SOURCES_PREFIX}{' · '.join(sources)}", sources=sources, passages=tuple(cited)
    )


def _numbers(group: str) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", group)]
