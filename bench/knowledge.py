"""Knowledge: retrieval quality of each retriever, embedding throughput, ingest time for 1,000 chunks, query
latency at 1,000 and 10,000 chunks.

Everything is real: the packaged all-MiniLM-L6-v2 int8 ONNX model on onnxruntime, a chromadb PersistentClient
in a temp dir, relaybot's Ingestor and KnowledgeCollection.search. Each figure comes with a baseline measured in
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

Quality (first, and alone with --quality-only): the example bot's documents ingested into a real chromadb, and
for two labelled sets (tests/data/retrieval_questions.json, the one the threshold was tuned on, and the held-out
bench/data/support_questions.json) recall@1 and recall@4 of the embedding alone ("dense"), BM25 alone and the
two fused by reciprocal rank fusion, in the same run: once ranking only (no threshold) and once as served (the
cosine threshold applied), with the share of unanswerable questions that find nothing.

    python bench/knowledge.py [--chunks 1000] [--large 10000] [--queries 200] [--quality-only]
"""

from __future__ import annotations

import argparse
import asyncio
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

from core.knowledge.embeddings import OnnxMiniLMEmbedder, packaged_tokenizer_path
from core.knowledge.ingest import Ingestor
from core.knowledge.sources import cite
from core.knowledge.store import KnowledgeBase, KnowledgeCollection, Retrieval, StoredChunk
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
    for q in questions[:5]:
        await collection.search(q, k=4)
    for q in questions:
        t = time.perf_counter()
        await collection.search(q, k=4, min_score=0.33)
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
    """The example bot (a set the threshold was tuned on, and a held-out one that the fusion's constants were
    then chosen on) and Forkful, a second product nobody tuned anything on (bench/data/heldout)."""
    import json

    from core.bots import load_bot
    from core.evals.sets import load_sets

    support = REPO / "bots" / "support"
    forkful = HELD_OUT / "forkful"
    forkful_sets = load_sets(load_bot(forkful))
    tuned = json.loads((REPO / "tests" / "data" / "retrieval_questions.json").read_text())
    held_out = json.loads((REPO / "bench" / "data" / "support_questions.json").read_text())["questions"]
    return [
        Product(
            "support",
            support,
            {"support tuned (tests/data)": tuned, "support held-out (bench/data)": held_out},
            load_sets(load_bot(support)).utterances,
        ),
        Product(
            "forkful",
            forkful,
            {"forkful held-out": [{"question": q.text, "source": q.document} for q in forkful_sets.questions]},
            forkful_sets.utterances,
        ),
    ]


async def recall(
    collection: KnowledgeCollection, questions: list[dict[str, Any]], retrieval: Retrieval, min_score: float
) -> tuple[float, float, float | None]:
    """recall@1, recall@4 over the answerable questions; share of unanswerable ones that find nothing."""
    at1 = at4 = nothing = 0
    answerable = [q for q in questions if q["source"]]
    unanswerable = [q for q in questions if not q["source"]]
    for q in answerable:
        sources = [p.source for p in await collection.search(q["question"], k=4, min_score=min_score,
                                                            retrieval=retrieval)]  # fmt: skip
        at1 += sources[:1] == [q["source"]]
        at4 += q["source"] in sources
    for q in unanswerable:
        nothing += not await collection.search(
            q["question"], k=4, min_score=min_score, retrieval=retrieval, reject_unknown_names=True
        )
    return at1 / len(answerable), at4 / len(answerable), nothing / len(unanswerable) if unanswerable else None


async def cited_files(collection: KnowledgeCollection, question: str, min_score: float, top_k: int) -> list[str]:
    """The files the bot's offline answer cites, as it is served: the fused search with the threshold and the
    name guard, the grounded answer (which refuses passages lacking the question's names), its sources.
    Empty: the bot answers "I don't know"."""
    passages = await collection.search(question, k=top_k, min_score=min_score, reject_unknown_names=True)
    text = grounded_answer(question, passages, excerpt=question)
    return [p.source for p in cite(text, passages).passages]


@dataclass(frozen=True)
class AnswerFigures:
    grounded: float  # answerable questions whose answer cites the labelled file
    refused: float  # answerable questions answered "I don't know"
    dont_know: float | None  # unanswerable questions answered "I don't know"
    dont_know_precision: float | None  # of all "I don't know" answers, the share that were right


async def answer_figures(
    collection: KnowledgeCollection, questions: list[dict[str, Any]], min_score: float, top_k: int
) -> AnswerFigures:
    answerable = [q for q in questions if q["source"]]
    unanswerable = [q for q in questions if not q["source"]]
    grounded = refused = dont_know = 0
    for q in answerable:
        files = await cited_files(collection, q["question"], min_score, top_k)
        grounded += q["source"] in files
        refused += not files
    for q in unanswerable:
        dont_know += not await cited_files(collection, q["question"], min_score, top_k)
    said = refused + dont_know
    return AnswerFigures(
        grounded / len(answerable),
        refused / len(answerable),
        dont_know / len(unanswerable) if unanswerable else None,
        dont_know / said if said and unanswerable else None,
    )


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


async def bench_quality(embedder: OnnxMiniLMEmbedder, root: Path) -> None:
    from core.evals.metrics import intent_figures
    from core.evals.runner import classify_utterances
    from core.intents import LocalIntentClassifier

    options = KnowledgeSettings()
    threshold, top_k = options.min_score, options.top_k
    kb = await KnowledgeBase.open(embedder=embedder, path=root / "quality" / "chroma")
    classifier = LocalIntentClassifier(embedder)
    answers: list[tuple[str, AnswerFigures]] = []
    curves: list[tuple[str, list[tuple[float, AnswerFigures]]]] = []
    intents: list[tuple[str, int, int]] = []
    print(f"\nretrieval quality; threshold: cosine >= {threshold}, top {top_k}")
    print(f"{'set':<36}{'retriever':<18}{'ranking only':>16}{'as served (threshold)':>28}")
    print(f"{'':<36}{'':<18}{'@1':>8}{'@4':>8}{'@1':>9}{'@4':>8}{'no-answer':>11}")
    for product in products():
        from core.bots import load_bot

        bot = load_bot(product.bot_dir)
        collection = await kb.collection(product.name)
        await Ingestor(collection, max_chars=options.chunk_chars, overlap_chars=options.overlap_chars).ingest(
            [product.bot_dir / "knowledge"]
        )
        untitled = await untitled_copy(kb, collection, f"{product.name}-untitled")
        for name, questions in product.question_sets.items():
            n = sum(1 for q in questions if q["source"])
            for titles, target in (("", collection), (", no titles", untitled)):
                for retrieval in ("dense", "lexical", "hybrid"):
                    r1, r4, _ = await recall(target, questions, retrieval, -1.0)
                    s1, s4, none = await recall(target, questions, retrieval, threshold)
                    label = {"dense": "dense", "lexical": "BM25", "hybrid": "fused"}[retrieval] + titles
                    shown = "" if none is None else f"{none:>11.2f}"
                    print(f"{name + f' n={n}':<36}{label:<18}{r1:>8.2f}{r4:>8.2f}{s1:>9.2f}{s4:>8.2f}{shown}")
            answers.append((name, await answer_figures(collection, questions, threshold, top_k)))
            curve = [
                (t, await answer_figures(collection, questions, t, top_k))
                for t in (0.20, 0.25, 0.28, 0.30, 0.33, 0.36, 0.40, 0.45, 0.50)
            ]
            curves.append((name, curve))
        if product.utterances:
            outcomes = await classify_utterances(classifier, bot, product.utterances)
            figures = intent_figures(bot.intents, outcomes)
            intents.append((product.name, figures.correct, figures.total))
    await kb.close()

    def rate(value: float | None) -> str:
        return "   -" if value is None else f"{value:.2f}"

    print("\noffline answers as served (fused, threshold, name guard, grounded answer and its sources)")
    print("  targets: grounded >= 0.95, I don't know on unanswerable >= 0.90, wrongly refused <= 0.05")
    print(f"{'set':<36}{'grounded':>10}{'refused':>9}{'dont-know':>11}")
    for name, a in answers:
        print(f"{name:<36}{a.grounded:>10.2f}{a.refused:>9.2f}{rate(a.dont_know):>11}")
    print("\nthe don't-know threshold: precision and recall of 'I don't know' (recall = unanswerable refused),")
    print("answerable wrongly refused, and grounded answers, by min_score")
    for name, curve in curves:
        print(f"  {name}")
        print(f"  {'min_score':>11}{'precision':>11}{'recall':>8}{'refused':>9}{'grounded':>10}")
        for t, a in curve:
            star = "*" if abs(t - threshold) < 1e-9 else " "
            print(
                f"  {t:>10.2f}{star}{rate(a.dont_know_precision):>11}{rate(a.dont_know):>8}"
                f"{a.refused:>9.2f}{a.grounded:>10.2f}"
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
    args = parser.parse_args()

    t = time.perf_counter()
    embedder = OnnxMiniLMEmbedder.load()
    print(f"model load: {time.perf_counter() - t:.2f} s (all-MiniLM-L6-v2 int8, onnxruntime CPU)")
    quality_root = Path(tempfile.mkdtemp(prefix="relaybot-bench-quality-"))
    try:
        await bench_quality(embedder, quality_root)
    finally:
        shutil.rmtree(quality_root, ignore_errors=True)
    if args.quality_only:
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
