"""The test run's side of the conversation: a channel that keeps the replies, and a stage that keeps the turns.

Both are real parts of the runtime: the outbox delivers to `TranscriptChannel` as to any adapter, and
`TurnRecorder` is a closing stage of the pipeline (after the `turn` event is logged), so what a test
checks is what the pipeline did, read from its own objects rather than from its logs.
"""

from __future__ import annotations

from aiohttp import web

from core.channel import Capabilities, DeliveryResult
from core.envelope import Reply, known_channel_names
from core.pipeline.turn import Turn

__all__ = ["TranscriptChannel", "TurnRecorder"]


class TranscriptChannel:
    """Delivers for every channel name into memory: the replies of each inbound message, by envelope id.

    Replies are checked as the core writes them (Markdown), before a real adapter would format them
    for its platform; nothing streams (`can_stream` is off), so each reply arrives whole.
    """

    capabilities = Capabilities(max_message_length=1_000_000)

    def __init__(self) -> None:
        # Every channel an installed adapter registers: a test may speak as any of them.
        self.channel_names: tuple[str, ...] = tuple(sorted(known_channel_names()))
        self._replies: dict[str, list[Reply]] = {}
        #: what the bot sent of its own accord (a handoff timeout's message), by session
        self._unprompted: dict[str, list[Reply]] = {}

    async def deliver(self, reply: Reply) -> DeliveryResult:
        if reply.envelope_id:
            self._replies.setdefault(reply.envelope_id, []).append(reply)
        else:
            self._unprompted.setdefault(reply.session_id, []).append(reply)
        return DeliveryResult(delivered=True, channel_message_ids=(f"test-{reply.envelope_id or reply.id}",))

    def take(self, envelope_id: str) -> list[Reply]:
        """The replies delivered for this message (and forgets them)."""
        return self._replies.pop(envelope_id, [])

    def take_unprompted(self, session_id: str) -> list[Reply]:
        """What was sent to this conversation without a message to answer (and forgets it)."""
        return self._unprompted.pop(session_id, [])

    def register(self, app: web.Application) -> None:
        """No routes: messages come from the runner, not over HTTP."""

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._replies.clear()
        self._unprompted.clear()


class TurnRecorder:
    """A closing stage that keeps each turn for the runner, by envelope id."""

    def __init__(self) -> None:
        self._turns: dict[str, Turn] = {}

    async def __call__(self, turn: Turn) -> None:
        self._turns[turn.envelope.id] = turn

    def take(self, envelope_id: str) -> Turn | None:
        return self._turns.pop(envelope_id, None)
