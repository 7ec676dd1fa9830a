"""The one step every adapter has: a platform event parsed into what an envelope needs, or not.

Each platform package has an `inbound` module whose `parse(...)` returns its `Inbound` (the
fields of the message to answer, in the platform's terms: the adapter builds the `Envelope` from
it) or an `Ignored` with the reason, which the adapter logs and acknowledges without answering.
A platform may add an outcome of its own (Telegram's `MembershipChange`); a request that is not
something the platform sends raises instead (Twilio's `BadRequest`: answered 400).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Ignored:
    """An event acknowledged and not answered, with the reason (logged)."""

    reason: str
