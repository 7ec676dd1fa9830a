"""The Bus seam: at-least-once hand-off of envelopes from adapters to workers."""

from __future__ import annotations

from typing import Protocol

from core.envelope import Envelope


class Bus(Protocol):
    async def publish(self, envelope: Envelope) -> bool:
        """Hand an envelope to the workers; returns once the bus holds it.

        Atomically at most once per `envelope.dedupe_key` (the platform's message id): False means
        the message was accepted before and nothing was published. Raises StoreError when the bus
        is unreachable, and then nothing was published either.
        """
        ...

    async def pending(self) -> int:
        """Envelopes published and not yet answered."""
        ...

    async def close(self) -> None: ...
