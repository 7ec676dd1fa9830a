"""Fan-out of messages to every process hosting a channel (streamed fragments, web replies)."""

from core.fanout.base import Fanout, FanoutHandler

__all__ = ["Fanout", "FanoutHandler"]
