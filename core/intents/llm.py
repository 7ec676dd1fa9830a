"""The LLM classifier: the bot's model chain answers with one intent name (temperature 0, a few tokens).

Used when a bot sets `[intents] classifier = "llm"`. An answer that names no intent (the offline
provider, the static message, a chatty model) falls back to the local classifier, so the turn
always gets an intent.
"""

from __future__ import annotations

import re

import structlog

from core.bots import BotConfig
from core.intents.base import IntentResult
from core.intents.local import LocalIntentClassifier
from core.llm.base import ChatMessage, LLMRequest
from core.llm.chain import ChainSource

__all__ = ["LLMIntentClassifier", "classification_prompt"]

#: a one-word answer needs a few tokens; some tokenizers split intent names in two or three
MAX_TOKENS = 8


def classification_prompt(bot: BotConfig) -> str:
    lines = [
        "Classify the customer's message into exactly one of these intents.",
        "Answer with the intent name only: one word, lowercase, nothing else.",
        "",
    ]
    for name, intent in bot.intents.items.items():
        lines.append(f"- {name}: {intent.description or ', '.join(intent.examples[:3])}")
    lines += ["", f"If none fits, answer {bot.intents.default}."]
    return "\n".join(lines)


class LLMIntentClassifier:
    def __init__(
        self,
        chain_for: ChainSource,
        fallback: LocalIntentClassifier,
        *,
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self._chain_for = chain_for
        self._fallback = fallback
        self._log = logger or structlog.get_logger("relaybot.intents")

    async def classify(self, bot: BotConfig, text: str, *, user_key: str) -> IntentResult:
        request = LLMRequest(
            messages=(ChatMessage("system", classification_prompt(bot)), ChatMessage("user", text)),
            max_tokens=MAX_TOKENS,
            temperature=0.0,
        )
        result = await self._chain_for(bot).run(request, user_key=user_key)
        answer = _one_word(result.text)
        if result.outcome in ("answered", "cached") and result.provider != "offline" and answer in bot.intents.items:
            return IntentResult(
                intent=answer,
                confidence=1.0,
                method="llm",
                tokens_in=result.usage.tokens_in,
                tokens_out=result.usage.tokens_out,
            )
        await self._log.ainfo(
            "intent_llm_unusable",
            bot=bot.name,
            answer=result.text[:80],
            outcome=result.outcome,
            provider=result.provider,
        )
        local = await self._fallback.classify(bot, text)
        return IntentResult(
            intent=local.intent,
            confidence=local.confidence,
            method="local",
            candidate=local.candidate,
            scores=local.scores,
            tokens_in=result.usage.tokens_in,
            tokens_out=result.usage.tokens_out,
        )


def _one_word(text: str) -> str:
    match = re.search(r"[a-z0-9][a-z0-9_-]*", text.strip().lower())
    return match.group(0) if match else ""
