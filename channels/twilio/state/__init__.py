"""What the Twilio adapter remembers (opt-outs, WhatsApp windows, statuses): the seam, memory and Redis."""

from channels.twilio.state.base import STATE_TTL_SECONDS, TwilioState

__all__ = ["STATE_TTL_SECONDS", "TwilioState"]
