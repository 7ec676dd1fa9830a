"""The pipeline's retrieval step: the passages of the bot's knowledge that are relevant to the message."""

from __future__ import annotations

import structlog

from core.knowledge.errors import KnowledgeError
from core.knowledge.service import KnowledgeService
from core.knowledge.store import PUBLIC
from core.pipeline.turn import Turn


class RetrieveStage:
    """Sets `turn.passages`: the top-k chunks above the relevance threshold that this user may see.

    `turn.passages` stays None when the bot has no knowledge (nothing ingested, or turned off), and is an
    empty list when the knowledge was searched and nothing relevant was found: the model (and the offline
    provider) then says it does not know, instead of guessing. A failing store does not fail the turn.
    """

    def __init__(
        self, knowledge: KnowledgeService, *, logger: structlog.typing.FilteringBoundLogger | None = None
    ) -> None:
        self._knowledge = knowledge
        self._log = logger or structlog.get_logger("relaybot.knowledge")

    async def __call__(self, turn: Turn) -> None:
        settings = turn.bot.knowledge
        if not self._knowledge.options.enabled or not settings.enabled:
            return
        env = turn.envelope
        try:
            turn.passages = await self._knowledge.search(
                turn.bot.name,
                env.text,
                knowledge_set=self._knowledge_set(turn),
                # Documents ingested for one user (or tenant) are found only in that user's (tenant's)
                # conversations.
                audiences=(PUBLIC, env.user_id, *((f"tenant:{env.tenant}",) if env.tenant else ())),
                top_k=settings.top_k,
                min_score=settings.min_score,
            )
        except KnowledgeError as exc:
            await self._log.aerror("knowledge_unavailable", bot=turn.bot.name, error=str(exc))

    @staticmethod
    def _knowledge_set(turn: Turn) -> str:
        """The set named for this turn, else the one its intent names, else the bot's default."""
        if turn.knowledge_set:
            return turn.knowledge_set
        intent = turn.bot.intents.items.get(turn.intent) if turn.intent else None
        return (intent.knowledge if intent else None) or turn.bot.knowledge.default_set
