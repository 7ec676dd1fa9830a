"""The Bus seam: at-least-once hand-off of envelopes from adapters to workers."""

from __future__ import annotations

from typing import Protocol

from core.envelope import Envelope


class Bus(Protocol):
    async def publish(self, envelope: Envelope) -> None:
        """Hand an envelope to the workers; returns once the bus holds it."""
        ...

    async def pending(self) -> int:
        """Envelopes published and not yet answered."""
        ...

    async def close(self) -> None: ...
