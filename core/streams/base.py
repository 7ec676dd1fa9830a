"""Progress of replies being shown, shared so that any adapter process can take over.

Streams: who shows a streamed reply, and where. Parts: which parts of a split reply were sent,
so a delivery retried after a partial send (a 429 on part 2 of 3) resumes instead of repeating.

A channel that streams by editing one message (Slack `chat.update`, Telegram `editMessageText`)
gets every fragment in every process that hosts it. The first process to `claim` a reply posts
the message and records its reference; the final reply, delivered by whichever process takes it
from the outbox, `close`s the stream and edits that message with the complete text. Entries
expire: a stream is only interesting while its turn runs.

Backends side by side: memory.py (one process), redis.py (every process).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

STREAM_TTL_SECONDS = 3600


@dataclass(frozen=True, slots=True)
class StreamState:
    #: the platform's reference to the message being edited (Slack ts, Telegram message id)
    message_ref: str | None = None
    closed: bool = False
    #: the text the final reply put in the message; a late fragment edit re-applies it
    final_text: str | None = None


class StreamRegistry(Protocol):
    async def claim(self, reply_key: str) -> bool:
        """True for exactly one caller per reply: that process shows the stream."""
        ...

    async def set_ref(self, reply_key: str, message_ref: str) -> None: ...

    async def get(self, reply_key: str) -> StreamState: ...

    async def close(self, reply_key: str, final_text: str) -> StreamState:
        """Mark the stream finished (fragments arriving later are dropped); returns its state before."""
        ...

    async def sent_parts(self, reply_id: str) -> list[str]:
        """Message ids of the parts of a split reply already sent, in order (a retry resumes after them)."""
        ...

    async def part_sent(self, reply_id: str, message_id: str) -> None: ...


def state_of(entry: dict[str, str]) -> StreamState:
    """The state recorded in a stream's fields (`ref`, `closed`, `final`), as both backends keep them."""
    return StreamState(message_ref=entry.get("ref"), closed="closed" in entry, final_text=entry.get("final"))
