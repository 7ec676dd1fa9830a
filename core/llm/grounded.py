"""The offline answer from knowledge passages: the few sentences that answer, cited, and nothing else.

Without a model the answer is quoted, so the work is in choosing what to quote. Each passage is cut into
units (sentences, list items, table rows, and a section heading that carries a figure: "Team — $8 per user
per month"); each unit is scored by the question's terms it shares (stemmed and with the same synonyms as BM25,
see core.knowledge.terms), by the terms its document and section titles share, and by whether it has
a figure (a price, a limit, a duration), which counts most when the question asks for an amount ("how much",
"how many", "cost", "limit"). The best three units at most, from any of the passages, make the answer, in the
order they appear in their passage; a table row is quoted under its header, so "| Team | 1 business day |"
still says what the columns are, and a step of a numbered procedure brings the whole procedure when the question
asks how to do something, so the answer never starts at step 3.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from core.knowledge.passage import Passage
from core.knowledge.relevance import CALENDAR_WORDS, vocabulary
from core.knowledge.spelling import Speller, english_words
from core.knowledge.terms import query_terms, tokens

__all__ = ["OFFLINE_GROUNDED_NOTE", "grounded_answer"]

OFFLINE_GROUNDED_NOTE = "_(Offline mode: quoted from the knowledge base, without a language model.)_"
#: at most this many units, and about this many characters, make an answer: short enough to read on a phone
_MAX_UNITS = 3
_ANSWER_CHARS = 480
#: a numbered procedure up to this long is quoted whole when one of its steps is chosen; a longer one as chosen
_PROCEDURE_CHARS = 640
#: how much a unit's passage being ranked first (then second, ...) counts: 1 / (1 + rank index) of this. Chosen
#: on the tuned set (grounded answers 0.87 -> 0.91; 0.5 gave 0.89, 2 gave 0.89); the held-out sets unchanged.
_RANK_WEIGHT = 1.0
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[-A-Z0-9*\"'(])")
_LIST_MARKER = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")
_STEP_MARKER = re.compile(r"^\s*(\d+)[.)]\s+")
_TABLE_SEPARATOR = re.compile(r"^\|?[\s:|-]+\|?$")
# A figure: digits, a currency sign, or a number word ("four plans", "unlimited projects").
_FIGURE = re.compile(
    r"\d|[$€£]|\b(?:one|two|three|four|five|six|seven|eight|nine|ten|twelve|twenty|thirty|hundred|thousand|"
    r"unlimited)\b",
    re.IGNORECASE,
)
# A question that asks for an amount, a limit, a duration or a version.
_ASKS_FIGURE = re.compile(
    r"\b(?:how\s+(?:much|many|long|often|soon|fast|big|large|old)|cost|costs|price|prices|pricing|fee|fees|"
    r"charge|pay|limit|limits|max|maximum|min|minimum|up\s+to|size|version|number\s+of|plans?)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class _Unit:
    passage: int
    order: int
    text: str
    terms: frozenset[str]
    figure: bool
    #: a table row's header and separator lines, so it is quoted under them
    table: tuple[str, str] | None = None
    #: the line of a list item this unit is (a sentence of), so list items are quoted as a list; None: prose
    item: int | None = None
    #: a list item's first sentence, on its later ones: it names what they are about ("**Day Pass**: €9 for
    #: 24 hours."), so a later one is never quoted without it, as a table row is never quoted without its header
    lead: str | None = None
    #: a numbered list item's number, and the line of its list's step 1 (which names the procedure); None for
    #: prose, bullets and a numbered list that does not start at 1. A step's indented item has a procedure and
    #: no number.
    step: int | None = None
    procedure: int | None = None
    #: a list item's list: the line of its first item; a sentence that ends in a colon: the list it opens
    block: int | None = None
    opens: int | None = None


def grounded_answer(question: str, passages: Sequence[Passage], *, excerpt: str) -> str:
    """The units of `passages` that answer `question`, each cited [n] by its passage's number in `passages`;
    or "I don't know that yet" when there are no passages, or none names what the question names. The list of
    sources is the caller's (core.knowledge.sources.cite), as for a model's answer."""
    if not passages:
        return (
            f"I don't know that yet: I found nothing about “{excerpt}” in what I've been given.\n\n"
            "_(I'm running in offline mode, answering only from the knowledge base.)_"
        )
    names = _names(question)
    # A passage is quoted only if it names what the question names ("my Gmail password" is not answered
    # by the page about Tasklane passwords, however close the two are otherwise).
    # Each kept with its number among all the passages given: it is cited by that number, as a model cites
    # it; core.knowledge.sources numbers the cited ones again and lists them.
    numbers = [n for n, p in enumerate(passages, start=1) if names <= _words(f"{p.title} {p.heading} {p.text}")]
    quotable = [passages[n - 1] for n in numbers]
    if not quotable:
        return (
            f"I don't know that yet: what I have about “{excerpt}” does not mention "
            f"{', '.join(sorted(names))}.\n\n"
            "_(I'm running in offline mode, answering only from the knowledge base.)_"
        )
    chosen = _choose(question, quotable)
    if not chosen:
        return (
            f"I don't know that yet: what I found about “{excerpt}” does not answer it.\n\n"
            "_(I'm running in offline mode, answering only from the knowledge base.)_"
        )
    # Group by passage, the passage of the first unit first (the best, or a procedure); within a passage, in the
    # passage's order.
    groups: dict[int, list[_Unit]] = {}
    for unit in chosen:
        groups.setdefault(unit.passage, []).append(unit)
    parts: list[str] = []
    for index, units in groups.items():
        text = _render(sorted(units, key=lambda u: u.order))
        number = numbers[index]
        # After a table the citation needs a paragraph of its own, or Markdown reads it as one more row.
        parts.append(f"{text}\n\n[{number}]" if text.endswith("|") else f"{text} [{number}]")
    return "\n\n".join([*parts, OFFLINE_GROUNDED_NOTE])


_NAME_WORD = re.compile(r"[A-Za-z][A-Za-z0-9]*")
# Nationalities and languages (German, Italian, Japanese, Spanish, French) describe; they do not name a thing.
_DEMONYM = ("an", "ese", "ish", "ch")


def _names(question: str) -> set[str]:
    """The question's key terms that a quote must contain: the names in it (a capitalised or camel-case word
    not at a sentence start, not "I", not an acronym, a nationality, a day or a month), lower-cased. Numbers
    are not among them: "iOS 15?" is answered by "iOS 16 or later"."""
    names: set[str] = set()
    for sentence in re.split(r"[.!?]\s+", question):
        for position, word in enumerate(_NAME_WORD.findall(sentence)):
            if position == 0 or word == "I" or word.isupper() or word.endswith(_DEMONYM):
                continue  # "a German company" asks about VAT in the EU, not about a thing called German
            if word.lower() in CALENDAR_WORDS:
                continue  # "cancelled on Thursday": a day, not a thing the passage must name
            if word[0].isupper() or any(c.isupper() for c in word[1:]):
                names.add(word.lower())
    return names


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def _choose(question: str, passages: Sequence[Passage]) -> list[_Unit]:
    every = [_units(index, passage) for index, passage in enumerate(passages)]
    titles = [set(tokens(f"{passage.title} {passage.heading}")) for passage in passages]
    held = set().union(*titles, *(unit.terms for units in every for unit in units))
    # A typo ("pasword") is read as the passages' own word one edit away, as the search read it.
    words = vocabulary(f"{passage.title} {passage.heading} {passage.text}" for passage in passages)
    question = Speller(words, holds=held.__contains__, dictionary=english_words()).mend(question)
    terms = set(query_terms(question))
    figure_weight = 3.0 if _ASKS_FIGURE.search(question) else 0.5
    contexts = [terms & title for title in titles]  # the question's terms in each passage's titles
    scored: list[tuple[float, _Unit]] = []
    for index, passage in enumerate(passages):
        context = contexts[index]
        # Every word of the question is in the page's or the section's title ("i cant login", and the page is
        # "Troubleshooting login problems"): the section is about it, though its sentences say "sign in".
        titled = bool(terms) and context == terms
        for unit in every[index]:
            shared = len(terms & unit.terms)
            if not shared and not titled and not (figure_weight > 1 and unit.figure and context):
                continue  # a unit must answer the question's words, or give the figure a titled section asks
            # The passage's own closeness counts too: a row of the "Response times" table beats a sentence
            # that happens to say "time" and "team" in a section about time tracking.
            score = 2.0 * shared + 1.0 * len(context) + figure_weight * unit.figure + 4.0 * passage.score
            # And the retrievers' order (the fusion of the embedding's and BM25's rankings, which the cosine
            # alone does not show): a sentence of the first passage beats an equal one of the fourth.
            score += _RANK_WEIGHT / (1 + index)
            scored.append((score, unit))
    if not scored:
        # Nothing in the passages shares a word with the question: close in meaning, but quoting one would
        # not answer it ("do you cater weddings?" and a product's overview), so the answer is "I don't know".
        return []
    scored.sort(key=lambda item: (-item[0], item[1].passage, item[1].order))
    best, top = scored[0]
    chosen: list[_Unit] = []
    used = 0
    for score, unit in scored:
        if len(chosen) == _MAX_UNITS:
            break
        # More of the best unit's passage if it is half as good; another passage only if nearly as good.
        if score < best * (0.5 if unit.passage == top.passage else 0.8):
            continue
        if chosen and used + len(unit.text) > _ANSWER_CHARS:
            continue
        chosen.append(unit)
        used += len(unit.text)
    # A procedure is quoted whole when its section is about the question: half its terms or more are in the
    # page's or section's title ("how do I reset my password?" and "Resetting a forgotten password"). "How do I
    # add a teammate to my workspace?" is not asked by "Setting up a new workspace", whose step 3 "Invite your
    # teammates" is the answer. "How long is the reset link valid?" asks for the step that says, not the
    # procedure.
    procedures: set[int] = set()
    if figure_weight <= 1:
        procedures = {index for index, context in enumerate(contexts) if 2 * len(context) >= len(terms)}
    return _whole_lists(chosen, every, procedures=procedures)


def _whole_lists(chosen: list[_Unit], every: Sequence[Sequence[_Unit]], *, procedures: set[int]) -> list[_Unit]:
    """`chosen` with the lists they need to be understood, each as long as the answer can hold
    (`_PROCEDURE_CHARS` in all):

    - a sentence that ends in a colon, with the list that follows it ("a workspace can be hosted in one of three
      regions:" and the three), where it stands among the chosen;
    - a step of a numbered procedure in one of the passages `procedures`, with every step of it: "Open the
      email and click Reset password" alone tells the user nothing of the two steps before it. The procedure
      comes first in the answer, as what a "how do I" question asks for.

    The other chosen units follow as long as the answer stays short; a list too long to quote whole stays as
    chosen."""
    whole: list[_Unit] = []
    used = 0  # the characters of `whole`
    procedure: _Unit | None = None
    for unit in chosen:
        if unit in whole:
            continue
        if unit.opens is not None:
            members = [unit, *(u for u in every[unit.passage] if u.block == unit.opens)]
        elif unit.passage in procedures and unit.procedure is not None:
            members = [u for u in every[unit.passage] if u.procedure == unit.procedure]
        else:
            continue
        added = [u for u in members if u not in whole]
        size = sum(len(u.text) for u in added)
        if used + size <= _PROCEDURE_CHARS:
            whole.extend(added)
            used += size
            if unit.opens is None and procedure is None:
                procedure = unit
    if not whole:
        return chosen
    ordered = [*whole]
    for unit in chosen:
        if unit not in whole and used + len(unit.text) <= max(_ANSWER_CHARS, used):
            ordered.append(unit)
            used += len(unit.text)
    first = (procedure or chosen[0]).passage
    # The first passage first, the others in the order their best unit was chosen (a stable sort).
    rank: dict[int, int] = {}
    for n, unit in enumerate(chosen):
        rank.setdefault(unit.passage, n)
    return sorted(ordered, key=lambda u: (u.passage != first, rank[u.passage]))


def _units(index: int, passage: Passage) -> list[_Unit]:
    """The passage as quotable units: sentences, list items, table rows (with their table's header) and the
    section heading when it carries a figure. Heading lines inside the text are dropped."""
    units: list[_Unit] = []
    step: int | None = None
    procedure: int | None = None  # the line of step 1 of the numbered list being read, if it started at 1
    block: int | None = None  # the line of the first item of the list being read

    def add(
        text: str,
        table: tuple[str, str] | None = None,
        item: int | None = None,
        lead: str | None = None,
        opens: int | None = None,
    ) -> None:
        words = text if table is None else f"{table[0]} {text}"
        figure = bool(_FIGURE.search(text))
        units.append(
            _Unit(
                index,
                len(units),
                text,
                frozenset(tokens(words)),
                figure,
                table,
                item,
                lead,
                step,
                procedure,
                block if item is not None else None,
                opens,
            )
        )

    if passage.heading and passage.heading != passage.title and _FIGURE.search(passage.heading):
        add(f"**{passage.heading}**")
    header: str | None = None
    separator = "|---|"
    lines = passage.text.splitlines()
    for number, raw in enumerate(lines):
        line = raw.strip()
        marker = _STEP_MARKER.match(line)
        step = int(marker.group(1)) if marker else None
        listed = bool(_LIST_MARKER.match(line))
        if step == 1:
            procedure = number
        elif step is None and line and not (raw[:1].isspace() and listed):
            # Prose, a bullet, a table or a heading ends the procedure; a blank line or an indented item of a
            # step's own ("2. Choose the format:" and its formats) does not.
            procedure = None
        if listed and (block is None or step == 1):
            block = number
        elif line and not listed:
            block = None
        if line.startswith("|"):
            if _TABLE_SEPARATOR.match(line):
                separator = line
            elif header is None:
                header = line  # a table's first row names its columns
            else:
                add(line, (header, separator))
            continue
        header = None
        if not line or line.startswith("#"):
            continue
        item = number if listed else None
        lead: str | None = None
        sentences = [
            text
            for text in (_LIST_MARKER.sub("", s).strip() for s in _SENTENCE.split(_LIST_MARKER.sub("", line)))
            if text  # "... refunded. - **Annual plans**: ..." is two
        ]
        for position, sentence in enumerate(sentences):
            opens = None
            if item is None and position == len(sentences) - 1 and sentence.endswith(":"):
                opens = _list_after(lines, number)
            add(sentence, item=item, lead=lead, opens=opens)
            if item is not None and lead is None:
                lead = _sentence_end(sentence)
    return units


def _list_after(lines: Sequence[str], number: int) -> int | None:
    """The line of the list that starts right after line `number` (blank lines apart), if one does."""
    for later in range(number + 1, len(lines)):
        if lines[later].strip():
            return later if _LIST_MARKER.match(lines[later].strip()) else None
    return None


def _sentence_end(text: str) -> str:
    return text if text.endswith((".", "!", "?", ":", "**")) else f"{text}."


def _render(units: list[_Unit]) -> str:
    """Sentences joined into a paragraph; two or more list items as a list, one per line (run together,
    "**Unlimited projects** and up to 100 members **10 GB of storage**" read as one garbled sentence); table
    rows as a table under their header (once per table). Blocks apart by a blank line, which is what ends a
    table in Markdown."""
    blocks: list[tuple[str, list[str]]] = []  # (kind: "prose", "list" or "table", lines)
    table: tuple[str, str] | None = None
    item: int | None = None
    procedure: int | None = None
    # One item quoted alone reads as a sentence, not as a list of one.
    listed = len({u.item for u in units if u.item is not None and u.table is None}) > 1
    for unit in units:
        if unit.table is not None:
            if unit.table != table:
                blocks.append(("table", list(unit.table)))
                table = unit.table
            blocks[-1][1].append(unit.text)
            continue
        table = None
        text = _sentence_end(unit.text)
        kind = "list" if listed and unit.item is not None else "prose"
        # A procedure is a list of its own: a bullet quoted after it is not step 5.
        if not blocks or blocks[-1][0] != kind or (kind == "list" and unit.procedure != procedure):
            blocks.append((kind, []))
        procedure = unit.procedure
        lines = blocks[-1][1]
        if unit.item is not None and unit.item == item:
            lines[-1] = f"{lines[-1]} {text}"  # another sentence of the same item
        else:
            if unit.lead is not None:
                text = f"{unit.lead} {text}"  # an item's later sentence, under its first
            bullet = "-"
            if unit.procedure is not None:
                bullet = f"{unit.step}." if unit.step is not None else "   -"  # a step's own item, under it
            lines.append(f"{bullet} {text}" if kind == "list" else text)
        item = unit.item
    return "\n\n".join(" ".join(lines) if kind == "prose" else "\n".join(lines) for kind, lines in blocks)
