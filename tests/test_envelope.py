from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest

from core.actions import Action, Button, Card, CardField
from core.envelope import Attachment, Envelope, Reply
from core.errors import InvalidAction


def make(**kw: object) -> Envelope:
    values: dict[str, object] = {
        "bot": "support",
        "channel": "slack",
        "channel_message_id": "Ev123",
        "conversation_id": "C1:1700000000.000100",
        "user_id": "slack:U123",
        "user_name": "Alice",
        "text": "Hi — can I get a refund? 💸",
        "attachments": (Attachment(url="https://files/x.png", mime_type="image/png", name="x.png", size=12),),
    }
    values.update(kw)
    return Envelope.create(**values)  # type: ignore[arg-type]


def test_envelope_json_round_trip_keeps_every_field() -> None:
    envelope = make()
    again = Envelope.from_json(envelope.to_json())
    assert again == envelope
    assert again.attachments[0].mime_type == "image/png"
    assert again.received_at.tzinfo is not None


def test_create_derives_session_and_dedupe_key_from_channel_ids() -> None:
    first, second = make(), make()
    assert first.id != second.id
    assert first.session_id == second.session_id == "support:slack:C1:1700000000.000100"
    assert first.dedupe_key == second.dedupe_key
    assert make(channel_message_id="Ev124").dedupe_key != first.dedupe_key
    assert first.reply_to == first.conversation_id


def test_envelope_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        make().text = "changed"  # type: ignore[misc]


def test_received_at_is_normalized_to_utc_and_must_be_aware() -> None:
    plus_two = timezone(timedelta(hours=2))
    envelope = make(received_at=datetime(2026, 1, 1, 12, 0, tzinfo=plus_two))
    assert envelope.received_at == datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
    assert envelope.received_at.utcoffset() == timedelta(0)
    with pytest.raises(ValueError, match="timezone-aware"):
        make(received_at=datetime(2026, 1, 1, 12, 0))


def test_unknown_channel_is_rejected_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown channel 'fax'.*slack"):
        make(channel="fax")


def test_reply_json_round_trip() -> None:
    reply = Reply(
        envelope_id="e1",
        session_id="support:web:abc",
        bot="support",
        channel="web",
        reply_to="abc",
        in_reply_to="c1",
        text="**Hello**",
        seq=4,
        parts=("**Hello**",),
        actions=(Button("billing", "Billing"), Button("other", "Something else", value="x", style="primary")),
    )
    assert Reply.from_json(reply.to_json()) == reply
    with pytest.raises(dataclasses.FrozenInstanceError):
        reply.text = "x"  # type: ignore[misc]


# --- buttons, cards and clicks (core.actions) -------------------------------------------------------


def reply_with(**kw: object) -> Reply:
    values: dict[str, object] = {
        "envelope_id": "e1",
        "session_id": "support:web:abc",
        "bot": "support",
        "channel": "web",
        "reply_to": "abc",
        "text": "Which topic?",
    }
    values.update(kw)
    return Reply(**values)  # type: ignore[arg-type]


def test_a_reply_with_buttons_and_a_card_round_trips_through_json() -> None:
    card = Card(
        title="Order TL-10042",
        text="Team plan",
        image_url="https://example.com/x.png",
        fields=(CardField("Seats", "5"),),
        actions=(Button("invoice", "Invoice", value="TL-10042"),),
    )
    reply = reply_with(actions=(Button("yes", "Yes", style="danger"), Button("no", "No")), card=card)
    again = Reply.from_json(reply.to_json())
    assert again == reply
    assert again.card is not None and again.card.actions[0].value == "TL-10042"


def test_the_wire_format_is_compact_json_with_unicode_as_is() -> None:
    # Entries already queued on Redis, and other releases reading them, expect exactly this text.
    envelope = make(
        text="Prix : 12 € — “ok”\n日本",
        action=Action(id="cancel.yes", value="v", message_id="4"),
        attachments=(Attachment(url="https://example.com/a.png", mime_type="image/png", size=3),),
    )
    reply = reply_with(actions=(Button("yes", "Oui ✓"),), sources=("[1] Tarifs (Plans)",))
    for message in (envelope, reply):
        assert message.to_json() == json.dumps(message.to_dict(), separators=(",", ":"), ensure_ascii=False)
    assert Envelope.from_json(envelope.to_json().encode()) == envelope
    with pytest.raises(ValueError):
        Envelope.from_json('{"id": "x"')  # a worker buries what it cannot read


def test_a_click_round_trips_and_an_envelope_from_before_clicks_still_parses() -> None:
    envelope = make(text="Yes", action=Action(id="cancel.yes", value="v", message_id="4"))
    assert Envelope.from_json(envelope.to_json()) == envelope
    old = envelope.to_dict()
    del old["action"]  # queued on Redis by a release without buttons
    assert Envelope.from_dict(old).action is None


def test_a_reply_from_before_buttons_with_quick_replies_becomes_buttons() -> None:
    old = reply_with().to_dict()
    del old["actions"], old["card"]
    old["quick_replies"] = ["Billing", "Something else"]
    reply = Reply.from_dict(old)
    assert [(b.id, b.label) for b in reply.actions] == [("quick-1", "Billing"), ("quick-2", "Something else")]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Button("", "Yes"), "id must not be empty"),
        (lambda: Button("has space", "Yes"), "letters, digits"),
        (lambda: Button("x" * 65, "Yes"), "limited to 64 characters"),
        (lambda: Button("yes", "  "), "label must not be empty"),
        (lambda: Button("yes", "Yes", style="loud"), "style must be one of"),  # type: ignore[arg-type]
        (lambda: reply_with(actions=tuple(Button(f"b{n}", "B") for n in range(11))), "at most 10 buttons"),
        (lambda: reply_with(actions=(Button("a", "A"), Button("a", "B"))), "two buttons with the id 'a'"),
        (
            lambda: reply_with(
                actions=tuple(Button(f"b{n}", "B") for n in range(6)),
                card=Card(title="t", actions=tuple(Button(f"c{n}", "C") for n in range(5))),
            ),
            "card's included",
        ),
        (lambda: Card(title="t", image_url="javascript:alert(1)"), "http"),
        (lambda: Button.from_dict({"id": "a", "label": "A", "colour": "red"}), "unknown: \\['colour'\\]"),
        (lambda: Action.from_dict({"value": "x"}), "needs|must be an object with an 'id'"),
    ],
)
def test_a_bad_button_card_or_click_is_a_clear_error(build: Callable[[], object], message: str) -> None:
    with pytest.raises(InvalidAction, match=message):
        build()
    assert issubclass(InvalidAction, ValueError)  # envelope parsing callers catch ValueError
