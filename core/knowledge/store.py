"""The KnowledgeBase seam over chromadb: one collection per bot and knowledge set.

Embedded: a `PersistentClient` under `DATA_DIR/chroma`. Production: a Chroma server (`HttpClient`, CHROMA_URL)
shared by every worker. Every chromadb call is blocking, so each runs in `asyncio.to_thread`. Embeddings are
computed by relaybot's own `Embedder` and passed in; the collection is given `RelaybotEmbeddingFunction` so
chromadb never falls back to its default embedding function (which downloads a model at run time).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from core.knowledge.chroma_ef import RelaybotEmbeddingFunction
from core.knowledge.embeddings import Embedder
from core.knowledge.errors import KnowledgeStoreError
from core.knowledge.passage import Passage
from core.knowledge.relevance import unknown_names, vocabulary

SET_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
DEFAULT_SET = "default"
#: everyone may see a chunk with this audience; otherwise the audience is a user id (or "tenant:<id>")
PUBLIC = "*"


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredChunk:
    """One chunk to store: its text and everything a citation and an update need."""

    id: str
    text: str
    source: str
    title: str
    heading: str
    index: int
    content_hash: str
    audience: str = PUBLIC

    @property
    def embedded_text(self) -> str:
        """What is embedded: the text under its title and heading, so "yearly refund" finds the chunk under
        "Refunds - Annual plans" even when the words of the heading are not in the paragraph."""
        context = " - ".join(dict.fromkeys(part for part in (self.title, self.heading) if part))
        return f"{context}\n\n{self.text}" if context else self.text


def collection_name(bot: str, knowledge_set: str = DEFAULT_SET) -> str:
    if not SET_NAME.match(knowledge_set):
        raise ValueError(f"knowledge set {knowledge_set!r} must be lowercase letters, digits, '-' or '_'")
    return f"relaybot-{bot}-{knowledge_set}"


class KnowledgeCollection:
    """One bot's knowledge set: add and replace a source's chunks, and search them."""

    def __init__(self, collection: Any, embedder: Embedder) -> None:
        self._collection = collection
        self._embedder = embedder
        # The words of every chunk, for the unknown-name guard; rebuilt when the chunk count changes.
        self._vocabulary: set[str] = set()
        self._vocabulary_count = -1

    @property
    def name(self) -> str:
        return str(self._collection.name)

    async def count(self) -> int:
        return int(await self._call(self._collection.count))

    async def source_hashes(self) -> dict[str, str]:
        """Every stored source with the content hash it was ingested from."""
        result = await self._call(lambda: self._collection.get(include=["metadatas"]))
        hashes: dict[str, str] = {}
        for meta in result["metadatas"] or []:
            if meta and "source" in meta:
                hashes[str(meta["source"])] = str(meta.get("content_hash", ""))
        return hashes

    async def replace_source(self, source: str, chunks: Sequence[StoredChunk]) -> None:
        """Store `chunks` as the whole content of `source`, dropping whatever it had before."""
        embeddings = await self._embedder.embed([c.embedded_text for c in chunks]) if chunks else []

        def write() -> None:
            self._collection.delete(where={"source": source})
            if chunks:
                self._collection.upsert(
                    ids=[c.id for c in chunks],
                    embeddings=embeddings,
                    documents=[c.text for c in chunks],
                    metadatas=[
                        {
                            "source": c.source,
                            "title": c.title,
                            "heading": c.heading,
                            "chunk": c.index,
                            "content_hash": c.content_hash,
                            "audience": c.audience,
                        }
                        for c in chunks
                    ],
                )

        await self._call(write)

    async def delete_source(self, source: str) -> None:
        await self._call(lambda: self._collection.delete(where={"source": source}))

    async def vocabulary(self) -> set[str]:
        count = await self.count()
        if count != self._vocabulary_count:
            result = await self._call(lambda: self._collection.get(include=["documents", "metadatas"]))
            texts = [*(result["documents"] or [])]
            texts += [f"{m.get('title', '')} {m.get('heading', '')}" for m in result["metadatas"] or [] if m]
            self._vocabulary, self._vocabulary_count = vocabulary(texts), count
        return self._vocabulary

    async def search(
        self,
        query: str,
        *,
        k: int = 4,
        min_score: float = 0.0,
        audiences: Sequence[str] = (PUBLIC,),
        reject_unknown_names: bool = False,
    ) -> list[Passage]:
        """The `k` closest chunks that score at least `min_score` (cosine) and that one of `audiences` may see.

        With `reject_unknown_names`, a question naming something the documents never mention finds nothing
        (see core.knowledge.relevance).
        """
        if not query.strip():
            return []
        if reject_unknown_names and unknown_names(query, await self.vocabulary()):
            return []
        (vector,) = await self._embedder.embed([query])
        # chromadb answers an unfiltered query from its HNSW index in a few ms, but a metadata filter costs
        # tens of ms at 10,000 chunks. So ask without the filter first: if every hit may be seen by this
        # user, they are also the best hits among what the user may see; otherwise ask again, filtered.
        rows = await self._query(vector, k, where=None)
        if any(meta.get("audience", PUBLIC) not in audiences for _, meta, _ in rows):
            where: Mapping[str, Any] = (
                {"audience": audiences[0]} if len(audiences) == 1 else {"audience": {"$in": list(audiences)}}
            )
            rows = await self._query(vector, k, where=where)
        passages: list[Passage] = []
        for text, meta, distance in rows:
            score = 1.0 - distance  # the collection's space is cosine: distance = 1 - similarity
            if score < min_score:
                continue
            passages.append(
                Passage(
                    text=text,
                    source=str(meta.get("source", "")),
                    title=str(meta.get("title", "")),
                    heading=str(meta.get("heading", "")),
                    score=round(score, 4),
                )
            )
        return passages

    async def _query(
        self, vector: Sequence[float], k: int, *, where: Mapping[str, Any] | None
    ) -> list[tuple[str, Mapping[str, Any], float]]:
        result = await self._call(
            lambda: self._collection.query(
                query_embeddings=[vector],
                n_results=k,
                where=where,
                include=["documents", "metadatas", "distances"],
            )
        )
        documents = (result.get("documents") or [[]])[0]
        metadatas = (result.get("metadatas") or [[]])[0]
        distances = (result.get("distances") or [[]])[0]
        return [
            (text or "", meta or {}, float(distance))
            for text, meta, distance in zip(documents, metadatas, distances, strict=False)
        ]

    async def _call(self, fn: Any) -> Any:
        try:
            return await asyncio.to_thread(fn)
        except Exception as exc:
            raise KnowledgeStoreError(
                f"chromadb failed on collection {self.name}: {type(exc).__name__}: {exc}"
            ) from exc


class KnowledgeBase:
    """The process's chromadb client and the collections opened through it."""

    def __init__(self, client: Any, *, embedder: Embedder, location: str) -> None:
        self._client = client
        self._embedder = embedder
        self._ef = RelaybotEmbeddingFunction(embedder)
        self._collections: dict[str, KnowledgeCollection] = {}
        self._lock = asyncio.Lock()
        self.location = location

    @classmethod
    async def open(cls, *, embedder: Embedder, path: Path | None = None, url: str | None = None) -> KnowledgeBase:
        """A Chroma server at `url` (production), else a persistent store under `path`."""
        if url:
            return await cls._open_http(url, embedder)
        if path is None:
            raise KnowledgeStoreError("KnowledgeBase.open needs a path or a CHROMA_URL")
        return await cls._open_persistent(path, embedder)

    @classmethod
    async def _open_persistent(cls, path: Path, embedder: Embedder) -> KnowledgeBase:
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        try:
            await asyncio.to_thread(path.mkdir, parents=True, exist_ok=True)
        except FileExistsError as exc:
            raise KnowledgeStoreError(
                f"the knowledge store path {path} is a file, not a directory; "
                "fix: remove it or set RELAYBOT_DATA_DIR to another folder"
            ) from exc
        except OSError as exc:
            raise KnowledgeStoreError(
                f"cannot create the knowledge store directory {path}: {exc}; "
                "fix: make it writable or set RELAYBOT_DATA_DIR"
            ) from exc

        def connect() -> Any:
            client = chromadb.PersistentClient(
                path=str(path), settings=ChromaSettings(anonymized_telemetry=False, allow_reset=False)
            )
            client.heartbeat()
            client.list_collections()  # reads the SQLite catalogue: a corrupted file fails here, not mid-turn
            return client

        try:
            client = await asyncio.to_thread(connect)
        except Exception as exc:
            raise KnowledgeStoreError(
                f"the knowledge store at {path} cannot be opened ({type(exc).__name__}: {exc}); it is corrupted "
                "or was written by another chromadb version. Fix: move the folder aside and rebuild it with "
                "`relaybot ingest --bot NAME bots/NAME/knowledge` (or just `relaybot run`, which ingests the "
                "bot's knowledge folder when its collection is empty)"
            ) from exc
        return cls(client, embedder=embedder, location=str(path))

    @classmethod
    async def _open_http(cls, url: str, embedder: Embedder) -> KnowledgeBase:
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise KnowledgeStoreError(f"CHROMA_URL {url!r} must look like http://host:8000")
        ssl = parts.scheme == "https"

        def connect() -> Any:
            client = chromadb.HttpClient(
                host=parts.hostname or "localhost",
                port=parts.port or (443 if ssl else 8000),
                ssl=ssl,
                settings=ChromaSettings(anonymized_telemetry=False),
            )
            client.heartbeat()
            return client

        try:
            client = await asyncio.to_thread(connect)
        except Exception as exc:
            raise KnowledgeStoreError(
                f"the Chroma server at {url} is not reachable ({type(exc).__name__}: {exc}); "
                "fix: start it (`chroma run --path ./data/chroma`) or unset CHROMA_URL to use the embedded store"
            ) from exc
        return cls(client, embedder=embedder, location=url)

    async def collection(self, bot: str, knowledge_set: str = DEFAULT_SET) -> KnowledgeCollection:
        name = collection_name(bot, knowledge_set)
        async with self._lock:
            if name not in self._collections:

                def get_or_create() -> Any:
                    # Always with our embedding function: without one chromadb would use its default, which
                    # downloads a model at run time.
                    return self._client.get_or_create_collection(
                        name=name,
                        embedding_function=self._ef,
                        configuration={"hnsw": {"space": "cosine"}},
                        metadata={"bot": bot, "knowledge_set": knowledge_set},
                    )

                try:
                    raw = await asyncio.to_thread(get_or_create)
                except Exception as exc:
                    raise KnowledgeStoreError(
                        f"cannot open the knowledge collection {name} at {self.location}: {type(exc).__name__}: "
                        f"{exc}. Fix: if it was built with another embedding model, delete it and re-ingest"
                    ) from exc
                self._collections[name] = KnowledgeCollection(raw, self._embedder)
            return self._collections[name]

    async def ping(self) -> None:
        try:
            await asyncio.to_thread(self._client.heartbeat)
        except Exception as exc:
            raise KnowledgeStoreError(f"chromadb at {self.location} is not answering: {exc}") from exc

    async def close(self) -> None:
        close = getattr(self._client, "close", None)
        if close is not None:
            await asyncio.to_thread(close)
