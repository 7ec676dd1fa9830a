"""The pipeline stage that classifies the message (before retrieval, which searches the intent's set)."""

from __future__ import annotations

import structlog

from core.intents.base import ACTIVE_FLOW_FIELD, IntentResult
from core.intents.llm import LLMIntentClassifier
from core.intents.local import LocalIntentClassifier
from core.pipeline.turn import Turn

__all__ = ["IntentStage"]


class IntentStage:
    """Sets `turn.intent`, `turn.intent_confidence` and `turn.intent_method` (retrieval then searches
    the knowledge set the intent names).

    A conversation inside a multi-step flow (a handler saved flow state) stays with that flow's
    intent without classifying. A bot without intents gets none. A classifier failure (the model
    file missing) must not cost the answer: the turn goes on with the default intent.
    """

    def __init__(
        self,
        local: LocalIntentClassifier,
        llm: LLMIntentClassifier | None = None,
        *,
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self._local = local
        self._llm = llm
        self._log = logger or structlog.get_logger("relaybot.intents")

    async def __call__(self, turn: Turn) -> None:
        intents = turn.bot.intents
        if not intents.items or turn.intent is not None:  # no intents, or a slash command already chose
            return
        flow = turn.session.fields.get(ACTIVE_FLOW_FIELD) if turn.session is not None else None
        if flow and flow in intents.items:
            turn.intent, turn.intent_confidence, turn.intent_method = flow, 1.0, "flow"
        else:
            try:
                result = await self._classify(turn)
            except Exception as exc:
                await self._log.aexception("intent_classification_failed", bot=turn.bot.name, error=str(exc))
                result = IntentResult(intent=intents.default, confidence=0.0, method="local")
            turn.intent, turn.intent_confidence, turn.intent_method = result.intent, result.confidence, result.method
            turn.intent_candidate = result.candidate
            turn.tokens_in += result.tokens_in
            turn.tokens_out += result.tokens_out

    async def _classify(self, turn: Turn) -> IntentResult:
        if turn.bot.intents.classifier == "llm" and self._llm is not None:
            return await self._llm.classify(turn.bot, turn.envelope.text, user_key=turn.envelope.user_id)
        return await self._local.classify(turn.bot, turn.envelope.text)
