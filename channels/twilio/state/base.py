"""What the Twilio adapter remembers across messages and processes.

- Opt-outs: numbers that texted STOP get no messages until they text START. Kept without expiry.
  Twilio also blocks sends to them itself (error 21610), so this is a second guard that saves a
  wasted LLM turn and a failed send; a 21610 re-records the opt-out if this store lost it.
- The WhatsApp 24-hour window: when each WhatsApp user last wrote, so a late reply goes out as the
  bot's approved template instead of a free-form message WhatsApp would refuse (63016).
- Delivery statuses: what Twilio's status callbacks said about each message sent for a reply.
- WhatsApp button content: the Content SID made for each distinct set of buttons (channels.twilio.content),
  so an offer is created once in the Content API, not once per reply.

Memory in one process (memory.py); Redis (redis.py: the deployment's shared Redis) whenever REDIS_URL
is set, so every `relaybot serve twilio` replica and the worker-side deliveries see the same opt-outs.
"""

from __future__ import annotations

from typing import Protocol

STATE_TTL_SECONDS = 7 * 24 * 3600


class TwilioState(Protocol):
    async def opt_out(self, number: str) -> None: ...

    async def opt_in(self, number: str) -> None: ...

    async def is_opted_out(self, number: str) -> bool: ...

    async def wrote_at(self, address: str, at: float) -> None:
        """Record that `address` (e.g. "whatsapp:+1555...") wrote to us at `at` (epoch seconds)."""
        ...

    async def last_wrote(self, address: str) -> float | None:
        """When `address` last wrote (epoch seconds), or None if not known."""
        ...

    async def set_status(self, reply_id: str, message_sid: str, status: str) -> None: ...

    async def statuses(self, reply_id: str) -> dict[str, str]:
        """The latest status Twilio reported for each message sent for the reply, by MessageSid."""
        ...

    async def content_sid(self, key: str) -> str | None:
        """The Content SID created for the buttons `key` names (InteractiveContent.key), if any."""
        ...

    async def remember_content(self, key: str, sid: str) -> None: ...

    async def forget_content(self, key: str) -> None:
        """Drop a Content SID Twilio no longer knows (deleted in the console): the next send creates it again."""
        ...

    async def close(self) -> None: ...
