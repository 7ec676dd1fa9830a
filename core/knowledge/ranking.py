"""Ranking a collection's chunks for a question: the embedding's ranking and BM25's fused, the companions of
the best passage, and the evidence the "I don't know" decision weighs (core.knowledge.answerability).

The collection (core.knowledge.store) keeps the chunks, their vectors and the BM25 index; this module only
reads them. Every passage's score is its cosine similarity to the question, whichever retriever brought it,
so the decision means the same in every mode: BM25 changes which passages come first, not whether any does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from core.knowledge.answer_types import untyped
from core.knowledge.answerability import AnswerRule, Evidence, coverage, unknown_share
from core.knowledge.passage import Passage
from core.knowledge.relevance import unknown_names
from core.knowledge.spelling import Speller, english_words
from core.knowledge.store import PUBLIC, Hit, KnowledgeCollection

__all__ = ["CANDIDATES", "COMPANION_MARGIN", "LEXICAL_WEIGHT", "RRF_K", "Ranker", "Retrieval"]

#: reciprocal rank fusion: a chunk ranked r-th by a retriever adds weight / (RRF_K + r). The paper's K is 60,
#: for long lists; with 20 candidates each, 10 keeps a first place worth clearly more than a tenth.
RRF_K = 10
#: BM25's weight against the embedding's 1: BM25 alone is the weaker ranker here (bench/knowledge.py: recall@1
#: 0.67 against 0.86 on the tuned set), so it moves a chunk up when it agrees and decides ties, not more.
#: K and the weight were chosen by bench/knowledge.py on both labelled sets (0.5 and 10: the best recall@4
#: without losing recall@1). Measured again with the answer decision (issue 19, weights 0 to 1, K 10/30/60):
#: 0.25 said "I don't know" to 2 more of the example bot's 47 unanswerable questions, but put the refunds page
#: before the failed-payments section for "my card payment failed, when will you retry it" and lost the four
#: plans in the answer to "what plans do you have?"; 0.5 stays.
LEXICAL_WEIGHT = 0.5
#: how many candidates each retriever contributes to the fusion (at least; more when k is large)
CANDIDATES = 20
#: how far below the threshold a passage may be and still accompany one that reaches it (never alone)
COMPANION_MARGIN = 0.05

Retrieval = Literal["hybrid", "dense", "lexical"]


class Ranker:
    """Searches one collection: the passages that answer a question, best first, or none."""

    def __init__(self, collection: KnowledgeCollection) -> None:
        self._collection = collection

    async def search(
        self,
        query: str,
        *,
        k: int = 4,
        min_score: float = 0.0,
        coverage_weight: float = 0.0,
        min_evidence: float = -1.0,
        unknown_weight: float = 0.0,
        type_weight: float = 0.0,
        audiences: Sequence[str] = (PUBLIC,),
        reject_unknown_names: bool = False,
        retrieval: Retrieval = "hybrid",
    ) -> list[Passage]:
        """The `k` best chunks that one of `audiences` may see, when they answer the question by the rule of
        core.knowledge.answerability: some chunk has a cosine similarity to the query of `min_score` or more
        (the others may be up to COMPANION_MARGIN below it) and that cosine plus `coverage_weight` times the
        share of the question's terms the passages contain, less `unknown_weight` times the share no chunk
        contains and `type_weight` if the passages lack the kind of answer the question asks for, reaches
        `min_evidence`; else nothing. With the defaults of the last four, the cosine threshold alone decides.

        "hybrid" ranks by reciprocal rank fusion of the embedding's ranking and BM25's; "dense" and
        "lexical" by one of them (to measure each). The threshold is on the cosine in every mode, so "I don't
        know" (nothing passes) means what it always meant: no chunk near enough to the question, among the
        candidates of both retrievers; BM25 changes which passages come first, not whether any does. With
        `reject_unknown_names`, a question naming something the documents never mention finds nothing
        (see core.knowledge.relevance).
        """
        found = await self.candidates(
            query,
            k=k,
            min_score=min_score,
            audiences=audiences,
            reject_unknown_names=reject_unknown_names,
            retrieval=retrieval,
        )
        if found is None:
            return []
        passages, evidence = found
        rule = AnswerRule(
            min_score=min_score,
            coverage_weight=coverage_weight,
            min_evidence=min_evidence,
            unknown_weight=unknown_weight,
            type_weight=type_weight,
        )
        return passages if rule.answers(evidence) else []

    async def candidates(
        self,
        query: str,
        *,
        k: int = 4,
        min_score: float = 0.0,
        audiences: Sequence[str] = (PUBLIC,),
        reject_unknown_names: bool = False,
        retrieval: Retrieval = "hybrid",
    ) -> tuple[list[Passage], Evidence] | None:
        """The passages `search` would give if the question were answered, with the evidence the decision
        weighs (core.knowledge.answerability); None when nothing can be found at all (an empty query, an
        unknown name, an empty collection). `search` is this plus the decision; the benchmark calls it to
        measure many rules on one search."""
        if not query.strip():
            return None
        collection = self._collection
        known = await collection.vocabulary()
        index = await collection.lexical_index()
        # "forgot my pasword": what was meant, as the documents spell it.
        query = Speller(known, holds=index.holds, dictionary=english_words()).mend(query)
        if reject_unknown_names and unknown_names(query, known):
            return None
        n = max(CANDIDATES, 4 * k)
        # The collection's own embedder: the question's vector must be in the space its chunks were written in.
        (vector,) = await collection.embedder.embed([query])
        dense = await collection.nearest(vector, n, audiences)
        lexical: list[str] = []
        if retrieval != "dense":
            lexical = [chunk_id for chunk_id, _ in index.search(query, n, audiences)]
        hits = {hit.id: hit for hit in dense}
        missing = [chunk_id for chunk_id in lexical if chunk_id not in hits]
        if missing:
            hits.update((hit.id, hit) for hit in await collection.hits(missing, vector))
        ranked: list[tuple[list[str], float]] = {
            "hybrid": [([hit.id for hit in dense], 1.0), (lexical, LEXICAL_WEIGHT)],
            "dense": [([hit.id for hit in dense], 1.0)],
            "lexical": [(lexical, 1.0)],
        }[retrieval]
        fused: dict[str, float] = {}
        for ranking, weight in ranked:
            for rank, chunk_id in enumerate(ranking, start=1):
                fused[chunk_id] = fused.get(chunk_id, 0.0) + weight / (RRF_K + rank)
        if not fused:
            return None
        # Ties (one retriever's r-th against the other's r-th) go to the closer chunk.
        order = sorted(fused, key=lambda chunk_id: (-fused[chunk_id], -hits[chunk_id].cosine))
        best = max(hits[chunk_id].cosine for chunk_id in order)
        passages = _with_companions([hits[chunk_id] for chunk_id in order], min_score=min_score, best=best, k=k)
        shared = coverage(query, (f"{p.title}\n{p.heading}\n{p.text}" for p in passages), index.idf)
        unknown = unknown_share(query, index.idf, index.holds)
        typed = untyped(query, (p.text for p in passages), index.idf)
        return passages, Evidence(cosine=best, coverage=shared, unknown=unknown, untyped=typed)


def _with_companions(ranked: Sequence[Hit], *, min_score: float, best: float, k: int) -> list[Passage]:
    """The first `k` of `ranked` near enough to be given. Once a candidate reaches `min_score`, a passage
    slightly below it may come along (COMPANION_MARGIN): the overview of a document ("Tasklane has four plans:
    ...") often scores just under a question's own best section."""
    floor = min(min_score, best) - COMPANION_MARGIN
    passages: list[Passage] = []
    for hit in ranked:
        if hit.cosine < floor:
            continue
        meta = hit.metadata
        passages.append(
            Passage(
                text=hit.text,
                source=str(meta.get("source", "")),
                title=str(meta.get("title", "")),
                heading=str(meta.get("heading", "")),
                url=str(meta.get("url", "")),
                score=round(hit.cosine, 4),
            )
        )
        if len(passages) == k:
            break
    return passages
