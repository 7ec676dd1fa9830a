"""The process's knowledge service: one embedder and one chromadb client, both opened on first use.

The runtime builds one and injects it into the retrieval stage, the CLI's ingest command and the intent
classifier (`await knowledge.embedder()`). Nothing is opened until needed, so a process whose bots have no
ingested knowledge never loads the model or touches chromadb; with the embedded store, a missing
`DATA_DIR/chroma` folder means "nothing ingested yet" and retrieval is simply skipped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import structlog

from core.knowledge.embeddings import Embedder, OnnxMiniLMEmbedder, RecentTextsEmbedder
from core.knowledge.ingest import Ingestor, IngestSummary, Progress
from core.knowledge.passage import Passage
from core.knowledge.ranking import Ranker
from core.knowledge.store import DEFAULT_SET, PUBLIC, KnowledgeBase, KnowledgeCollection
from core.settings import KnowledgeSettings, Settings

#: how long a collection known to hold documents is trusted to, before chromadb is asked again
FILLED_RECHECK_SECONDS = 10.0

EmbedderFactory = Callable[[], Embedder]


class KnowledgeService:
    def __init__(
        self,
        *,
        options: KnowledgeSettings,
        store_path: Path,
        chroma_url: str | None = None,
        embedder: Embedder | None = None,
        embedder_factory: EmbedderFactory | None = None,
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self.options = options
        self.store_path = store_path
        self.chroma_url = chroma_url
        self._embedder = embedder
        self._embedder_factory = embedder_factory or (
            lambda: OnnxMiniLMEmbedder.load(threads=options.embedding_threads)
        )
        self._base: KnowledgeBase | None = None
        self._lock = asyncio.Lock()
        self._recent: RecentTextsEmbedder | None = None
        #: (bot, set) -> until when "this collection has documents" is trusted without asking chromadb
        self._known_filled: dict[tuple[str, str], float] = {}
        self._log = logger or structlog.get_logger("relaybot.knowledge")

    @classmethod
    def from_settings(cls, settings: Settings, *, embedder: Embedder | None = None) -> KnowledgeService:
        options = settings.knowledge
        factory: EmbedderFactory | None = None
        if embedder is None and options.embeddings == "openai":
            factory = _openai_factory(settings)
        return cls(
            options=options,
            store_path=settings.data_dir / "chroma",
            chroma_url=settings.chroma_url,
            embedder=embedder,
            embedder_factory=factory,
        )

    @property
    def collection_suffix(self) -> str:
        # Vectors of different models cannot share a collection: OpenAI's get their own.
        return "-openai" if self.options.embeddings == "openai" else ""

    async def embedder(self) -> Embedder:
        """The process's one embedder, loaded (in a thread) on first use; it remembers the last few
        texts it embedded, so intent classification and retrieval embed a message once."""
        if self._recent is None:
            async with self._lock:
                if self._embedder is None:
                    self._embedder = await asyncio.to_thread(self._embedder_factory)
                if self._recent is None:
                    self._recent = RecentTextsEmbedder(self._embedder)
        return self._recent

    @property
    def store_exists(self) -> bool:
        """Whether there is a store to search: a server is configured, or something was ingested here."""
        return bool(self.chroma_url) or (self.store_path / "chroma.sqlite3").is_file()

    async def base(self) -> KnowledgeBase:
        """The chromadb client, opened (and the embedded store created) on first use."""
        if self._base is None:
            embedder = await self.embedder()
            async with self._lock:
                if self._base is None:
                    # The BM25 indexes live next to the embedded store; with a Chroma server, the same
                    # folder is this machine's copy of them (rebuilt from the server when out of step).
                    self._base = await KnowledgeBase.open(
                        embedder=embedder,
                        path=self.store_path,
                        url=self.chroma_url,
                        lexical_path=self.store_path.parent / "lexical",
                    )
        return self._base

    async def collection(self, bot: str, knowledge_set: str = DEFAULT_SET) -> KnowledgeCollection:
        base = await self.base()
        return await base.collection(bot, knowledge_set + self.collection_suffix)

    async def search(
        self,
        bot: str,
        query: str,
        *,
        knowledge_set: str = DEFAULT_SET,
        audiences: Sequence[str] = (PUBLIC,),
        top_k: int | None = None,
        min_score: float | None = None,
    ) -> list[Passage] | None:
        """Passages for `query`, best first; None when the bot has no knowledge to search (nothing ingested)."""
        if self._base is None and not await asyncio.to_thread(lambda: self.store_exists):
            return None
        collection = await self.collection(bot, knowledge_set)
        if not await self._has_documents(bot, knowledge_set, collection):
            return None
        return await Ranker(collection).search(
            query,
            k=top_k or self.options.top_k,
            min_score=self.options.min_score if min_score is None else min_score,
            coverage_weight=self.options.coverage_weight,
            min_evidence=self.options.min_evidence,
            unknown_weight=self.options.unknown_weight,
            type_weight=self.options.type_weight,
            audiences=audiences,
            reject_unknown_names=self.options.reject_unknown_names,
        )

    async def _has_documents(self, bot: str, knowledge_set: str, collection: KnowledgeCollection) -> bool:
        # Asked of chromadb at most every few seconds per collection, not on every message; an
        # ingest here is seen at once, one by another process (`relaybot ingest`) within that time.
        key = (bot, knowledge_set)
        if self._known_filled.get(key, 0.0) > time.monotonic():
            return True
        if await collection.count() == 0:
            return False
        self._known_filled[key] = time.monotonic() + FILLED_RECHECK_SECONDS
        return True

    async def ingest(
        self,
        bot: str,
        paths: Sequence[Path],
        *,
        knowledge_set: str = DEFAULT_SET,
        prune: bool = False,
        audience: str = PUBLIC,
        progress: Progress | None = None,
    ) -> IngestSummary:
        collection = await self.collection(bot, knowledge_set)
        ingestor = Ingestor(
            collection,
            max_chars=self.options.chunk_chars,
            overlap_chars=self.options.overlap_chars,
            audience=audience,
        )
        summary = await ingestor.ingest(paths, prune=prune, progress=progress)
        self._known_filled.pop((bot, knowledge_set), None)  # --prune may have emptied it
        await self._log.ainfo(
            "knowledge_ingested",
            bot=bot,
            knowledge_set=knowledge_set,
            added=len(summary.added),
            updated=len(summary.updated),
            unchanged=len(summary.unchanged),
            pruned=len(summary.pruned),
            skipped=len(summary.skipped),
            chunks=summary.chunks_written,
        )
        return summary

    async def ping(self) -> str | None:
        """None when there is no store to check; else "ok". Raises KnowledgeStoreError when it is unusable."""
        if self._base is None and not await asyncio.to_thread(lambda: self.store_exists):
            return None
        await (await self.base()).ping()
        return "ok"

    async def close(self) -> None:
        if self._base is not None:
            await self._base.close()
            self._base = None
        close = getattr(self._embedder, "aclose", None)
        if close is not None:
            await close()


def _openai_factory(settings: Settings) -> EmbedderFactory:
    def build() -> Embedder:
        import openai

        from core.knowledge.errors import KnowledgeError
        from core.knowledge.openai_embeddings import OpenAIEmbedder

        if settings.openai_api_key is None:
            raise KnowledgeError("RELAYBOT_KNOWLEDGE__EMBEDDINGS=openai needs OPENAI_API_KEY")
        client = openai.AsyncOpenAI(
            api_key=settings.openai_api_key.get_secret_value(), base_url=settings.openai_base_url
        )
        return OpenAIEmbedder(client, model=settings.knowledge.openai_embedding_model)

    return build
