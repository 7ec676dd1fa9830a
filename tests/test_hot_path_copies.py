"""The hand-written copies on the per-message path (instead of `dataclasses.replace`) keep every
field: a field added to the class later and forgotten there would otherwise vanish silently."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from core.queue.base import QueueEntry
from core.stores.base import StoredMessage


def test_a_restamped_message_keeps_every_field_it_does_not_set() -> None:
    message = StoredMessage(
        role="assistant",
        content="Hello",
        created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        ref="m-1",
        seq=7,
        meta={"kind": "notice"},
    )
    later = datetime(2026, 2, 3, tzinfo=UTC)

    copy = message.restamped(seq=8, created_at=later, meta={"action": "yes"})

    assert copy == dataclasses.replace(message, seq=8, created_at=later, meta={"action": "yes"})
    assert {f.name for f in dataclasses.fields(StoredMessage)} == {
        "role", "content", "created_at", "ref", "seq", "meta", "_tokens", "_notice",
    }  # fmt: skip
    assert copy.tokens == message.tokens
    assert message.is_notice and not copy.is_notice  # read from each one's own meta


def test_an_entry_with_its_attempt_keeps_every_other_field() -> None:
    entry = QueueEntry(id="5-0", partition="support:web:c", ticket=3, payload='{"x":1}', attempt=1)

    assert entry.with_attempt(2) == dataclasses.replace(entry, attempt=2)
    assert {f.name for f in dataclasses.fields(QueueEntry)} == {"id", "partition", "ticket", "payload", "attempt"}
