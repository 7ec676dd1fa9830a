"""Buttons on Telegram: an inline keyboard under the reply, and the click's short key.

`callback_data` holds at most 64 bytes, and a button's id (64 characters) and value (1,000) do not
fit. So it carries a short key, `a:SEQ:INDEX`: the reply's sequence number in the conversation and
the button's place in its offer. The buttons themselves are kept server side, with the reply in the
history (core.actions.offer_to_meta), shared by every process and as durable as the conversation;
a click is resolved against the conversation's newest offer (core.offers), and a key of an older
reply is answered "no longer available" instead of being queued.
"""

from __future__ import annotations

import re

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from channels.choices import offered
from core.envelope import Reply

__all__ = ["MAX_CALLBACK_DATA", "keyboard_for", "parse_key"]

#: the Bot API's limit on callback_data, in bytes
MAX_CALLBACK_DATA = 64
#: short labels share a row (Yes / No); longer ones get a row each so Telegram does not cut them
_SHORT_LABEL = 14
_PER_ROW = 3
_KEY = re.compile(r"a:(\d{1,18}):(\d{1,2})")


def key(seq: int, index: int) -> str:
    data = f"a:{seq}:{index}"
    assert len(data.encode()) <= MAX_CALLBACK_DATA  # at most 2 + 18 + 1 + 2 characters
    return data


def parse_key(data: str | None) -> tuple[int, int] | None:
    """(seq, index) from a button's callback_data; None for data that is not ours."""
    match = _KEY.fullmatch(data or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def keyboard_for(reply: Reply) -> InlineKeyboardMarkup | None:
    """The reply's buttons as an inline keyboard; None without buttons or before the reply is recorded
    (without a seq no click could be resolved: the text, which asks in words, still goes out)."""
    buttons = offered(reply)
    if not buttons or reply.seq is None:
        return None
    cells = [InlineKeyboardButton(b.label, callback_data=key(reply.seq, n)) for n, b in enumerate(buttons)]
    if all(len(b.label) <= _SHORT_LABEL for b in buttons):
        rows = [cells[i : i + _PER_ROW] for i in range(0, len(cells), _PER_ROW)]
    else:
        rows = [[cell] for cell in cells]
    return InlineKeyboardMarkup(rows)
