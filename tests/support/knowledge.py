"""A bot's documents in a real chromadb store, ingested and searched by the service the pipeline uses."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from core.knowledge.service import KnowledgeService
from core.settings import KnowledgeSettings


@contextlib.asynccontextmanager
async def ingested(directory: Path, bot: str, folder: Path) -> AsyncIterator[KnowledgeService]:
    """A knowledge service on the default settings with a store under `directory` and `folder` ingested as
    `bot`'s documents; closed on the way out. Its `search` is what the pipeline hands the model."""
    service = KnowledgeService(options=KnowledgeSettings(), store_path=directory / "chroma")
    try:
        await service.ingest(bot, [folder])
        yield service
    finally:
        await service.close()
