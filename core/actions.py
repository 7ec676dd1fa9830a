"""Interactive messages: the buttons and cards a reply offers, and the click that comes back.

The core decides *what* is offered (`Reply.actions`, `Reply.card`); each channel decides *how* its
platform shows it, within its limits, with a text fallback. A click is an inbound message like any
other (`Envelope.action`, with the button's label as its text, so history and the model read
naturally). Everything here is checked when built, so a bad button fails in the handler that made it,
not in a channel adapter later.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from core.errors import InvalidAction

__all__ = [
    "MAX_ACTIONS",
    "Action",
    "Button",
    "ButtonStyle",
    "Card",
    "CardField",
    "buttons_from_json",
    "buttons_to_json",
    "check_offer",
    "offer_from_meta",
    "offer_to_meta",
]

#: buttons one reply may offer, the card's included (Slack's actions block and a widget row both fit 10)
MAX_ACTIONS = 10
MAX_ID_CHARS = 64
MAX_LABEL_CHARS = 80
MAX_VALUE_CHARS = 1000
MAX_CARD_TEXT_CHARS = 3000
MAX_CARD_FIELDS = 10
#: ids travel in URLs, callback data and logs: a small alphabet every platform accepts
_ID = re.compile(r"[A-Za-z0-9_.:-]+")

ButtonStyle = Literal["primary", "danger"]
_STYLES = ("primary", "danger")


def _text(value: object, what: str, *, limit: int, empty_ok: bool = False) -> str:
    if not isinstance(value, str):
        raise InvalidAction(f"{what} must be a string, not {type(value).__name__}")
    if not empty_ok and not value.strip():
        raise InvalidAction(f"{what} must not be empty")
    if len(value) > limit:
        raise InvalidAction(f"{what} is limited to {limit} characters; this one has {len(value)}")
    return value


def _check_id(value: object, what: str) -> str:
    _text(value, what, limit=MAX_ID_CHARS)
    if not _ID.fullmatch(cast(str, value)):
        raise InvalidAction(f"{what} {value!r}: use letters, digits and _ . : - only")
    return cast(str, value)


@dataclass(frozen=True, slots=True)
class Button:
    """One choice: `id` names it to handlers (`@bot.action("id")`), `label` is what the user sees
    (and what the click's message text becomes), `value` is extra data handed back on the click."""

    id: str
    label: str
    value: str | None = None
    style: ButtonStyle | None = None

    def __post_init__(self) -> None:
        _check_id(self.id, "a button's id")
        _text(self.label, f"button {self.id!r}: label", limit=MAX_LABEL_CHARS)
        if self.value is not None:
            _text(self.value, f"button {self.id!r}: value", limit=MAX_VALUE_CHARS, empty_ok=True)
        if self.style is not None and self.style not in _STYLES:
            raise InvalidAction(
                f"button {self.id!r}: style must be one of {list(_STYLES)} or absent, not {self.style!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "label": self.label}
        if self.value is not None:
            data["value"] = self.value
        if self.style is not None:
            data["style"] = self.style
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Button:
        if not isinstance(data, Mapping):
            raise InvalidAction(f"a button must be an object with id and label, not {type(data).__name__}")
        unknown = set(data) - {"id", "label", "value", "style"}
        if unknown:
            raise InvalidAction(f"a button has id, label, value and style; unknown: {sorted(unknown)}")
        if "id" not in data or "label" not in data:
            raise InvalidAction("a button needs an 'id' and a 'label'")
        return cls(id=data["id"], label=data["label"], value=data.get("value"), style=data.get("style"))

    @classmethod
    def of(cls, item: Button | Mapping[str, Any]) -> Button:
        """A button as a handler may give it: a Button or a dict of its fields."""
        return item if isinstance(item, Button) else cls.from_dict(item)


@dataclass(frozen=True, slots=True)
class CardField:
    label: str
    value: str

    def __post_init__(self) -> None:
        _text(self.label, "a card field's label", limit=MAX_LABEL_CHARS)
        _text(self.value, f"card field {self.label!r}: value", limit=MAX_VALUE_CHARS, empty_ok=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class Card:
    """A titled block: text, an optional image, label/value fields and its own buttons."""

    title: str
    text: str = ""
    image_url: str | None = None
    fields: tuple[CardField, ...] = ()
    actions: tuple[Button, ...] = ()

    def __post_init__(self) -> None:
        _text(self.title, "a card's title", limit=MAX_LABEL_CHARS * 2)
        _text(self.text, "a card's text", limit=MAX_CARD_TEXT_CHARS, empty_ok=True)
        if self.image_url is not None and not re.match(r"https?://", str(self.image_url)):
            raise InvalidAction(f"a card's image_url must be an http(s) URL, not {self.image_url!r}")
        if len(self.fields) > MAX_CARD_FIELDS:
            raise InvalidAction(f"a card has at most {MAX_CARD_FIELDS} fields; this one has {len(self.fields)}")
        check_offer(self.actions)

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "text": self.text,
            "image_url": self.image_url,
            "fields": [{"label": f.label, "value": f.value} for f in self.fields],
            "actions": [b.to_dict() for b in self.actions],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Card:
        if not isinstance(data, Mapping) or "title" not in data:
            raise InvalidAction("a card must be an object with at least a 'title'")
        fields = data.get("fields") or ()
        try:
            card_fields = tuple(CardField(label=f["label"], value=f["value"]) for f in fields)
        except (KeyError, TypeError) as exc:
            raise InvalidAction("a card's fields are objects with a 'label' and a 'value'") from exc
        return cls(
            title=data["title"],
            text=data.get("text", ""),
            image_url=data.get("image_url"),
            fields=card_fields,
            actions=tuple(Button.of(b) for b in data.get("actions") or ()),
        )


def check_offer(buttons: Sequence[Button], card: Card | None = None) -> None:
    """Raise InvalidAction unless these buttons (with the card's) are at most MAX_ACTIONS with distinct ids."""
    every = [*buttons, *(card.actions if card else ())]
    if len(every) > MAX_ACTIONS:
        raise InvalidAction(
            f"a reply offers at most {MAX_ACTIONS} buttons (its card's included); this one has {len(every)}"
        )
    seen: set[str] = set()
    for button in every:
        if not isinstance(button, Button):
            raise InvalidAction(f"expected a Button, got {type(button).__name__}")
        if button.id in seen:
            raise InvalidAction(f"two buttons with the id {button.id!r}: a click must name one choice")
        seen.add(button.id)


@dataclass(frozen=True, slots=True, kw_only=True)
class Action:
    """A click: which button (`id`), its `value`, and the message that offered it (`message_id`: the
    offering reply's sequence number in the conversation, or the platform's message id)."""

    id: str
    value: str | None = None
    message_id: str | None = None

    def __post_init__(self) -> None:
        _check_id(self.id, "an action's id")
        if self.value is not None:
            _text(self.value, "an action's value", limit=MAX_VALUE_CHARS, empty_ok=True)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "value": self.value, "message_id": self.message_id}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Action:
        if not isinstance(data, Mapping) or "id" not in data:
            raise InvalidAction("an action must be an object with an 'id'")
        message_id = data.get("message_id")
        return cls(id=data["id"], value=data.get("value"), message_id=None if message_id is None else str(message_id))


def buttons_to_json(buttons: Iterable[Button]) -> str:
    """The compact form kept with a recorded reply (history meta values are strings)."""
    return json.dumps([b.to_dict() for b in buttons], separators=(",", ":"), ensure_ascii=False)


def buttons_from_json(raw: str) -> tuple[Button, ...]:
    try:
        items = json.loads(raw)
    except ValueError as exc:
        raise InvalidAction("stored buttons are not JSON") from exc
    if not isinstance(items, list):
        raise InvalidAction("stored buttons must be a JSON list")
    return tuple(Button.from_dict(item) for item in items)


#: the keys of a recorded reply's meta that keep its offer (history meta values are strings)
META_ACTIONS = "actions"
META_CARD = "card"


def offer_to_meta(buttons: Sequence[Button], card: Card | None) -> dict[str, str]:
    """What RecordStage stores with the reply, so a re-run turn, a resumed widget and a channel checking a click
    (any process: the history is shared) all see what was offered."""
    meta: dict[str, str] = {}
    if buttons:
        meta[META_ACTIONS] = buttons_to_json(buttons)
    if card is not None:
        meta[META_CARD] = json.dumps(card.to_dict(), separators=(",", ":"), ensure_ascii=False)
    return meta


def offer_from_meta(meta: Mapping[str, str]) -> tuple[tuple[Button, ...], Card | None]:
    """The buttons and card a recorded reply offered (none for a reply without)."""
    buttons = buttons_from_json(meta[META_ACTIONS]) if meta.get(META_ACTIONS) else ()
    card = Card.from_dict(json.loads(meta[META_CARD])) if meta.get(META_CARD) else None
    return buttons, card
