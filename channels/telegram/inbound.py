"""Telegram updates as relaybot sees them: which messages to answer, and what they say.

Pure functions over python-telegram-bot's typed `Update` (no network): the adapter publishes, with
files as `telegram-file:` references (see `channels.telegram.files`). A message is answered in a
private chat always; in a group only when it mentions the bot, replies to it or is a command
addressed to it (unless groups_require_mention is off). Forum topics are their own conversations
(`chat_id:thread_id`), so each topic has its own session and its replies go back into the topic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from telegram import Message, MessageEntity, Update, User
from telegram.constants import ChatType

from channels.inbound import Ignored

PRIVATE = ChatType.PRIVATE
GROUPS = (ChatType.GROUP, ChatType.SUPERGROUP)
#: the updates relaybot handles; set-webhook and long polling ask Telegram for these only
ALLOWED_UPDATES = ("message", "my_chat_member", "callback_query")


@dataclass(frozen=True, slots=True)
class FileRef:
    """A file the user sent, by its Bot API file id (its download URL would carry the bot token)."""

    file_id: str
    kind: str
    mime_type: str | None = None
    name: str | None = None
    size: int | None = None


@dataclass(frozen=True, slots=True)
class Inbound:
    """One message to answer."""

    chat_id: int
    thread_id: int | None
    message_id: int
    user_id: str
    user_name: str | None
    text: str
    files: tuple[FileRef, ...] = ()
    command: str | None = None

    @property
    def conversation_id(self) -> str:
        """The chat, or the chat's forum topic: also where the reply goes (`reply_to`)."""
        return f"{self.chat_id}:{self.thread_id}" if self.thread_id is not None else str(self.chat_id)


@dataclass(frozen=True, slots=True)
class Click:
    """A press on an inline keyboard button (a callback query): `data` is the button's callback_data."""

    query_id: str
    chat_id: int
    thread_id: int | None
    #: the message that carries the keyboard
    message_id: int
    user_id: str
    user_name: str | None
    data: str

    @property
    def conversation_id(self) -> str:
        return f"{self.chat_id}:{self.thread_id}" if self.thread_id is not None else str(self.chat_id)


@dataclass(frozen=True, slots=True)
class MembershipChange:
    """The bot's own membership in a private chat changed: the user blocked (or unblocked) it."""

    chat_id: int
    blocked: bool


def parse_address(reply_to: str) -> tuple[int, int | None]:
    """`chat_id` or `chat_id:thread_id` (see `Inbound.conversation_id`) as numbers."""
    chat, _, thread = reply_to.partition(":")
    try:
        return int(chat), (int(thread) if thread else None)
    except ValueError as exc:
        raise ValueError(f"not a Telegram chat address: {reply_to!r}") from exc


def parse(update: Update, *, me: User, require_mention: bool) -> Inbound | Click | Ignored | MembershipChange:
    """What to do with one update (see `channels.inbound`)."""
    if update.callback_query is not None:
        return _click(update)
    member = update.my_chat_member
    if member is not None:
        if member.chat.type != PRIVATE:
            return Ignored("membership change in a group")
        return MembershipChange(member.chat.id, blocked=member.new_chat_member.status == "kicked")
    if update.message is None:
        kind = next((k for k in _UPDATE_KINDS if getattr(update, k, None) is not None), "unknown")
        return Ignored(f"update type {kind!r} is not handled")
    return _message(update.message, me=me, require_mention=require_mention)


_UPDATE_KINDS = (
    "edited_message",
    "channel_post",
    "edited_channel_post",
    "inline_query",
    "chosen_inline_result",
    "message_reaction",
    "chat_member",
    "chat_join_request",
    "poll",
    "poll_answer",
)


def _click(update: Update) -> Click | Ignored:
    query = update.callback_query
    assert query is not None
    message = query.message
    if not isinstance(query.data, str) or not isinstance(query.id, str):
        return Ignored("callback query without data (a game or an inline message)")
    if message is None or not _is_int(message.chat.id) or not _is_int(message.message_id):
        return Ignored("callback query on a message too old for Telegram to send")
    sender = query.from_user
    if sender.is_bot or not _is_int(sender.id):
        return Ignored("callback query from a bot")
    thread = getattr(message, "message_thread_id", None)
    topic = bool(getattr(message, "is_topic_message", False))
    return Click(
        query_id=query.id,
        chat_id=message.chat.id,
        thread_id=thread if topic and _is_int(thread) else None,
        message_id=message.message_id,
        user_id=f"telegram:{sender.id}",
        user_name=sender.full_name or sender.username,
        data=query.data,
    )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _wrongly_typed(message: Message) -> str | None:
    """The first field relaybot reads that is not of the Bot API's type, if any.

    python-telegram-bot builds its objects without checking types; Telegram never sends such an
    update, and one that did get through would be published with, say, a list for a user id.
    """
    sender, origin, thread = message.from_user, message.sender_chat, message.message_thread_id
    checks = {
        "message_id": _is_int(message.message_id),
        "chat.id": _is_int(message.chat.id),
        "chat.type": isinstance(message.chat.type, str),
        "from.id": sender is None or _is_int(sender.id),
        "sender_chat.id": origin is None or _is_int(origin.id),
        "message_thread_id": thread is None or _is_int(thread),
        "text": message.text is None or isinstance(message.text, str),
        "caption": message.caption is None or isinstance(message.caption, str),
    }
    return next((name for name, ok in checks.items() if not ok), None)


def _message(message: Message, *, me: User, require_mention: bool) -> Inbound | Ignored:
    if (wrong := _wrongly_typed(message)) is not None:
        return Ignored(f"malformed message: {wrong} is not of the Bot API's type")
    sender = message.from_user
    if sender is not None and sender.is_bot:
        return Ignored("message from a bot")
    chat = message.chat
    if chat.type not in (PRIVATE, *GROUPS):
        return Ignored(f"chat type {chat.type!r} is not handled")
    text = message.text or message.caption or ""
    entities = message.parse_entities() if message.text else message.parse_caption_entities()
    command = _command(text, entities, me)
    if command == "":
        return Ignored("a command for another bot")
    if chat.type in GROUPS and require_mention and not (command or _addresses_bot(message, entities, me)):
        return Ignored("group message that neither mentions nor replies to the bot")
    text = _without_mention(text, me)
    if command:
        # "/help@our_bot args" → "/help args": the bot's handlers see one spelling of a command.
        text = re.sub(r"^/\w+(@\w+)?", command, text, count=1)
    files = _files(message)
    if not text.strip() and not files:
        return Ignored("message without text or a supported attachment")
    if sender is not None:
        user_id, user_name = f"telegram:{sender.id}", sender.full_name or sender.username
    elif message.sender_chat is not None:  # an anonymous group admin, or a channel posting in the group
        user_id, user_name = f"telegram:chat:{message.sender_chat.id}", message.sender_chat.title
    else:
        return Ignored("message without a sender")
    return Inbound(
        chat_id=chat.id,
        thread_id=message.message_thread_id if message.is_topic_message else None,
        message_id=message.message_id,
        user_id=user_id,
        user_name=user_name,
        text=text.strip() or _placeholder(files),
        files=files,
        command=command,
    )


def _command(text: str, entities: dict[MessageEntity, str], me: User) -> str | None:
    """'/start' for a command at the start of the message; '' when addressed to another bot; else None."""
    for entity, value in entities.items():
        if entity.type == MessageEntity.BOT_COMMAND and entity.offset == 0:
            name, _, target = value.partition("@")
            if target and target.lower() != (me.username or "").lower():
                return ""
            return name
    return None


def _addresses_bot(message: Message, entities: dict[MessageEntity, str], me: User) -> bool:
    replied = message.reply_to_message
    if replied is not None and replied.from_user is not None and replied.from_user.id == me.id:
        return True
    handle = f"@{me.username}".lower() if me.username else None
    for entity, value in entities.items():
        if entity.type == MessageEntity.MENTION and handle and value.lower() == handle:
            return True
        if entity.type == MessageEntity.TEXT_MENTION and entity.user is not None and entity.user.id == me.id:
            return True
    return False


def _without_mention(text: str, me: User) -> str:
    if not me.username:
        return text
    return re.sub(rf"(?<![\w/])@{re.escape(me.username)}\b", "", text, flags=re.IGNORECASE).strip()


def _files(message: Message) -> tuple[FileRef, ...]:
    files: list[FileRef] = []
    if message.photo:
        largest = max(message.photo, key=lambda p: p.width * p.height)
        files.append(FileRef(largest.file_id, "photo", "image/jpeg", None, largest.file_size))
    if message.document is not None:
        d = message.document
        files.append(FileRef(d.file_id, "document", d.mime_type, d.file_name, d.file_size))
    if message.voice is not None:
        v = message.voice
        files.append(FileRef(v.file_id, "voice", v.mime_type or "audio/ogg", None, v.file_size))
    if message.audio is not None:
        a = message.audio
        files.append(FileRef(a.file_id, "audio", a.mime_type, a.file_name, a.file_size))
    if message.video is not None:
        m = message.video
        files.append(FileRef(m.file_id, "video", m.mime_type, m.file_name, m.file_size))
    return tuple(files)


def _placeholder(files: tuple[FileRef, ...]) -> str:
    """Text for a message that is only attachments: the pipeline and the model always get some text."""
    names = {"photo": "a photo", "voice": "a voice message", "audio": "an audio file", "video": "a video"}
    described = [names.get(f.kind) or f"a document ({f.name or 'unnamed'})" for f in files]
    return "[sent " + ", ".join(described) + "]"
