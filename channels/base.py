"""The channel adapter seam and helpers shared by adapters.

A channel is one module: verify the platform's request, normalize it into an `Envelope`,
publish it on the bus and acknowledge at once; later, `deliver` a `Reply` through the
platform's own API. The Protocols live in `core.channel` (the core must not import this
package); adapters implement them and are found by the `relaybot.channels` entry point.
"""

from __future__ import annotations

from core.channel import (
    Capabilities,
    ChannelAdapter,
    ChannelContext,
    ChannelFactory,
    DeliveryResult,
    DeliveryTarget,
)

__all__ = [
    "Capabilities",
    "ChannelAdapter",
    "ChannelContext",
    "ChannelFactory",
    "DeliveryResult",
    "DeliveryTarget",
]
