"""A bot's documents in a real chromadb collection, ingested and searched as relaybot serves them."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from core.knowledge.embeddings import OnnxMiniLMEmbedder
from core.knowledge.ingest import Ingestor
from core.knowledge.passage import Passage
from core.knowledge.ranking import Ranker
from core.knowledge.store import KnowledgeBase, KnowledgeCollection
from core.settings import KnowledgeSettings


@contextlib.asynccontextmanager
async def ingested(directory: Path, bot: str, folder: Path) -> AsyncIterator[KnowledgeCollection]:
    """`bot`'s collection in a store under `directory`, with `folder` ingested at the served chunk sizes; the
    store is closed on the way out."""
    options = KnowledgeSettings()
    kb = await KnowledgeBase.open(embedder=OnnxMiniLMEmbedder.load(), path=directory / "chroma")
    try:
        collection = await kb.collection(bot)
        await Ingestor(collection, max_chars=options.chunk_chars, overlap_chars=options.overlap_chars).ingest([folder])
        yield collection
    finally:
        await kb.close()


async def served_search(collection: KnowledgeCollection, question: str) -> list[Passage]:
    """The passages the pipeline would hand the model for `question`: the default settings' answer decision."""
    options = KnowledgeSettings()
    return await Ranker(collection).search(
        question,
        k=options.top_k,
        min_score=options.min_score,
        coverage_weight=options.coverage_weight,
        min_evidence=options.min_evidence,
        unknown_weight=options.unknown_weight,
        type_weight=options.type_weight,
    )
