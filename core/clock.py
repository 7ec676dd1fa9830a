"""The time a turn reads: one `Clock` passed to every part that needs "now", never read from the system directly.

The runtime gives its parts the `SystemClock`; `relaybot test` gives them a test's own clock, so a
conversation that says it happens on 1 March at 09:00 is stamped, prompted, rate limited and budgeted
as on that day, and moves only when the test moves it. Durations (latencies, timeouts of calls) stay on
`time.monotonic`: they measure this process's work, not the conversation's time.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol

__all__ = ["Clock", "SystemClock"]


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        ...


class SystemClock:
    """The machine's clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)
