"""The Bus seam: at-least-once hand-off of envelopes from adapters to workers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from core.envelope import Envelope


@dataclass(frozen=True, slots=True)
class BusDelivery:
    """One envelope handed to a worker; ack it once the reply is safely in the outbox."""

    envelope: Envelope
    delivery_id: str
    attempt: int = 1


class Bus(Protocol):
    async def publish(self, envelope: Envelope) -> None:
        """Hand an envelope to the workers; returns once the bus holds it."""
        ...

    def consume(self) -> AsyncIterator[BusDelivery]:
        """Deliveries for this consumer until the bus is closed."""
        ...

    async def ack(self, delivery: BusDelivery) -> None: ...

    async def pending(self) -> int:
        """Envelopes published but not yet acknowledged."""
        ...

    async def close(self) -> None:
        """Stop handing out deliveries; consumers' iterators end."""
        ...
