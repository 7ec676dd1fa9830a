from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone

import pytest

from core.envelope import Attachment, Envelope, Reply


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
        quick_replies=("Billing", "Something else"),
    )
    assert Reply.from_json(reply.to_json()) == reply
    with pytest.raises(dataclasses.FrozenInstanceError):
        reply.text = "x"  # type: ignore[misc]
