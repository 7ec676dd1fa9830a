"""Buttons on Slack: a Block Kit `actions` block under the reply, and the `block_actions` click.

Slack's limits: a section's text 3,000 characters, a button's text 75, its `value` 2,000 and its
`action_id` 255. A button carries `relaybot:INDEX` as its action_id and `SEQ:INDEX` as its value
(the reply's number in the conversation and the button's place in the offer): the button's own id
and value stay on the server, recorded with the reply in the history, and a click is resolved
against the conversation's newest offer (core.offers), like every channel's.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Any

from channels.inbound import Ignored
from core.actions import Button

__all__ = ["ACTION_ID", "MAX_SECTION_CHARS", "SlackClick", "blocks_for", "chosen_blocks", "parse_click"]

MAX_SECTION_CHARS = 3000
MAX_BUTTON_TEXT = 75
#: the action_id of every relaybot button (Bolt routes on it): "relaybot:0", "relaybot:1"...
ACTION_ID = re.compile(r"^relaybot:\d{1,2}$")
_VALUE = re.compile(r"(\d{1,18}):(\d{1,2})")


def _label(text: str) -> tuple[str, bool]:
    if len(text) <= MAX_BUTTON_TEXT:
        return text, False
    return text[: MAX_BUTTON_TEXT - 1] + "…", True


def blocks_for(text: str, buttons: tuple[Button, ...], seq: int) -> tuple[list[dict[str, Any]], list[str]]:
    """A section with the (already mrkdwn, ≤ 3,000 characters) text and an actions block with the buttons;
    and the ids of buttons whose label was cut to Slack's 75 characters (for the log)."""
    elements: list[dict[str, Any]] = []
    cut: list[str] = []
    for index, button in enumerate(buttons):
        label, truncated = _label(button.label)
        if truncated:
            cut.append(button.id)
        element: dict[str, Any] = {
            "type": "button",
            "text": {"type": "plain_text", "text": label},
            "action_id": f"relaybot:{index}",
            "value": f"{seq}:{index}",
        }
        if button.style is not None:
            element["style"] = button.style
        elements.append(element)
    section = {"type": "section", "text": {"type": "mrkdwn", "text": text}}
    return [section, {"type": "actions", "block_id": "relaybot-actions", "elements": elements}], cut


def chosen_blocks(blocks: list[dict[str, Any]], label: str, user: str) -> list[dict[str, Any]]:
    """The clicked message after the click: its buttons replaced by who chose what."""
    kept = [b for b in blocks if isinstance(b, dict) and b.get("type") != "actions"]
    # mrkdwn: &, < and > are control characters; a label is the user's to read, not markup.
    choice = html.escape(label, quote=False)
    return [*kept, {"type": "context", "elements": [{"type": "mrkdwn", "text": f"<@{user}> chose *{choice}*"}]}]


@dataclass(frozen=True, slots=True)
class SlackClick:
    """A click on one of our buttons (`block_actions`), in Slack's terms."""

    channel: str
    #: the clicked message, and the thread it is in (None: a DM answered inline)
    message_ts: str
    thread_ts: str | None
    user: str
    action_ts: str
    seq: int
    index: int
    blocks: list[dict[str, Any]]

    @property
    def conversation_id(self) -> str:
        """As channels.slack.inbound.Inbound names it: the channel plus the thread."""
        return f"{self.channel}:{self.thread_ts}" if self.thread_ts else self.channel


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def parse_click(body: dict[str, Any]) -> SlackClick | Ignored:
    actions = body.get("actions")
    action = _dict(actions[0]) if isinstance(actions, list) and actions else {}
    found = _VALUE.fullmatch(str(action.get("value") or ""))
    channel, message, user = _dict(body.get("channel")), _dict(body.get("message")), _dict(body.get("user"))
    channel_id, message_ts = _str(channel.get("id")), _str(message.get("ts"))
    user_id, action_ts = _str(user.get("id")), _str(action.get("action_ts"))
    if found is None or channel_id is None or message_ts is None or user_id is None or action_ts is None:
        return Ignored("a block action that is not a click on a relaybot button in a message")
    blocks = message.get("blocks")
    return SlackClick(
        channel=channel_id,
        message_ts=message_ts,
        thread_ts=_str(message.get("thread_ts")),
        user=user_id,
        action_ts=action_ts,
        seq=int(found.group(1)),
        index=int(found.group(2)),
        blocks=blocks if isinstance(blocks, list) else [],
    )
