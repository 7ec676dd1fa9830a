"""Buttons as plain text, for channels that cannot show them (SMS, WhatsApp without templates).

The offer becomes a line under the reply, "Reply 1 for Billing, 2 for A problem, 3 for Cancel.",
and an answer that is one of those numbers, or a label as written, maps back to the button of the
conversation's newest offer (core.offers), as a click would.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from core.actions import MAX_LABEL_CHARS, Button, Card
from core.envelope import Reply

__all__ = ["card_text", "choice_for", "numbered", "offered", "with_choices"]

_NUMBER = re.compile(r"\s*(\d{1,2})\s*[.)]?\s*")
_TRAILING = re.compile(r"[\s.!?]+$")


def offered(reply: Reply) -> tuple[Button, ...]:
    """Every button of the reply: its own, then its card's (the order the numbers follow)."""
    return (*reply.actions, *(reply.card.actions if reply.card else ()))


def numbered(buttons: Sequence[Button]) -> str:
    """ "Reply 1 for Yes, 2 for No." ("" without buttons)."""
    if not buttons:
        return ""
    choices = ", ".join(f"{n} for {b.label}" for n, b in enumerate(buttons, start=1))
    return f"Reply {choices}."


def card_text(card: Card) -> str:
    """A card as Markdown, for a channel without cards: bold title, text, `label: value` fields, image link."""
    lines = [f"**{card.title}**"]
    if card.text:
        lines.append(card.text)
    lines += [f"{field.label}: {field.value}" for field in card.fields]
    if card.image_url:
        lines.append(card.image_url)
    return "\n\n".join(lines)


def with_choices(reply: Reply) -> str:
    """The reply's Markdown with its card as text and its buttons as numbered choices under it."""
    pieces = [reply.text]
    if reply.card is not None:
        pieces.append(card_text(reply.card))
    if line := numbered(offered(reply)):
        pieces.append(line)
    return "\n\n".join(pieces)


def choice_for(text: str, buttons: Sequence[Button]) -> Button | None:
    """The button an answer names: its number ("2", "2.") or its label (any case); None otherwise."""
    if not buttons or len(text) > MAX_LABEL_CHARS + 5:
        return None
    number = _NUMBER.fullmatch(text)
    if number is not None:
        index = int(number.group(1)) - 1
        return buttons[index] if 0 <= index < len(buttons) else None
    wanted = _TRAILING.sub("", text.strip()).casefold()
    return next((b for b in buttons if _TRAILING.sub("", b.label.strip()).casefold() == wanted), None)
