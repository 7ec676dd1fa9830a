"""The token-free classifier: the message against each intent's examples, on the offline embeddings.

A message's score for an intent mixes two similarities (cosine, as dot products of normalized vectors):

- to the intent's centroid: the mean of its examples' and description's L2-normalized vectors, normalized
  again (the default intent's description is left out when it has examples, see `_build`). One example that
  happens to share a word with the message pulls little; the centroid alone beat the nearest single example
  and the mean of the nearest two on the example bot's labelled set (0.94 against 0.83 and 0.86);
- to its nearest example or topic: the similarity of the one closest to the message among the intent's
  examples and the topics its description lists (split at commas: "shipping fees", "payment methods",
  "spoiled or late items in a box"). A centroid blurs an intent that covers several topics ("the beef was
  leaking" and "skip next week" are both deliveries), so a message near one of them but far from their mean
  ("the salmon smelled off") went to the catch-all intent. The default intent's topics are left out, as its
  description is.

The score is `(1 - nearest_weight) * centroid + nearest_weight * nearest`, still on the cosine scale the bot's
threshold is written in. `bench/knowledge.py --tune` grids the weight and the number of nearest on the example
bot's two labelled sets and Forkful's (the most right with none worse than the centroid alone): 0.1 gives
62/64, 85/88 and 73/80 (centroid alone: 62/64, 84/88, 69/80); its best, 0.2, gives 62/64, 85/88, 74/80 but
sends "How do I get a refund on my annual plan?", a near tie between the example bot's billing and
cancellation intents, to cancellation, whose handler then asks whether to cancel: 0.1 is served. The best
intent wins if its score reaches the bot's threshold; otherwise the default intent. Small talk (a message
that is only greetings, thanks or goodbyes) is routed by rule: see core.intents.smalltalk.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.bots import BotConfig, Intents
from core.intents.base import IntentResult
from core.intents.smalltalk import is_small_talk
from core.knowledge.embeddings import Embedder

__all__ = ["NEAREST_EXAMPLES", "NEAREST_WEIGHT", "LocalIntentClassifier"]

#: how much the similarity to an intent's nearest examples counts against the centroid's (module docstring)
NEAREST_WEIGHT = 0.1
#: how many of an intent's examples and topics nearest to the message are averaged
NEAREST_EXAMPLES = 1
_TOPIC_SEPARATOR = re.compile(r"[,;.]\s*(?:(?:and|or)\s+)?")

Matrix = np.ndarray[Any, np.dtype[np.float32]]


@dataclass(frozen=True, slots=True)
class _Index:
    digest: str
    names: tuple[str, ...]
    centroids: Matrix
    #: every intent's examples and description topics, normalized, and the row of `names` each belongs to
    examples: Matrix = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    owners: tuple[int, ...] = ()
    #: the intents with a small-talk example ("thanks!", "see you"): where small talk goes
    social: frozenset[str] = frozenset()


class LocalIntentClassifier:
    """Shared by every bot of the process; one index per bot (rebuilt if its intents change).

    `embedder` is the process's embedder, or an async function giving it (the knowledge service
    loads the model on first use: a process whose bots have no intents never loads it).
    """

    def __init__(
        self,
        embedder: Embedder | Callable[[], Awaitable[Embedder]],
        *,
        nearest_weight: float = NEAREST_WEIGHT,
        nearest: int = NEAREST_EXAMPLES,
    ) -> None:
        self._source = embedder
        self._nearest_weight = nearest_weight
        self._nearest = nearest
        self._indexes: dict[str, _Index] = {}
        self._digests: dict[str, tuple[Intents, str]] = {}
        self._lock = asyncio.Lock()

    async def classify(self, bot: BotConfig, text: str) -> IntentResult:
        index = await self._index(bot)
        (vector,) = await (await self._embedder()).embed([text])
        similarities = scores(index, np.asarray(vector, dtype=np.float32), self._nearest_weight, self._nearest)
        if is_small_talk(text):
            return small_talk(bot.intents, index, similarities)
        return decide(bot.intents, index.names, similarities)

    async def warm(self, bot: BotConfig) -> None:
        """Embed the bot's examples now (at start-up) rather than on its first message."""
        await self._index(bot)

    async def _embedder(self) -> Embedder:
        if isinstance(self._source, Embedder):
            return self._source
        return await self._source()

    async def _index(self, bot: BotConfig) -> _Index:
        # Hashing every example on every message showed in profiles: once per Intents object (a
        # reloaded bot.toml is a new object, so a changed file is still picked up).
        known = self._digests.get(bot.name)
        if known is None or known[0] is not bot.intents:
            known = self._digests[bot.name] = (bot.intents, _digest(bot.intents))
        digest = known[1]
        index = self._indexes.get(bot.name)
        if index is not None and index.digest == digest:
            return index
        async with self._lock:
            index = self._indexes.get(bot.name)
            if index is None or index.digest != digest:
                index = self._indexes[bot.name] = await self._build(bot.intents, digest)
        return index

    async def _build(self, intents: Intents, digest: str) -> _Index:
        embedder = await self._embedder()
        names: list[str] = []
        texts: list[str] = []
        owners: list[int] = []
        neighbours: list[str] = []
        neighbour_owners: list[int] = []
        social = frozenset(name for name, intent in intents.items.items() if any(map(is_small_talk, intent.examples)))
        for name, intent in intents.items.items():
            # The default intent's description is left out once it has examples: a catch-all is described by
            # what it is not ("anything not about billing, a technical problem or cancelling"), and those
            # words pulled billing and technical messages to it. On the example bot, 0.953 -> 0.969 of its
            # labelled utterances and 0.81 -> 0.84 of its own examples (each left out of its centroid in turn)
            # go where they should. It needs no pull of its own: what reaches no other intent goes to it.
            described = intent.description and not (name == intents.default and intent.examples)
            examples = [*intent.examples, *([intent.description] if described else [])]
            if not examples:
                continue  # the default intent may have none: it is what is left over
            names.append(name)
            texts += examples
            owners += [len(names) - 1] * len(examples)
            own = [*intent.examples, *(topics(intent.description) if described else [])]
            neighbours += own
            neighbour_owners += [len(names) - 1] * len(own)
        if not texts:
            return _Index(digest=digest, names=(), centroids=np.zeros((0, embedder.dimensions), dtype=np.float32))
        vectors = np.asarray(await embedder.embed([*texts, *neighbours]), dtype=np.float32)
        centroids = np.zeros((len(names), vectors.shape[1]), dtype=np.float32)
        np.add.at(centroids, np.asarray(owners), vectors[: len(texts)])
        centroids /= np.clip(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12, None)
        return _Index(
            digest=digest,
            names=tuple(names),
            centroids=centroids,
            examples=vectors[len(texts) :],
            owners=tuple(neighbour_owners),
            social=social,
        )


def topics(description: str) -> list[str]:
    """The topics a description lists: "Charges and payments, prices and plan sizes, shipping fees." ->
    ["Charges and payments", "prices and plan sizes", "shipping fees"]."""
    return [part.strip() for part in _TOPIC_SEPARATOR.split(description) if part.strip()]


def scores(index: _Index, vector: Matrix, nearest_weight: float, nearest: int = NEAREST_EXAMPLES) -> Matrix:
    """Each intent's score for the message `vector`: its centroid's similarity mixed with the mean similarity
    of its `nearest` closest examples and topics (the centroid's alone for an intent with none)."""
    centroid = index.centroids @ vector
    if not nearest_weight or not index.owners:
        return centroid
    similarities = index.examples @ vector
    owners = np.asarray(index.owners)
    closest = centroid.copy()
    for row in range(len(index.names)):
        own = similarities[owners == row]
        if own.size:
            closest[row] = float(np.sort(own)[-nearest:].mean())
    return (1.0 - nearest_weight) * centroid + nearest_weight * closest


def small_talk(intents: Intents, index: _Index, similarities: Matrix) -> IntentResult:
    """A greeting, thanks or goodbye: the best of the intents that have such examples, else the default
    (see core.intents.smalltalk), whatever the threshold."""
    scores = {name: round(float(score), 4) for name, score in zip(index.names, similarities, strict=True)}
    social = [name for name in index.names if name in index.social]
    intent = max(social, key=lambda name: scores[name]) if social else intents.default
    return IntentResult(intent=intent, confidence=scores.get(intent, 0.0), method="local", scores=scores)


def decide(intents: Intents, names: tuple[str, ...], similarities: Matrix) -> IntentResult:
    """The intent for these per-intent similarities, under the bot's threshold and default."""
    scores = {name: round(float(score), 4) for name, score in zip(names, similarities, strict=True)}
    if not scores:
        return IntentResult(intent=intents.default, confidence=0.0, method="local")
    best = max(scores, key=lambda name: scores[name])
    if scores[best] >= intents.threshold:
        return IntentResult(intent=best, confidence=scores[best], method="local", scores=scores)
    return IntentResult(intent=intents.default, confidence=scores[best], method="local", candidate=best, scores=scores)


def _digest(intents: Intents) -> str:
    raw = json.dumps({k: [v.examples, v.description] for k, v in intents.items.items()}, sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()
