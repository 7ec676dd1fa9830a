"""SMS and WhatsApp through Twilio: signed webhooks in, the Messages API out.

Modules: channel (the adapter), inbound (the webhook's signature and form), outbound (sending,
segments), state (opt-outs and the WhatsApp 24-hour window).

The adapter class is re-exported here for the `relaybot.channels` entry point, on first use, so
that importing a light module of the package (say its CLI commands) does not import the platform's SDK.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from channels.twilio.channel import TwilioChannel

__all__ = ["TwilioChannel"]


def __getattr__(name: str) -> object:
    if name == "TwilioChannel":
        from channels.twilio.channel import TwilioChannel

        return TwilioChannel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
