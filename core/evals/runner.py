"""Runs the labelled sets through the bot's real intent classifier and retriever.

Both come from the runtime `relaybot test` uses (`offline_runtime`): the local classifier on the offline
embedding, and the knowledge service on the kept store into which the bot's knowledge folder is ingested.
Each question is searched twice: once as the retrieval stage searches (the bot's top_k and threshold, the
name guard), which says whether the bot would answer or say it does not know; and once ranked by similarity
alone (no threshold, no guard), for recall@k and the score distributions a new threshold is chosen from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from core.bots import BotConfig
from core.errors import ConfigError
from core.evals.sets import LabelledQuestion, LabelledUtterance
from core.intents import IntentResult, LocalIntentClassifier
from core.knowledge.passage import Passage
from core.knowledge.ranking import Ranker
from core.knowledge.service import KnowledgeService

__all__ = ["QuestionOutcome", "RetrievalSettings", "UtteranceOutcome", "ask_questions", "classify_utterances"]


@dataclass(frozen=True, slots=True)
class UtteranceOutcome:
    item: LabelledUtterance
    result: IntentResult


@dataclass(frozen=True, slots=True)
class QuestionOutcome:
    item: LabelledQuestion
    #: the k most similar passages, best first, whatever their score
    ranked: tuple[Passage, ...]
    #: what the retrieval stage would give the model (empty: the bot says it does not know)
    retrieved: tuple[Passage, ...]


@dataclass(frozen=True, slots=True)
class RetrievalSettings:
    """The retrieval settings in force for the bot (its bot.toml overrides, else RELAYBOT_KNOWLEDGE__*)."""

    knowledge_set: str
    top_k: int
    min_score: float
    name_guard: bool


def retrieval_settings(bot: BotConfig, knowledge: KnowledgeService) -> RetrievalSettings:
    options = knowledge.options
    return RetrievalSettings(
        knowledge_set=bot.knowledge.default_set,
        top_k=bot.knowledge.top_k or options.top_k,
        min_score=options.min_score if bot.knowledge.min_score is None else bot.knowledge.min_score,
        name_guard=options.reject_unknown_names,
    )


async def classify_utterances(
    classifier: LocalIntentClassifier, bot: BotConfig, items: Sequence[LabelledUtterance]
) -> list[UtteranceOutcome]:
    # The local classifier whatever bot.toml's `classifier` says: asking the model would cost tokens and
    # differ from run to run; with "llm", these are the figures of its fallback.
    return [UtteranceOutcome(item, await classifier.classify(bot, item.text)) for item in items]


async def ask_questions(
    knowledge: KnowledgeService, bot: BotConfig, items: Sequence[LabelledQuestion], *, k: int
) -> list[QuestionOutcome]:
    settings = retrieval_settings(bot, knowledge)
    collection = await knowledge.collection(bot.name, settings.knowledge_set)
    if items and await collection.count() == 0:
        raise ConfigError(
            f"bot '{bot.name}' has no documents in its knowledge set {settings.knowledge_set!r} "
            f"(its folder {bot.knowledge.folder}/ is missing or empty, or knowledge is turned off): "
            "questions.yaml cannot be answered"
        )
    outcomes = []
    for item in items:
        ranked = await Ranker(collection).search(item.text, k=k, min_score=-1.0)
        retrieved = await knowledge.search(
            bot.name,
            item.text,
            knowledge_set=settings.knowledge_set,
            top_k=settings.top_k,
            min_score=settings.min_score,
        )
        outcomes.append(QuestionOutcome(item, tuple(ranked), tuple(retrieved or ())))
    return outcomes
