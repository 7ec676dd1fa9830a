"""Progress of replies being shown (streams and sent parts): the seam, with memory and Redis backends."""

from core.streams.base import STREAM_TTL_SECONDS, StreamRegistry, StreamState

__all__ = ["STREAM_TTL_SECONDS", "StreamRegistry", "StreamState"]
