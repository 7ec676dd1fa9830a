"""The message envelope: the only thing channel adapters and the core exchange.

Adapters normalize a platform event into an `Envelope`; the pipeline answers it with a `Reply`.
Both are frozen and round-trip through JSON, because in production they cross process
boundaries on the bus and the outbox.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

import orjson

from core.actions import Action, Button, Card, check_offer
from core.frozen import fast_init

#: the envelope channel names in use ("slack", "sms", ...): registered by the channel adapters,
#: which are found through the `relaybot.channels` entry point, so a package adds a channel (and
#: its names) without touching core. See `register_channel_names` and `known_channel_names`.
_channel_names: set[str] = set()
_installed_registered = False
_CHANNEL_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")


def register_channel_names(names: Iterable[str]) -> None:
    """Accept envelopes of these channels (an adapter's `channel_names`, e.g. ("sms", "whatsapp"))."""
    names = tuple(names)
    for name in names:
        if not _CHANNEL_NAME.fullmatch(name):
            raise ValueError(f"a channel name is a short lowercase word (a-z, 0-9, '-', '_'); got {name!r}")
    _channel_names.update(names)


def known_channel_names() -> frozenset[str]:
    """The registered names; the first call also registers those of every installed adapter.

    A process registers the adapters it loads (core.plugins); this covers a process that handles an
    envelope of an adapter it did not load (a test, a script). Core imports no channel for it: the
    adapters are found through their entry points.
    """
    global _installed_registered
    if not _installed_registered:
        _installed_registered = True
        from core.plugins import installed_channel_names  # core.plugins imports this module

        register_channel_names(installed_channel_names())
    return frozenset(_channel_names)


def new_id() -> str:
    """A unique, URL-safe identifier for envelopes and replies: 32 hex digits, as `uuid4().hex` gave.

    Unique, not secret (ids are logged and shown; nothing is authorized by knowing one), so they
    come from `random`'s generator, seeded from the OS and reseeded in a forked child, instead of
    a getrandom() system call per id, which cost more than the rest of making an envelope.
    """
    return f"{random.getrandbits(128):032x}"


def session_id_for(bot: str, channel: str, conversation_id: str) -> str:
    """The session of a conversation: one per bot, channel and conversation."""
    return f"{bot}:{channel}:{conversation_id}"


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware (UTC)")
    return value.astimezone(UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class Attachment:
    """A file the user sent: where to fetch it and what it is.

    `url` never carries a credential, because envelopes cross the bus, land in dead letters and are
    listed by `relaybot dead-letters list`. Where a platform's download URL would contain one (a
    Telegram file URL holds the bot token), it is a reference its channel resolves at use instead:
    `telegram-file:FILE_ID`, through `TelegramChannel.file_url` or `.download`.
    """

    url: str
    mime_type: str | None = None
    name: str | None = None
    size: int | None = None


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    """One inbound message, normalized by its channel adapter."""

    id: str
    bot: str
    channel: str
    channel_message_id: str
    conversation_id: str
    session_id: str
    user_id: str
    text: str
    reply_to: str
    received_at: datetime
    dedupe_key: str
    user_name: str | None = None
    attachments: tuple[Attachment, ...] = ()
    #: the customer organisation the user belongs to, where the channel knows it (documents can be
    #: ingested for one tenant: `relaybot ingest --audience tenant:ID`)
    tenant: str | None = None
    #: a click on a button the bot offered (its label is `text`); None for a typed message
    action: Action | None = None

    def __post_init__(self) -> None:
        if self.channel not in _channel_names and self.channel not in known_channel_names():
            raise ValueError(f"unknown channel {self.channel!r}; expected one of {sorted(known_channel_names())}")
        if not self.bot or not self.conversation_id or not self.user_id:
            raise ValueError("an envelope needs a bot, a conversation_id and a user_id")
        object.__setattr__(self, "received_at", _utc(self.received_at))

    @classmethod
    def create(
        cls,
        *,
        bot: str,
        channel: str,
        channel_message_id: str,
        conversation_id: str,
        user_id: str,
        text: str,
        reply_to: str | None = None,
        user_name: str | None = None,
        attachments: tuple[Attachment, ...] = (),
        received_at: datetime | None = None,
        tenant: str | None = None,
        action: Action | None = None,
    ) -> Envelope:
        """Build an envelope, deriving the session id and the dedupe key from the channel's ids."""
        return cls(
            id=new_id(),
            bot=bot,
            channel=channel,
            channel_message_id=channel_message_id,
            conversation_id=conversation_id,
            session_id=session_id_for(bot, channel, conversation_id),
            user_id=user_id,
            user_name=user_name,
            text=text,
            attachments=attachments,
            reply_to=reply_to if reply_to is not None else conversation_id,
            received_at=received_at or datetime.now(UTC),
            dedupe_key=f"{bot}:{channel}:{conversation_id}:{channel_message_id}",
            tenant=tenant,
            action=action,
        )

    def to_dict(self) -> dict[str, Any]:
        # Field by field, not dataclasses.asdict: that deep-copies every value, and this runs on every hop.
        data = {name: getattr(self, name) for name in _ENVELOPE_FIELDS}
        data["received_at"] = self.received_at.isoformat()
        data["attachments"] = [asdict(a) for a in self.attachments]
        data["action"] = self.action.to_dict() if self.action is not None else None
        return data

    def to_json(self) -> str:
        return _dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Envelope:
        fields = dict(data)
        fields["received_at"] = datetime.fromisoformat(fields["received_at"])
        fields["attachments"] = tuple(Attachment(**a) for a in fields.get("attachments", ()))
        # Envelopes queued before clicks existed have no "action".
        action = fields.get("action")
        fields["action"] = Action.from_dict(action) if action is not None else None
        return cls(**fields)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Envelope:
        return cls.from_dict(orjson.loads(raw))


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    """The core's answer to one envelope, in Markdown; the channel formats and splits it.

    `dedupe_key` is the inbound message's: the outbox sends one reply per key, however often the
    message was processed. `actions` are buttons offered under the text and `card` a titled block
    with buttons of its own (core.actions checks them: at most 10 in all, distinct ids); channels
    render them within their limits or as numbered text.
    `final=False` marks a streamed fragment (`text` is the new delta), which channels that can
    show streaming display at once; the final reply carries the whole text and, once recorded,
    its sequence number in the conversation.
    """

    envelope_id: str
    session_id: str
    bot: str
    channel: str
    reply_to: str
    text: str
    in_reply_to: str | None = None
    dedupe_key: str = ""
    seq: int | None = None
    parts: tuple[str, ...] = ()
    actions: tuple[Button, ...] = ()
    card: Card | None = None
    final: bool = True
    id: str = field(default_factory=new_id)
    #: the knowledge the answer cites, as listed at the end of `text`: "[1] Billing and invoices (Refunds)",
    #: the title a Markdown link when the document has a URL ("[2] [Plans](https://...)"); empty when the
    #: answer used no knowledge
    sources: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_offer(self.actions, self.card)

    def to_dict(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in _REPLY_FIELDS}
        for name in ("parts", "sources"):
            data[name] = list(data[name])
        data["actions"] = [b.to_dict() for b in self.actions]
        data["card"] = self.card.to_dict() if self.card is not None else None
        return data

    def to_json(self) -> str:
        return _dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Reply:
        fields = dict(data)
        fields["parts"] = tuple(fields.get("parts", ()))
        fields["actions"] = tuple(Button.from_dict(b) for b in fields.get("actions", ()))
        # Replies written before buttons existed may carry `quick_replies` (labels only): each
        # becomes a button whose click reads as the user typing its label.
        legacy = fields.pop("quick_replies", None) or ()
        if legacy and not fields["actions"]:
            fields["actions"] = tuple(Button(f"quick-{n}", label) for n, label in enumerate(legacy, start=1))
        card = fields.get("card")
        fields["card"] = Card.from_dict(card) if card is not None else None
        fields["sources"] = tuple(fields.get("sources", ()))
        return cls(**fields)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Reply:
        return cls.from_dict(orjson.loads(raw))


_ENVELOPE_FIELDS = tuple(f.name for f in fields(Envelope))
_REPLY_FIELDS = tuple(f.name for f in fields(Reply))


def _dumps(data: dict[str, Any]) -> str:
    """Compact JSON, non-ASCII as is: what `json.dumps(separators=(",", ":"), ensure_ascii=False)`
    writes, through orjson (0.65 against 5.5 µs for an envelope; every message is written to its
    queue and read back once, and every reply once more on the Redis topology)."""
    return orjson.dumps(data).decode()
