"""Knowledge: retrieval quality of each retriever, embedding throughput, ingest time for 1,000 chunks, query
latency at 1,000 and 10,000 chunks.

Everything is real: the packaged all-MiniLM-L6-v2 int8 ONNX model on onnxruntime, a chromadb PersistentClient
in a temp dir, relaybot's Ingestor and Ranker.search. Each figure comes with a baseline measured in
the same run:

- embedding: relaybot's batching (sorted by length, padded to the longest text of each batch) against the same
  session padding every text to 256 tokens, as chromadb's default embedding function does, and against one text
  per call;
- ingest: the whole ingest (read, chunk, embed, write to chromadb) against embedding the same chunks alone;
- query: relaybot's search (embed the question + chromadb's HNSW query + threshold) against an exact
  brute-force numpy search over the same vectors, after embedding the question the same way.

The 9,000 extra chunks of the 10,000-chunk store get random unit vectors (embedding 9,000 real texts would take
minutes on a small machine; HNSW query time depends on the number and dimension of vectors, not their meaning).
Never fails on timing; exits 1 only when something is wrong (a second ingest that writes, a count that is off).

Quality (first, and alone with --quality-only): each bot's documents ingested into a real chromadb (the example
bot's with three labelled sets: tests/data/retrieval_questions.json, bench/data/support_questions.json and the
near misses of bench/data/support_dev_unanswerable.json; Forkful and Pedalpoint, dev data now; and Toothwise, a
sealed set, all under bench/data/heldout): recall@1 and recall@4 of the embedding alone ("dense"), BM25 alone and
the two fused by reciprocal rank fusion, once ranking only and once as served; the offline answers under the cosine
threshold alone and under the answer decision (core.knowledge.answerability), in the same run; the decision's
precision/recall curve; intent accuracy. --tune only chooses the decision's constants, and grids the intent
classifier (trained model or similarity, nearest weight; with a leave-one-bot-out report) on the
example bot's sets, Forkful's and Pedalpoint's, with and without sub-sampling their examples (Toothwise is never
loaded); --dev-only leaves Toothwise out.

    python bench/knowledge.py [--chunks 1000] [--large 10000] [--queries 200] [--quality-only] [--tune] [--dev-only]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchkit import REPO, percentile

from core.knowledge.answerability import AnswerRule, Evidence
from core.knowledge.embeddings import OnnxMiniLMEmbedder, packaged_tokenizer_path
from core.knowledge.ingest import Ingestor
from core.knowledge.passage import Passage
from core.knowledge.ranking import Ranker, Retrieval
from core.knowledge.sources import cite
from core.knowledge.store import KnowledgeBase, KnowledgeCollection, StoredChunk
from core.llm.grounded import grounded_answer
from core.settings import KnowledgeSettings

KNOWLEDGE = REPO / "bots" / "support" / "knowledge"
HELD_OUT = REPO / "bench" / "data" / "heldout" / "bots"


def sentences() -> list[str]:
    out: list[str] = []
    for path in sorted(KNOWLEDGE.glob("*.md")):
        for line in path.read_text().splitlines():
            line = line.strip().lstrip("-*0123456789. ")
            if len(line) > 40 and not line.startswith("#") and not line.startswith("|"):
                out.append(line)
    return out


def write_corpus(folder: Path, chunks: int, pool: list[str], rng: random.Random) -> None:
    """Files of 10 sections, each section about 600 characters: one chunk each at the default size limit."""
    folder.mkdir(parents=True)
    sections_per_file = 10
    for f in range(math.ceil(chunks / sections_per_file)):
        parts = [f"# Synthetic document {f}"]
        for s in range(min(sections_per_file, chunks - f * sections_per_file)):
            body: list[str] = []
            while sum(len(b) for b in body) < 550:
                body.append(rng.choice(pool))
            parts.append(f"## Section {s} of document {f}\n\n" + " ".join(body)[:700])
        (folder / f"doc-{f:04d}.md").write_text("\n\n".join(parts) + "\n")


class RandomEmbedder:
    """Random unit vectors: filler for the 10,000-chunk store (see the module docstring)."""

    dimensions = 384

    def __init__(self, seed: int) -> None:
        import numpy as np

        self._rng = np.random.default_rng(seed)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        import numpy as np

        v = self._rng.standard_normal((len(texts), self.dimensions)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        return v.tolist()  # type: ignore[no-any-return]


async def bench_embedding(embedder: OnnxMiniLMEmbedder, pool: list[str]) -> None:
    import onnxruntime
    from tokenizers import Tokenizer

    questions = [q for q in pool if len(q) < 120][:200] or pool[:200]
    chunks = [" ".join(pool[i : i + 6])[:700] for i in range(0, min(len(pool), 6 * 64), 6)]
    fixed_tok = Tokenizer.from_file(str(packaged_tokenizer_path()))
    fixed_tok.enable_truncation(max_length=256)
    fixed_tok.enable_padding(pad_id=0, pad_token="[PAD]", length=256)
    # The same model file, a second session: the baseline differs from relaybot only in its padding.
    from core.knowledge.embeddings import packaged_model_path

    session = onnxruntime.InferenceSession(str(packaged_model_path()), providers=["CPUExecutionProvider"])
    padded256 = OnnxMiniLMEmbedder(session=session, tokenizer=fixed_tok)

    print("\nembedding throughput (texts/s; higher is better)")
    print(f"{'texts':<28}{'relaybot':>10}{'pad to 256':>12}{'one per call':>14}{'vs 256':>9}{'vs single':>11}")
    for name, texts in (("short questions", questions), ("700-char chunks", chunks)):
        await embedder.embed(texts[:8])  # warm-up
        t = time.perf_counter()
        await embedder.embed(texts)
        ours = len(texts) / (time.perf_counter() - t)
        t = time.perf_counter()
        await padded256.embed(texts)
        fixed = len(texts) / (time.perf_counter() - t)
        sample = texts[:50]
        t = time.perf_counter()
        for text in sample:
            await embedder.embed([text])
        single = len(sample) / (time.perf_counter() - t)
        print(
            f"{name + f' (n={len(texts)})':<28}{ours:>10.0f}{fixed:>12.0f}{single:>14.0f}"
            f"{ours / fixed:>8.2f}x{ours / single:>10.2f}x"
        )


async def bench_ingest(embedder: OnnxMiniLMEmbedder, root: Path, chunks: int, pool: list[str]) -> KnowledgeBase:
    corpus = root / "corpus"
    write_corpus(corpus, chunks, pool, random.Random(7))
    kb = await KnowledgeBase.open(embedder=embedder, path=root / "chroma")
    collection = await kb.collection("bench")
    t = time.perf_counter()
    summary = await Ingestor(collection).ingest([corpus])
    ingest_s = time.perf_counter() - t
    count = await collection.count()
    t = time.perf_counter()
    again = await Ingestor(collection).ingest([corpus])
    noop_s = time.perf_counter() - t
    if again.chunks_written or again.added or again.updated:
        print(f"ERROR: the second ingest wrote {again.chunks_written} chunks", file=sys.stderr)
        raise SystemExit(1)
    texts: list[str] = []
    for path in sorted(corpus.glob("*.md")):
        texts += [s for s in path.read_text().split("\n\n") if not s.startswith("#")]
    # The baseline embeds a sample of the same chunks (all of them would double the run time).
    sample = texts[:: max(1, len(texts) // 200)]
    t = time.perf_counter()
    await embedder.embed(sample)
    embed_rate = len(sample) / (time.perf_counter() - t)
    ingest_rate = count / ingest_s
    print(f"\ningest of {len(summary.added)} files, {count} chunks (target {chunks})")
    print(f"  full ingest:           {ingest_s:7.1f} s  ({ingest_rate:.1f} chunks/s)")
    print(
        f"  embedding alone:       {embed_rate:7.1f} chunks/s on {len(sample)} of them "
        f"(baseline; ingest/embedding throughput = {ingest_rate / embed_rate:.2f}x)"
    )
    print(f"  second ingest (no-op): {noop_s:7.2f} s  ({summary.chunks_written} chunks first, 0 second)")
    return kb


def stored_vectors(path: Path, name: str) -> Any:
    """Every stored vector, read with a plain chromadb client, for the exact-search baseline."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    client = chromadb.PersistentClient(path=str(path), settings=ChromaSettings(anonymized_telemetry=False))
    try:
        return client.get_collection(name).get(include=["embeddings"])
    finally:
        client.close()


async def query_latencies(kb: KnowledgeBase, embedder: OnnxMiniLMEmbedder, questions: list[str]) -> None:
    import numpy as np

    collection = await kb.collection("bench")
    count = await collection.count()
    raw = await asyncio.to_thread(stored_vectors, Path(kb.location), collection.name)
    matrix = np.asarray(raw["embeddings"], dtype=np.float32)
    ours: list[float] = []
    brute: list[float] = []
    ranker = Ranker(collection)
    for q in questions[:5]:
        await ranker.search(q, k=4)
    for q in questions:
        t = time.perf_counter()
        await ranker.search(q, k=4, min_score=0.33)
        ours.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        (v,) = await embedder.embed([q])
        scores = matrix @ np.asarray(v, dtype=np.float32)
        np.argpartition(-scores, 4)[:4]
        brute.append((time.perf_counter() - t) * 1000)
    p50, p99 = percentile(ours, 50), percentile(ours, 99)
    b50, b99 = percentile(brute, 50), percentile(brute, 99)
    print(
        f"{count:>8}  {p50:8.1f} {p99:8.1f} {statistics.mean(ours):8.1f}   {b50:8.1f} {b99:8.1f}"
        f"   {p50 / b50:6.2f}x {p99 / b99:6.2f}x"
    )


@dataclass(frozen=True)
class Product:
    """A bot's documents with its labelled sets: questions (file or None) and utterances (intent or None)."""

    name: str
    bot_dir: Path
    question_sets: dict[str, list[dict[str, Any]]]
    utterances: Sequence[Any]


def products() -> list[Product]:
    """The example bot (a set the threshold was tuned on, a held-out one that the fusion's constants were then
    chosen on, and a dev set of unanswerable near misses that the answer rule was chosen on with the other two),
    Forkful, a second product, Pedalpoint, a fourth one (dev data, like Forkful), and Toothwise, a third one kept
    sealed (bench/data/heldout)."""
    import json

    from core.bots import load_bot
    from core.evals.sets import load_sets

    support = REPO / "bots" / "support"
    tuned = json.loads((REPO / "tests" / "data" / "retrieval_questions.json").read_text())
    held_out = json.loads((REPO / "bench" / "data" / "support_questions.json").read_text())["questions"]
    dev = json.loads((REPO / "bench" / "data" / "support_dev_unanswerable.json").read_text())["questions"]
    return [
        Product(
            "support",
            support,
            {
                "support tuned (tests/data)": tuned,
                "support held-out (bench/data)": held_out,
                "support dev unanswerable": dev,
            },
            load_sets(load_bot(support)).utterances,
        ),
        held_out_product("forkful", "forkful held-out"),
        held_out_product("pedalpoint", "pedalpoint dev"),
        held_out_product("toothwise", "toothwise sealed"),
    ]


def held_out_product(name: str, label: str) -> Product:
    """A product under bench/data/heldout/bots, read as `relaybot eval` reads it."""
    from core.bots import load_bot
    from core.evals.sets import load_sets

    sets = load_sets(load_bot(HELD_OUT / name))
    questions = [{"question": q.text, "source": q.document} for q in sets.questions]
    return Product(name, HELD_OUT / name, {label: questions}, sets.utterances)


async def search(
    collection: KnowledgeCollection,
    question: str,
    retrieval: Retrieval,
    rule: AnswerRule,
    *,
    reject_unknown_names: bool = False,
) -> list[Passage]:
    return await Ranker(collection).search(
        question,
        k=4,
        retrieval=retrieval,
        min_score=rule.min_score,
        coverage_weight=rule.coverage_weight,
        min_evidence=rule.min_evidence,
        unknown_weight=rule.unknown_weight,
        type_weight=rule.type_weight,
        reject_unknown_names=reject_unknown_names,
    )


async def recall(
    collection: KnowledgeCollection, questions: list[dict[str, Any]], retrieval: Retrieval, rule: AnswerRule
) -> tuple[float, float, float | None]:
    """recall@1, recall@4 over the answerable questions; share of unanswerable ones that find nothing."""
    at1 = at4 = nothing = 0
    answerable = [q for q in questions if q["source"]]
    unanswerable = [q for q in questions if not q["source"]]
    for q in answerable:
        sources = [p.source for p in await search(collection, q["question"], retrieval, rule)]
        at1 += sources[:1] == [q["source"]]
        at4 += q["source"] in sources
    for q in unanswerable:
        nothing += not await search(collection, q["question"], retrieval, rule, reject_unknown_names=True)
    return at1 / len(answerable), at4 / len(answerable), nothing / len(unanswerable) if unanswerable else None


@dataclass(frozen=True)
class Found:
    """One labelled question's search, before the answer decision: the evidence core.knowledge.answerability
    weighs (None: nothing can be found, e.g. a name the documents never use) and the files the offline answer
    cites if the passages are given (the grounded answer and its sources; empty: it says "I don't know" even
    then, as it refuses passages lacking the question's names, or sharing no word with it)."""

    question: str
    source: str | None
    evidence: Evidence | None
    files: tuple[str, ...]


async def find_all(
    collection: KnowledgeCollection, questions: list[dict[str, Any]], min_score: float, top_k: int
) -> list[Found]:
    """Each question searched once as served (fused, with the name guard); the decision is applied after, so
    many rules are measured on one search (the passages depend on `min_score` only, through the companions)."""
    out = []
    for q in questions:
        found = await Ranker(collection).candidates(
            q["question"], k=top_k, min_score=min_score, reject_unknown_names=True
        )
        files: tuple[str, ...] = ()
        if found is not None:
            text = grounded_answer(q["question"], found[0], excerpt=q["question"])
            files = tuple(p.source for p in cite(text, found[0]).passages)
        out.append(Found(q["question"], q["source"], found[1] if found else None, files))
    return out


def cited_files(found: Found, rule: AnswerRule) -> tuple[str, ...]:
    """The files the bot's offline answer cites under `rule` (empty: it answers "I don't know")."""
    return found.files if found.evidence is not None and rule.answers(found.evidence) else ()


@dataclass(frozen=True)
class AnswerFigures:
    grounded: float | None  # answerable questions whose answer cites the labelled file
    refused: float | None  # answerable questions answered "I don't know"
    dont_know: float | None  # unanswerable questions answered "I don't know"
    dont_know_precision: float | None  # of all "I don't know" answers, the share that were right
    answerable: int = 0
    unanswerable: int = 0


def answer_figures(found: list[Found], rule: AnswerRule) -> AnswerFigures:
    answerable = [f for f in found if f.source]
    unanswerable = [f for f in found if not f.source]
    grounded = refused = dont_know = 0
    for f in answerable:
        files = cited_files(f, rule)
        grounded += f.source in files
        refused += not files
    for f in unanswerable:
        dont_know += not cited_files(f, rule)
    said = refused + dont_know
    return AnswerFigures(
        grounded / len(answerable) if answerable else None,
        refused / len(answerable) if answerable else None,
        dont_know / len(unanswerable) if unanswerable else None,
        dont_know / said if said and unanswerable else None,
        len(answerable),
        len(unanswerable),
    )


def pooled(figures: Sequence[AnswerFigures]) -> AnswerFigures:
    """Several sets' figures as one set of all their questions."""
    n_a = sum(f.answerable for f in figures)
    n_u = sum(f.unanswerable for f in figures)

    def total(attr: str, weights: str) -> float | None:
        n = n_a if weights == "answerable" else n_u
        if not n:
            return None
        return float(sum((getattr(f, attr) or 0.0) * getattr(f, weights) for f in figures) / n)

    return AnswerFigures(
        total("grounded", "answerable"), total("refused", "answerable"), total("dont_know", "unanswerable"), None,
        n_a, n_u,
    )  # fmt: skip


#: the decision before core.knowledge.answerability: a cosine threshold alone, measured alongside for comparison
BEFORE_MIN_SCORE = 0.33
#: the grid `--tune` searches; only the example bot's sets are measured on it
TUNE_MIN_SCORES = (0.25, 0.28, 0.30, 0.31, 0.32, 0.33)
TUNE_WEIGHTS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.5, 2.0)
TUNE_EVIDENCE = tuple(round(0.30 + 0.02 * i, 2) for i in range(61))
#: the most answerable questions the chosen rule may refuse on the tuning sets (the target of issue 19)
TUNE_MAX_REFUSED = 0.05


#: the products --tune measures on: the dev data; the sealed product is never looked at while choosing
TUNE_PRODUCTS = ("support", "forkful", "pedalpoint")
TUNE_UNKNOWN_WEIGHTS = (0.0, 0.2, 0.4, 0.6)
#: the weight of a missing answer type (core.knowledge.answer_types)
TUNE_TYPE_WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.5, 1.0, 1.5, 2.0, 3.0)


async def tune(searches: list[tuple[KnowledgeCollection, dict[str, list[dict[str, Any]]]]], top_k: int) -> None:
    """The answer rule that says "I don't know" to most of the unanswerable questions of the dev products' sets
    while refusing at most TUNE_MAX_REFUSED of the answerable ones and saying "I don't know" to no fewer of each
    set's unanswerable questions than the cosine threshold alone did (a near miss is not traded for an
    off-topic question); ties: more grounded answers, then the simpler rule."""
    names = [name for _, sets in searches for name in sets]
    print(f"\ntuning the answer rule on {', '.join(names)} (at most {TUNE_MAX_REFUSED} refused)")
    floor: dict[str, float] = {}
    for collection, sets in searches:
        for name, questions in sets.items():
            found = await find_all(collection, questions, BEFORE_MIN_SCORE, top_k)
            floor[name] = answer_figures(found, AnswerRule(min_score=BEFORE_MIN_SCORE)).dont_know or 0.0
    best: tuple[tuple[float, float, float, float, float, float], AnswerRule, AnswerFigures] | None = None
    for min_score in TUNE_MIN_SCORES:
        found = {
            name: await find_all(collection, questions, min_score, top_k)
            for collection, sets in searches
            for name, questions in sets.items()
        }
        for weight, unknown, typed in itertools.product(TUNE_WEIGHTS, TUNE_UNKNOWN_WEIGHTS, TUNE_TYPE_WEIGHTS):
            for evidence in TUNE_EVIDENCE if weight or unknown or typed else (-1.0,):
                rule = AnswerRule(
                    min_score=min_score,
                    coverage_weight=weight,
                    min_evidence=evidence,
                    unknown_weight=unknown,
                    type_weight=typed,
                )
                each = {name: answer_figures(f, rule) for name, f in found.items()}
                figures = pooled(list(each.values()))
                if (figures.refused or 0.0) > TUNE_MAX_REFUSED:
                    continue
                if any((each[name].dont_know or 0.0) < floor[name] for name in found):
                    continue
                key = (figures.dont_know or 0.0, figures.grounded or 0.0, -typed, -unknown, -weight, min_score)
                if best is None or key > best[0]:
                    best = (key, rule, figures)
    if best is None:
        print("  no rule refuses few enough answerable questions")
        return
    _, rule, figures = best
    print(
        f"  best: min_score={rule.min_score} coverage_weight={rule.coverage_weight} "
        f"unknown_weight={rule.unknown_weight} type_weight={rule.type_weight} min_evidence={rule.min_evidence}: "
        f"grounded {figures.grounded:.3f}, "
        f"refused {figures.refused:.3f}, I don't know {figures.dont_know:.3f} ({figures.answerable} answerable, "
        f"{figures.unanswerable} not)"
    )


def tests_intent_set() -> list[Any]:
    """The example bot's second labelled intent set (tests/data/intent_utterances.json, which tests/test_intents.py
    holds a floor on), as `load_sets` gives the first."""
    import json

    from core.evals.sets import LabelledUtterance

    raw = json.loads((REPO / "tests" / "data" / "intent_utterances.json").read_text())
    return [LabelledUtterance(item["text"], item["intent"], n) for n, item in enumerate(raw, start=1)]


#: the grid --tune measures the local intent classifier on (core.intents.local): whether the trained model or the
#: similarity ranks the intents, and the weight of the nearest example in the similarity (the threshold's score)
TUNE_LEARNED = (False, True)
TUNE_NEAREST_WEIGHTS = (0.0, 0.1, 0.3, 0.5, 0.7)
#: repeated random sub-sampling: each dev bot's examples pooled with its labelled utterances, this many drawn per
#: intent as the bot's examples (its descriptions kept), the rest and the `none` utterances classified; per draw
TUNE_EXAMPLES_PER_INTENT = (8, 4)
TUNE_DRAWS = 20


class CachingEmbedder:
    """The same embedder, each text embedded once: the intent grid classifies the same utterances many times."""

    def __init__(self, embedder: OnnxMiniLMEmbedder) -> None:
        self._embedder = embedder
        self.dimensions = embedder.dimensions
        self._cache: dict[str, list[float]] = {}

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            self._cache.update(zip(missing, await self._embedder.embed(missing), strict=True))
        return [self._cache[t] for t in texts]


def resampled_intents(bot: Any, utterances: Sequence[Any], per_intent: int, draw: int) -> tuple[Any, list[Any]]:
    """One draw of the sub-sampling: a copy of `bot` whose intents' examples are `per_intent` of its examples and
    labelled utterances, drawn with a seed of the bot, the size and the draw, and the rest to classify."""
    from core.evals.sets import LabelledUtterance

    rng = random.Random(f"{bot.name}-{per_intent}-{draw}")
    items = {}
    rest: list[Any] = [u for u in utterances if u.intent is None]
    for name, intent in bot.intents.items.items():
        pool = sorted({*intent.examples, *(u.text for u in utterances if u.intent == name)})
        rng.shuffle(pool)
        items[name] = intent.model_copy(update={"examples": pool[:per_intent]})
        rest += [LabelledUtterance(text, name, 0) for text in pool[per_intent:]]
    return bot.model_copy(update={"intents": bot.intents.model_copy(update={"items": items})}), rest


def intent_variants() -> list[dict[str, Any]]:
    """The classifier settings --tune measures: every combination of the TUNE_* grids above."""
    return [
        {"learned": learned, "nearest_weight": weight}
        for learned, weight in itertools.product(TUNE_LEARNED, TUNE_NEAREST_WEIGHTS)
    ]


async def tune_intents(embedder: OnnxMiniLMEmbedder, bots: list[tuple[Any, Sequence[Any]]]) -> None:
    """The local classifier's settings (intent_variants), measured two ways on the dev bots: on their labelled
    sets with the bots' own examples, and by repeated random sub-sampling (TUNE_EXAMPLES_PER_INTENT, TUNE_DRAWS: a
    bot's own examples are one draw of many, and the labelled sets alone are too few, and too near the examples,
    to tell close variants apart). Chosen: the best mean sub-sampled accuracy over the bots; ties: the simpler
    (similarity, the smaller weight). Then leave one bot out: each bot's figures under the
    settings the other bots choose, a figure not fit to it."""
    from core.evals.metrics import intent_figures
    from core.evals.runner import classify_utterances
    from core.intents import LocalIntentClassifier

    cached = CachingEmbedder(embedder)
    pooled: dict[str, tuple[Any, list[Any]]] = {}
    for bot, utterances in bots:
        pooled.setdefault(bot.name, (bot, []))[1].extend(utterances)
    print(f"\ntuning the intent classifier on {', '.join(bot.name for bot, _ in bots)}")
    print(
        f"  sub-sampled: {TUNE_DRAWS} draws of {' and '.join(map(str, TUNE_EXAMPLES_PER_INTENT))} examples per "
        "intent from each bot's examples and labelled utterances, the rest classified; per bot the mean of both"
    )
    print(
        f"  {'ranking':>10}{'nearest':>8}"
        + "".join(f"{f'{bot.name} ({len(u)})':>17}" for bot, u in bots)
        + "".join(f"{name + ' sampled':>20}" for name in pooled)
        + f"{'mean':>8}"
    )
    rows: list[tuple[dict[str, Any], dict[str, int], dict[str, float]]] = []
    for variant in intent_variants():
        classifier = LocalIntentClassifier(cached, **variant)
        right: dict[str, int] = {}
        shown = []
        for bot, utterances in bots:
            figures = intent_figures(bot.intents, await classify_utterances(classifier, bot, utterances))
            right[bot.name] = right.get(bot.name, 0) + figures.correct
            shown.append(f"{figures.correct}/{figures.total}")
        sampled: dict[str, float] = {}
        for bot, utterances in pooled.values():
            accuracies = []
            for per_intent in TUNE_EXAMPLES_PER_INTENT:
                correct = total = 0
                for draw in range(TUNE_DRAWS):
                    drawn, rest = resampled_intents(bot, utterances, per_intent, draw)
                    figures = intent_figures(drawn.intents, await classify_utterances(classifier, drawn, rest))
                    correct, total = correct + figures.correct, total + figures.total
                accuracies.append(correct / total)
            sampled[bot.name] = statistics.mean(accuracies)
        rows.append((variant, right, sampled))
        print(
            f"  {'model' if variant['learned'] else 'similarity':>10}{variant['nearest_weight']:>8}"
            + "".join(f"{r:>17}" for r in shown)
            + "".join(f"{a:>20.3f}" for a in sampled.values())
            + f"{statistics.mean(sampled.values()):>8.3f}"
        )

    def chosen(on: Sequence[str]) -> tuple[dict[str, Any], dict[str, int], dict[str, float]]:
        return max(
            rows,
            key=lambda row: (
                round(statistics.mean(row[2][name] for name in on), 4),
                not row[0]["learned"],
                -row[0]["nearest_weight"],
            ),
        )

    best = chosen(list(pooled))
    print(f"  best on all: {best[0]}")
    print("  leave one bot out: the settings chosen on the others, the left-out bot's figures under them")
    for name in pooled:
        variant, right, sampled = chosen([other for other in pooled if other != name])
        print(f"    {name:<12} {variant}: sub-sampled {sampled[name]:.3f}, labelled sets {right[name]} right")


async def untitled_copy(kb: KnowledgeBase, source: KnowledgeCollection, name: str) -> KnowledgeCollection:
    """The same chunks without their document and section titles (neither embedded nor indexed by BM25), to
    measure what the titles add."""
    raw = await asyncio.to_thread(lambda: source._collection.get(include=["documents", "metadatas"]))
    by_source: dict[str, list[StoredChunk]] = {}
    for chunk_id, text, meta in zip(raw["ids"], raw["documents"], raw["metadatas"], strict=True):
        by_source.setdefault(str(meta["source"]), []).append(
            StoredChunk(
                id=chunk_id,
                text=text,
                source=str(meta["source"]),
                title="",
                heading="",
                index=int(meta["chunk"]),
                content_hash=str(meta["content_hash"]),
            )
        )
    copy = await kb.collection(name)
    for file, chunks in by_source.items():
        await copy.replace_source(file, chunks)
    return copy


async def bench_quality(
    embedder: OnnxMiniLMEmbedder, root: Path, *, tune_only: bool = False, dev_only: bool = False
) -> None:
    from core.evals.metrics import intent_figures
    from core.evals.runner import classify_utterances
    from core.intents import LocalIntentClassifier

    options = KnowledgeSettings()
    threshold, top_k = options.min_score, options.top_k
    served = AnswerRule(
        min_score=threshold,
        coverage_weight=options.coverage_weight,
        min_evidence=options.min_evidence,
        unknown_weight=options.unknown_weight,
        type_weight=options.type_weight,
    )
    cosine_only = AnswerRule(min_score=BEFORE_MIN_SCORE)
    kb = await KnowledgeBase.open(embedder=embedder, path=root / "quality" / "chroma")
    classifier = LocalIntentClassifier(embedder)
    answers: list[tuple[str, AnswerFigures, AnswerFigures]] = []
    curves: list[tuple[str, list[tuple[float, AnswerFigures]]]] = []
    intents: list[tuple[str, int, int]] = []
    searches: list[tuple[KnowledgeCollection, dict[str, list[dict[str, Any]]]]] = []
    intent_sets: list[tuple[Any, Sequence[Any]]] = []
    if not tune_only:
        print(f"\nretrieval quality; as served: {served}, top {top_k}")
        print(f"{'set':<36}{'retriever':<18}{'ranking only':>16}{'as served':>28}")
        print(f"{'':<36}{'':<18}{'@1':>8}{'@4':>8}{'@1':>9}{'@4':>8}{'no-answer':>11}")
    for product in products():
        from core.bots import load_bot

        if (tune_only or dev_only) and product.name not in TUNE_PRODUCTS:
            continue  # the sealed product is never looked at while choosing
        bot = load_bot(product.bot_dir)
        collection = await kb.collection(product.name)
        await Ingestor(collection, max_chars=options.chunk_chars, overlap_chars=options.overlap_chars).ingest(
            [product.bot_dir / "knowledge"]
        )
        if tune_only:
            searches.append((collection, product.question_sets))
            intent_sets.append((bot, product.utterances))
            if product.name == "support":
                intent_sets.append((bot, tests_intent_set()))
            continue
        untitled = await untitled_copy(kb, collection, f"{product.name}-untitled")
        for name, questions in product.question_sets.items():
            n = sum(1 for q in questions if q["source"])
            for titles, target in (("", collection), (", no titles", untitled)):
                for retrieval in ("dense", "lexical", "hybrid") if n else ():
                    r1, r4, _ = await recall(target, questions, retrieval, AnswerRule(min_score=-1.0))
                    s1, s4, none = await recall(target, questions, retrieval, served)
                    label = {"dense": "dense", "lexical": "BM25", "hybrid": "fused"}[retrieval] + titles
                    shown = "" if none is None else f"{none:>11.2f}"
                    print(f"{name + f' n={n}':<36}{label:<18}{r1:>8.2f}{r4:>8.2f}{s1:>9.2f}{s4:>8.2f}{shown}")
            found = await find_all(collection, questions, threshold, top_k)
            found_before = await find_all(collection, questions, BEFORE_MIN_SCORE, top_k)
            answers.append((name, answer_figures(found_before, cosine_only), answer_figures(found, served)))
            if served.coverage_weight or served.unknown_weight or served.type_weight:
                steps = [round(served.min_evidence + d, 2) for d in (-0.10, -0.05, -0.03, 0.0, 0.03, 0.05, 0.10)]
                curve = [
                    (t, answer_figures(found, AnswerRule(min_score=threshold, coverage_weight=served.coverage_weight,
                                                         min_evidence=t, unknown_weight=served.unknown_weight,
                                                         type_weight=served.type_weight)))
                    for t in steps
                ]  # fmt: skip
                curves.append((name, curve))
        if product.utterances:
            outcomes = await classify_utterances(classifier, bot, product.utterances)
            figures = intent_figures(bot.intents, outcomes)
            intents.append((product.name, figures.correct, figures.total))
    if tune_only:
        await tune(searches, top_k)
        await tune_intents(embedder, intent_sets)
    await kb.close()
    if tune_only:
        return

    def rate(value: float | None) -> str:
        return "   -" if value is None else f"{value:.2f}"

    print("\noffline answers (fused, name guard, grounded answer and its sources), by the answer decision:")
    print(f"  cosine only: best cosine >= {BEFORE_MIN_SCORE} (the decision before the calibrated rule);")
    print(
        f"  as served: cosine >= {threshold} and cosine + {served.coverage_weight} x word coverage - "
        f"{served.unknown_weight} x unknown words - {served.type_weight} x missing answer type >= "
        f"{served.min_evidence} (core.knowledge.answerability)"
    )
    print("  targets: grounded >= 0.95, I don't know on unanswerable >= 0.90, wrongly refused <= 0.05")
    print(f"{'set':<36}{'decision':<14}{'grounded':>10}{'refused':>9}{'dont-know':>11}")
    for name, before, after in answers:
        for label, a in (("cosine only", before), ("as served", after)):
            print(f"{name:<36}{label:<14}{rate(a.grounded):>10}{rate(a.refused):>9}{rate(a.dont_know):>11}")
    print("\nthe don't-know decision: precision and recall of 'I don't know' (recall = unanswerable refused),")
    print("answerable wrongly refused, and grounded answers, by min_evidence (the other constants as served)")
    for name, curve in curves:
        print(f"  {name}")
        print(f"  {'min_evidence':>13}{'precision':>11}{'recall':>8}{'refused':>9}{'grounded':>10}")
        for t, a in curve:
            star = "*" if abs(t - served.min_evidence) < 1e-9 else " "
            print(
                f"  {t:>12.2f}{star}{rate(a.dont_know_precision):>11}{rate(a.dont_know):>8}"
                f"{rate(a.refused):>9}{rate(a.grounded):>10}"
            )
    print("\nintents (local classifier, each bot's eval/intents.yaml; target >= 0.93)")
    for name, correct, total in intents:
        print(f"  {name:<12}{correct / total:.3f} ({correct}/{total})")


async def fill(kb_path: Path, total: int) -> None:
    filler_kb = await KnowledgeBase.open(embedder=RandomEmbedder(11), path=kb_path)
    collection = await filler_kb.collection("bench")
    missing = total - await collection.count()
    per_source = 100
    for s in range(math.ceil(missing / per_source)):
        n = min(per_source, missing - s * per_source)
        source = f"filler-{s:04d}.md"
        await collection.replace_source(
            source,
            [
                StoredChunk(
                    id=f"filler-{s}-{i}",
                    text=f"filler text {s}-{i}",
                    source=source,
                    title="Filler",
                    heading="",
                    index=i,
                    content_hash="filler",
                )
                for i in range(n)
            ],
        )
    await filler_kb.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=1000)
    parser.add_argument("--large", type=int, default=10000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--quality-only", action="store_true", help="only the retrieval quality figures")
    parser.add_argument(
        "--tune",
        action="store_true",
        help="only choose the answer rule's constants on the dev products' sets (never on the sealed one)",
    )
    parser.add_argument("--dev-only", action="store_true", help="leave the sealed product out (while developing)")
    args = parser.parse_args()

    t = time.perf_counter()
    embedder = OnnxMiniLMEmbedder.load()
    print(f"model load: {time.perf_counter() - t:.2f} s (all-MiniLM-L6-v2 int8, onnxruntime CPU)")
    quality_root = Path(tempfile.mkdtemp(prefix="relaybot-bench-quality-"))
    try:
        await bench_quality(embedder, quality_root, tune_only=args.tune, dev_only=args.dev_only)
    finally:
        shutil.rmtree(quality_root, ignore_errors=True)
    if args.quality_only or args.tune:
        return
    pool = sentences()
    await bench_embedding(embedder, pool)

    import json

    labelled = json.loads((REPO / "tests" / "data" / "retrieval_questions.json").read_text())
    questions = [q["question"] for q in labelled]
    questions = (questions * math.ceil(args.queries / len(questions)))[: args.queries]

    root = Path(tempfile.mkdtemp(prefix="relaybot-bench-knowledge-"))
    try:
        kb = await bench_ingest(embedder, root, args.chunks, pool)
        print(f"\nquery latency, ms ({len(questions)} questions, top 4; the baseline embeds the same way)")
        print(f"{'chunks':>8}  {'p50':>8} {'p99':>8} {'mean':>8}   {'exact p50':>8} {'p99':>8}   {'p50':>7} {'p99':>7}")
        await query_latencies(kb, embedder, questions)
        await kb.close()
        await fill(root / "chroma", args.large)
        kb = await KnowledgeBase.open(embedder=embedder, path=root / "chroma")
        count = await (await kb.collection("bench")).count()
        if count != args.large:
            print(f"ERROR: the large store holds {count} chunks, not {args.large}", file=sys.stderr)
            raise SystemExit(1)
        await query_latencies(kb, embedder, questions)
        await kb.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
