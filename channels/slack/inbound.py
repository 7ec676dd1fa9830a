"""Slack events parsed into what an envelope needs (`parse`, see `channels.inbound`): pure functions, no I/O.

Which events become messages:
- direct messages (`channel_type == "im"`): every user message;
- `app_mention`, and channel `message`s that mention the bot (the same Slack message arrives as both
  when the app subscribes to `message.channels`; both map to one conversation and one message id,
  so the bus's atomic claim takes it once): the mention is stripped from the text;
- thread replies in channels without a mention: when the thread is one the bot already answers in
  (it started the thread, or it has a history there: the adapter checks), if `thread_replies` is on.
Ignored: the bot's own messages, edits, deletions, joins and other subtypes, other bots (unless
`ignore_bots` is off), and empty messages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from channels.inbound import Ignored
from core.envelope import Attachment

# Subtypes that are still a person writing to the bot; everything else (message_changed,
# message_deleted, channel_join, bot_message, ...) is ignored.
_USER_SUBTYPES = frozenset({None, "file_share", "thread_broadcast", "me_message"})
_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")

Kind = Literal["dm", "mention", "thread"]


class SlackFile(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str | None = None
    name: str | None = None
    title: str | None = None
    mimetype: str | None = None
    size: int | None = None
    url_private: str | None = None
    url_private_download: str | None = None


class SlackMessageEvent(BaseModel):
    """The fields of a Slack `message` / `app_mention` event relaybot reads (the rest is ignored)."""

    model_config = ConfigDict(extra="ignore")

    type: str
    channel: str
    ts: str
    user: str | None = None
    text: str = ""
    subtype: str | None = None
    bot_id: str | None = None
    thread_ts: str | None = None
    parent_user_id: str | None = None
    channel_type: str | None = None
    files: list[SlackFile] = []


class SlackRef(BaseModel):
    """A team, user, channel or enterprise given as an object rather than its id."""

    model_config = ConfigDict(extra="allow")

    id: str | None = None


class SlackPayload(BaseModel):
    """A request body as far as Bolt reads it to route the request and build its context, typed.

    Bolt indexes these fields without checking their types (a team that is a number, an event that
    is a list, authorizations that are not objects raise inside Bolt, a 500); Slack never sends
    such a body, so a signed one is refused as malformed before Bolt sees it. Everything else in
    the body is kept as it is.
    """

    model_config = ConfigDict(extra="allow")

    type: str | None = None
    token: str | None = None
    api_app_id: str | None = None
    event_id: str | None = None
    enterprise: str | SlackRef | None = None
    team: str | SlackRef | None = None
    user: str | SlackRef | None = None
    channel: str | SlackRef | None = None
    enterprise_id: str | None = None
    team_id: str | None = None
    user_id: str | None = None
    channel_id: str | None = None
    thread_ts: str | None = None
    user_team: str | None = None
    authorizations: list[SlackPayload] | None = None
    response_urls: list[dict[str, Any]] | None = None
    # No null event: Bolt reads `body.get("event", {})` as an object.
    event: SlackPayload = None  # type: ignore[assignment]
    message: SlackPayload | None = None
    previous_message: SlackPayload | None = None
    item: SlackPayload | None = None
    assistant_thread: SlackPayload | None = None


def check_request_body(body: object) -> None:
    """Raise ValueError, naming the fields, for a body Bolt cannot read (see `SlackPayload`)."""
    if not isinstance(body, dict):
        raise ValueError("the body is not a JSON object")
    try:
        SlackPayload.model_validate(body)
    except ValidationError as exc:
        fields = ", ".join(".".join(map(str, e["loc"])) or "body" for e in exc.errors()[:5])
        raise ValueError(f"{exc.error_count()} field(s) of the wrong type: {fields}") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class Inbound:
    """A Slack message the bot answers."""

    kind: Kind
    channel: str
    ts: str
    #: where the answer goes: None for inline in a DM, else the thread's ts
    thread_ts: str | None
    user: str
    text: str
    attachments: tuple[Attachment, ...] = ()
    #: a reply in a thread whose first message is the bot's
    in_bot_thread: bool = False

    @property
    def conversation_id(self) -> str:
        """The channel plus the thread: one conversation per thread (per DM when answered inline)."""
        return f"{self.channel}:{self.thread_ts}" if self.thread_ts else self.channel


def parse_reply_to(reply_to: str) -> tuple[str, str | None]:
    """(channel, thread_ts) from an envelope's reply_to (its conversation id)."""
    channel, _, thread = reply_to.partition(":")
    return channel, thread or None


def strip_mention(text: str, bot_user_id: str | None) -> str:
    if bot_user_id:
        text = re.sub(rf"<@{re.escape(bot_user_id)}(?:\|[^>]*)?>", "", text)
    return re.sub(r"[ \t]{2,}", " ", text).strip()


def mentions(text: str, user_id: str | None) -> bool:
    return bool(user_id) and any(m.group(1) == user_id for m in _MENTION.finditer(text))


def attachments_of(files: list[SlackFile]) -> tuple[Attachment, ...]:
    """Slack files as attachments; their URLs need the bot token (files:read) to fetch."""
    out = []
    for f in files:
        url = f.url_private_download or f.url_private
        if url:
            out.append(Attachment(url=url, mime_type=f.mimetype, name=f.name or f.title, size=f.size))
    return tuple(out)


def parse(
    event: dict[str, Any],
    *,
    bot_user_id: str | None,
    bot_id: str | None = None,
    ignore_bots: bool = True,
    dm_threads: bool = False,
) -> Inbound | Ignored:
    """What to do with one event: a message to answer, or why it is ignored.

    A channel thread reply without a mention comes back with kind "thread"; whether the bot is in
    that thread needs the history, so the adapter decides.
    """
    try:
        msg = SlackMessageEvent.model_validate(event)
    except ValidationError as exc:
        return Ignored(f"not a message event we read: {exc.error_count()} invalid field(s)")
    if msg.type not in ("message", "app_mention"):
        return Ignored(f"event type {msg.type!r}")
    if msg.subtype not in _USER_SUBTYPES:
        return Ignored(f"subtype {msg.subtype!r}")
    if msg.user is None:
        return Ignored("no user")
    if (bot_user_id and msg.user == bot_user_id) or (bot_id and msg.bot_id == bot_id):
        return Ignored("the bot's own message")
    if msg.bot_id and ignore_bots:
        return Ignored("posted by another bot")
    attachments = attachments_of(msg.files)
    text = strip_mention(msg.text, bot_user_id)
    if not text and attachments:
        text = "(sent " + ", ".join(a.name or "a file" for a in attachments) + ")"
    if not text:
        return Ignored("empty message")
    in_thread = msg.thread_ts is not None and msg.thread_ts != msg.ts
    if msg.channel_type == "im" or msg.channel.startswith("D"):
        thread = msg.thread_ts if in_thread else (msg.ts if dm_threads else None)
        kind: Kind = "dm"
    elif msg.type == "app_mention" or mentions(msg.text, bot_user_id):
        thread = msg.thread_ts or msg.ts
        kind = "mention"
    elif in_thread:
        thread = msg.thread_ts
        kind = "thread"
    else:
        return Ignored("a channel message that does not mention the bot")
    return Inbound(
        kind=kind,
        channel=msg.channel,
        ts=msg.ts,
        thread_ts=thread,
        user=msg.user,
        text=text,
        attachments=attachments,
        in_bot_thread=in_thread and bool(bot_user_id) and msg.parent_user_id == bot_user_id,
    )
