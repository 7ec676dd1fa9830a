"""The figures of an eval, from the outcomes: plain arithmetic, no model, so it is tested on its own.

Intents are compared by where the bot routes a message: an utterance labelled `none` is right when it
ends at the default intent (below the threshold, or the default intent scored best); the confusion matrix
keeps the difference (its `none` column is "below the threshold").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from core.bots import Intents
from core.evals.runner import QuestionOutcome, RetrievalSettings, UtteranceOutcome
from core.evals.sets import NONE
from core.intents.local import decide

__all__ = ["IntentFigures", "RetrievalFigures", "intent_figures", "retrieval_figures"]

#: how far either side of the configured threshold the sweep looks, in steps of 0.05
SWEEP_STEPS = 3


@dataclass(frozen=True, slots=True)
class PerIntent:
    intent: str
    support: int
    precision: float | None
    recall: float | None


@dataclass(frozen=True, slots=True)
class IntentFigures:
    threshold: float
    default: str
    total: int
    correct: int
    per_intent: list[PerIntent]
    #: rows: labels (intents, then none); columns: predictions (intents above the threshold, then none)
    labels: list[str]
    confusion: dict[str, dict[str, int]]
    #: best intent's score, split by whether the best intent was the right one
    right_scores: list[float]
    wrong_scores: list[float]
    #: threshold -> accuracy at that threshold
    sweep: dict[float, float]
    mistakes: list[tuple[str, str, str, float]] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0


@dataclass(frozen=True, slots=True)
class RetrievalFigures:
    settings: RetrievalSettings
    k: int
    answerable: int
    unanswerable: int
    #: recall@1 and recall@k of the ranking alone, and among what the bot would retrieve
    recall_at_1: float
    recall_at_k: float
    recall_at_1_retrieved: float
    recall_at_k_retrieved: float
    #: unanswerable questions for which nothing is retrieved (the bot says it does not know)
    idk_unanswerable: int
    #: answerable questions for which nothing is retrieved
    refused_answerable: int
    #: questions refused whatever the threshold: by the name guard, or by the answer decision's word coverage
    #: (core.knowledge.answerability) although the best passage clears `min_score`
    guard_refused: int
    answerable_scores: list[float]
    unanswerable_scores: list[float]
    #: threshold -> (rate of "I don't know" on unanswerable, rate of refusals on answerable)
    sweep: dict[float, tuple[float, float]]
    misses: list[tuple[str, str, list[str]]] = field(default_factory=list)

    @property
    def idk_rate(self) -> float:
        return self.idk_unanswerable / self.unanswerable if self.unanswerable else 0.0

    @property
    def refused_rate(self) -> float:
        return self.refused_answerable / self.answerable if self.answerable else 0.0


def intent_figures(intents: Intents, outcomes: Sequence[UtteranceOutcome]) -> IntentFigures:
    names = list(intents.items)
    labels = [*names, NONE]
    confusion = {label: dict.fromkeys(labels, 0) for label in labels}
    right_scores: list[float] = []
    wrong_scores: list[float] = []
    mistakes = []
    correct = 0
    for outcome in outcomes:
        result = outcome.result
        label = outcome.item.intent or NONE
        predicted = NONE if result.candidate is not None else result.intent
        confusion[label][predicted] += 1
        if _routed(result.intent, intents) == _routed(outcome.item.intent, intents):
            correct += 1
        else:
            mistakes.append((outcome.item.text, label, predicted, result.confidence))
        best = result.candidate or result.intent
        (right_scores if best == _routed(outcome.item.intent, intents) else wrong_scores).append(result.confidence)
    per_intent = []
    for name in names:
        expected = [o for o in outcomes if _routed(o.item.intent, intents) == name]
        chosen = [o for o in outcomes if o.result.intent == name]
        hits = sum(1 for o in expected if o.result.intent == name)
        per_intent.append(
            PerIntent(
                name,
                len(expected),
                precision=hits / len(chosen) if chosen else None,
                recall=hits / len(expected) if expected else None,
            )
        )
    sweep = {}
    for threshold in _thresholds(intents.threshold, low=0.0):
        at = intents.model_copy(update={"threshold": threshold})
        right = 0
        for o in outcomes:
            scores, best = o.result.scores, o.result.candidate or o.result.intent
            # The intent the classifier chose (its model ranks them, not the scores) at this threshold.
            ranking = np.asarray([name == best for name in scores], dtype=np.float32) if best in scores else None
            similarities = np.asarray(list(scores.values()), dtype=np.float32)
            routed = decide(at, tuple(scores), similarities, ranking).intent
            right += routed == _routed(o.item.intent, intents)
        sweep[threshold] = right / len(outcomes) if outcomes else 0.0
    return IntentFigures(
        threshold=intents.threshold,
        default=intents.default,
        total=len(outcomes),
        correct=correct,
        per_intent=per_intent,
        labels=labels,
        confusion=confusion,
        right_scores=right_scores,
        wrong_scores=wrong_scores,
        sweep=sweep,
        mistakes=mistakes,
    )


def retrieval_figures(settings: RetrievalSettings, k: int, outcomes: Sequence[QuestionOutcome]) -> RetrievalFigures:
    answerable = [o for o in outcomes if o.item.document is not None]
    unanswerable = [o for o in outcomes if o.item.document is None]

    def recall(depth: int, retrieved: bool) -> float:
        if not answerable:
            return 0.0
        hits = sum(
            1
            for o in answerable
            if o.item.document in {p.source for p in (o.retrieved if retrieved else o.ranked)[:depth]}
        )
        return hits / len(answerable)

    # Refused by the name guard or the answer decision's word coverage: nothing retrieved although the best
    # passage clears the threshold.
    guarded = {id(o) for o in outcomes if not o.retrieved and o.ranked and o.ranked[0].score >= settings.min_score}
    sweep = {}
    for threshold in _thresholds(settings.min_score, low=-1.0):

        def refused(o: QuestionOutcome, at: float = threshold) -> bool:
            return id(o) in guarded or not o.ranked or o.ranked[0].score < at

        sweep[threshold] = (
            sum(map(refused, unanswerable)) / len(unanswerable) if unanswerable else 0.0,
            sum(map(refused, answerable)) / len(answerable) if answerable else 0.0,
        )
    misses = [
        (o.item.text, o.item.document or NONE, [p.source for p in o.ranked])
        for o in answerable
        if o.item.document not in {p.source for p in o.ranked}
    ]
    return RetrievalFigures(
        settings=settings,
        k=k,
        answerable=len(answerable),
        unanswerable=len(unanswerable),
        recall_at_1=recall(1, retrieved=False),
        recall_at_k=recall(k, retrieved=False),
        recall_at_1_retrieved=recall(1, retrieved=True),
        recall_at_k_retrieved=recall(k, retrieved=True),
        idk_unanswerable=sum(1 for o in unanswerable if not o.retrieved),
        refused_answerable=sum(1 for o in answerable if not o.retrieved),
        guard_refused=len(guarded),
        answerable_scores=[o.ranked[0].score for o in answerable if o.ranked],
        unanswerable_scores=[o.ranked[0].score for o in unanswerable if o.ranked],
        sweep=sweep,
        misses=misses,
    )


def _routed(label: str | None, intents: Intents) -> str:
    """Where the bot sends a message of this label (or of this prediction): `none` goes to the default."""
    return intents.default if label is None or label == NONE else label


def _thresholds(current: float, *, low: float) -> list[float]:
    values = {round(current + step * 0.05, 4) for step in range(-SWEEP_STEPS, SWEEP_STEPS + 1)}
    return sorted(v for v in values if low <= v <= 1.0)
