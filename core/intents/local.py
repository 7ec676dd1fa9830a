"""The token-free classifier: the message against each intent's examples, on the offline embeddings.

Two things are computed for a message: which intent it is most likely about, and how close it is to that
intent at all.

**Which intent**: a softmax regression (core.intents.linear) trained when the bot's intents load, on the
embeddings of each intent's examples, description and the topics its description lists (split at commas:
"shipping fees", "payment methods", "spoiled or late items in a box"); the default intent's description and
topics are left out once it has examples (see `_build`). Its logits rank the intents. Unlike a centroid, which
weighs every direction of the embedding alike, it learns which directions separate this bot's intents:
"downgrade my plan to Free" is nearer Tasklane's cancellation examples than its billing ones (0.481 against
0.457 below), and went to the cancellation handler, which asks whether to cancel; the model sends it to billing.

**How close** (the intent's score, the `confidence` of the result, compared with the bot's threshold): two
similarities mixed (cosine, as dot products of normalized vectors):

- to the intent's centroid: the mean of its examples' and description's L2-normalized vectors, normalized
  again. One example that happens to share a word with the message pulls little;
- to its nearest example or topic. A centroid blurs an intent that covers several topics ("the beef was
  leaking" and "skip next week" are both deliveries), so a message near one of them but far from their mean
  ("the salmon smelled off") scored low for it.

The score is `(1 - nearest_weight) * centroid + nearest_weight * nearest`, on the cosine scale the bot's
threshold is written in. The model's first intent wins if its score reaches the threshold; otherwise the
default intent (with that intent as the candidate). With `learned=False` the scores rank the intents too (the
classifier before the model; kept for comparison).

`bench/knowledge.py --tune` chose the ranking and the weight on the dev bots (the example bot's two labelled
sets and Forkful's), both on the sets as they are and by repeated random sub-sampling (20 draws of 8 and of 4
examples per intent from each bot's examples and labelled utterances, the rest classified), because the
labelled sets alone are too near the examples to tell close variants apart: the model with weight 0.5 got
0.908 of the sub-sampled utterances right on average (the similarity with weight 0.1, served before: 0.862;
its best weight, 0.5: 0.892), and 63/64, 82/88 and 77/80 of the sets (before: 62/64, 85/88, 73/80). Small
talk (a message that is only greetings, thanks or goodbyes) is routed by rule: see core.smalltalk.
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
from core.intents.linear import LinearModel, train
from core.knowledge.embeddings import Embedder
from core.smalltalk import is_small_talk

__all__ = ["NEAREST_EXAMPLES", "NEAREST_WEIGHT", "LocalIntentClassifier"]

#: how much the similarity to an intent's nearest examples counts against the centroid's (module docstring)
NEAREST_WEIGHT = 0.5
#: how many of an intent's examples and topics nearest to the message are averaged
NEAREST_EXAMPLES = 1
_TOPIC_SEPARATOR = re.compile(r"[,;.]\s*(?:(?:and|or)\s+)?")

Matrix = np.ndarray[Any, np.dtype[np.float32]]


@dataclass(frozen=True, slots=True)
class _Index:
    digest: str
    names: tuple[str, ...]
    centroids: Matrix
    #: every intent's examples and description topics, normalized, and the row of `names` each belongs to (an
    #: intent's rows are consecutive: `starts` are where each intent's run begins, `runs` whose run it is)
    examples: Matrix = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    owners: tuple[int, ...] = ()
    starts: np.ndarray[Any, np.dtype[np.intp]] = field(default_factory=lambda: np.zeros(0, dtype=np.intp))
    runs: np.ndarray[Any, np.dtype[np.intp]] = field(default_factory=lambda: np.zeros(0, dtype=np.intp))
    #: the intents with a small-talk example ("thanks!", "see you"): where small talk goes
    social: frozenset[str] = frozenset()
    #: the regression trained on the intents' texts, which chooses the intent (None: no intents)
    model: LinearModel | None = None


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
        learned: bool = True,
    ) -> None:
        self._source = embedder
        self._nearest_weight = nearest_weight
        self._nearest = nearest
        self._learned = learned
        self._indexes: dict[str, _Index] = {}
        self._digests: dict[str, tuple[Intents, str]] = {}
        self._lock = asyncio.Lock()

    async def classify(self, bot: BotConfig, text: str) -> IntentResult:
        index = await self._index(bot)
        (embedded,) = await (await self._embedder()).embed([text])
        vector = np.asarray(embedded, dtype=np.float32)
        similarities = scores(index, vector, self._nearest_weight, self._nearest)
        ranking = index.model.logits(vector) if self._learned and index.model is not None else similarities
        if is_small_talk(text):
            return small_talk(bot.intents, index, similarities, ranking)
        return decide(bot.intents, index.names, similarities, ranking)

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
        texts: list[str] = []  # every text once: examples, descriptions, topics
        centroid_rows: list[tuple[int, int]] = []  # (text, intent): what each centroid averages
        nearest_rows: list[tuple[int, int]] = []  # (text, intent): what `nearest` compares with
        social = frozenset(name for name, intent in intents.items.items() if any(map(is_small_talk, intent.examples)))
        for name, intent in intents.items.items():
            # The default intent's description is left out once it has examples: a catch-all is described by
            # what it is not ("anything not about billing, a technical problem or cancelling"), and those
            # words pulled billing and technical messages to it. On the example bot, 0.953 -> 0.969 of its
            # labelled utterances and 0.81 -> 0.84 of its own examples (each left out of its centroid in turn)
            # go where they should. It needs no pull of its own: what reaches no other intent goes to it.
            described = bool(intent.description) and not (name == intents.default and intent.examples)
            if not intent.examples and not described:
                continue  # the default intent may have none: it is what is left over
            row = len(names)
            names.append(name)
            examples = [len(texts) + i for i in range(len(intent.examples))]
            texts += intent.examples
            centroid_rows += [(i, row) for i in examples]
            nearest_rows += [(i, row) for i in examples]
            if described:
                centroid_rows.append((len(texts), row))
                texts.append(intent.description)
                parts = topics(intent.description)
                nearest_rows += [(len(texts) + i, row) for i in range(len(parts))]
                texts += parts
        if not texts:
            return _Index(digest=digest, names=(), centroids=np.zeros((0, embedder.dimensions), dtype=np.float32))
        vectors = np.asarray(await embedder.embed(texts), dtype=np.float32)
        centroids = np.zeros((len(names), vectors.shape[1]), dtype=np.float32)
        np.add.at(centroids, np.asarray([r for _, r in centroid_rows]), vectors[[i for i, _ in centroid_rows]])
        centroids /= np.clip(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12, None)
        # The model learns from every text of an intent: examples, description and its topics (each text once).
        training = sorted(set(centroid_rows) | set(nearest_rows))
        model = await asyncio.to_thread(
            train, vectors[[i for i, _ in training]], np.asarray([r for _, r in training]), len(names)
        )
        owners = [r for _, r in nearest_rows]
        starts = np.flatnonzero(np.diff(owners, prepend=-1)).astype(np.intp)
        return _Index(
            digest=digest,
            names=tuple(names),
            centroids=centroids,
            examples=vectors[[i for i, _ in nearest_rows]],
            owners=tuple(owners),
            starts=starts,
            runs=np.asarray(owners, dtype=np.intp)[starts],
            social=social,
            model=model,
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
    closest = centroid.copy()
    if nearest == 1:  # per message: a loop over the intents cost 30-50 us, this a few
        closest[index.runs] = np.maximum.reduceat(similarities, index.starts)
        return (1.0 - nearest_weight) * centroid + nearest_weight * closest
    owners = np.asarray(index.owners)
    for row in range(len(index.names)):
        own = similarities[owners == row]
        if own.size:
            closest[row] = float(np.sort(own)[-nearest:].mean())
    return (1.0 - nearest_weight) * centroid + nearest_weight * closest


def small_talk(intents: Intents, index: _Index, similarities: Matrix, ranking: Matrix | None = None) -> IntentResult:
    """A greeting, thanks or goodbye: the best-ranked of the intents that have such examples, else the default
    (see core.smalltalk), whatever the threshold."""
    scores = {name: round(float(score), 4) for name, score in zip(index.names, similarities, strict=True)}
    rank = dict(zip(index.names, (similarities if ranking is None else ranking).tolist(), strict=True))
    social = [name for name in index.names if name in index.social]
    intent = max(social, key=lambda name: rank[name]) if social else intents.default
    return IntentResult(intent=intent, confidence=scores.get(intent, 0.0), method="local", scores=scores)


def decide(
    intents: Intents, names: tuple[str, ...], similarities: Matrix, ranking: Matrix | None = None
) -> IntentResult:
    """The intent for these per-intent similarities, under the bot's threshold and default: the first of
    `ranking` (the trained model's logits; the similarities themselves when None) if its similarity reaches
    the threshold."""
    scores = {name: round(float(score), 4) for name, score in zip(names, similarities, strict=True)}
    if not scores:
        return IntentResult(intent=intents.default, confidence=0.0, method="local")
    best = names[int(np.argmax(similarities if ranking is None else ranking))]
    if scores[best] >= intents.threshold:
        return IntentResult(intent=best, confidence=scores[best], method="local", scores=scores)
    return IntentResult(intent=intents.default, confidence=scores[best], method="local", candidate=best, scores=scores)


def _digest(intents: Intents) -> str:
    raw = json.dumps({k: [v.examples, v.description] for k, v in intents.items.items()}, sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()
