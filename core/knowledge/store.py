"""The KnowledgeBase seam over chromadb: one collection per bot and knowledge set, and what is kept with it.

A collection stores chunks, their vectors, a revision and the BM25 index in step with it, and answers the
queries ranking needs (the nearest chunks to a vector, chunks by id with their cosine, the index, the
vocabulary); ranking them for a question is core.knowledge.ranking's.

Embedded: a `PersistentClient` under `DATA_DIR/chroma`. Production: a Chroma server (`HttpClient`, CHROMA_URL)
shared by every worker. Every chromadb call is blocking, so each runs in `asyncio.to_thread`. Embeddings are
computed by relaybot's own `Embedder` and passed in; the collection is given `RelaybotEmbeddingFunction` so
chromadb never falls back to its default embedding function (which downloads a model at run time).
"""

from __future__ import annotations

import asyncio
import math
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import structlog

from core.knowledge.chroma_ef import RelaybotEmbeddingFunction
from core.knowledge.embeddings import Embedder
from core.knowledge.errors import KnowledgeStoreError
from core.knowledge.lexical import LexicalIndex, LexicalRow
from core.knowledge.relevance import vocabulary

_log = structlog.get_logger("relaybot.knowledge")

SET_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
DEFAULT_SET = "default"
#: everyone may see a chunk with this audience; otherwise the audience is a user id (or "tenant:<id>")
PUBLIC = "*"
#: the revision of a collection written before revisions existed (its BM25 index is built on first use)
UNVERSIONED = "0"


class Hit(NamedTuple):
    """A stored chunk found for a query vector, with its cosine similarity to it."""

    id: str
    text: str
    metadata: Mapping[str, Any]
    cosine: float


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
    #: the document's address from its front matter ("" if none): its title links there in sources
    url: str = ""

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
    """One bot's knowledge set: add and replace a source's chunks, and read them back for ranking."""

    def __init__(
        self,
        collection: Any,
        embedder: Embedder,
        *,
        lexical_dir: Path | None = None,
        reopen: Callable[[], Any] | None = None,
    ) -> None:
        self._collection = collection
        self._embedder = embedder
        # The BM25 index of this collection: saved under `lexical_dir` (None: kept in memory only) and in
        # step with the collection's revision, which `reopen` reads fresh (another process may have written).
        self._lexical_dir = lexical_dir
        self._reopen = reopen or (lambda: collection)
        self._lexical: LexicalIndex | None = None
        self._lexical_lock = asyncio.Lock()
        # The words of every chunk, for the unknown-name guard; rebuilt when the chunk count changes.
        self._vocabulary: set[str] = set()
        self._vocabulary_count = -1

    @property
    def name(self) -> str:
        return str(self._collection.name)

    @property
    def embedder(self) -> Embedder:
        """The model the chunks' vectors were written with, which a query must be embedded with too."""
        return self._embedder

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
                            "url": c.url,
                        }
                        for c in chunks
                    ],
                )

        await self._call(write)
        await self._new_revision()

    async def delete_source(self, source: str) -> None:
        await self._call(lambda: self._collection.delete(where={"source": source}))
        await self._new_revision()

    # ----------------------------------------------------------------------------------------------
    # The BM25 index, kept in step with the collection

    async def revision(self) -> str:
        """The collection's current revision: a new one is written with every change of its chunks."""
        meta = await self._call(lambda: self._reopen().metadata or {})
        return str(meta.get("revision") or UNVERSIONED)

    async def _new_revision(self) -> None:
        # After the write, not before: a reader that sees the new revision rebuilds from the new chunks.
        # (A crash between the two leaves the old revision, and the next write or ingest fixes it.)
        revision = uuid.uuid4().hex

        def stamp() -> None:
            meta = {k: v for k, v in (self._collection.metadata or {}).items() if not k.startswith("hnsw:")}
            self._collection.modify(metadata={**meta, "revision": revision})

        await self._call(stamp)

    async def lexical_index(self) -> LexicalIndex:
        """The BM25 index at the collection's current revision: the one in memory, else the saved one, else
        rebuilt from the chunks in chromadb (and saved)."""
        revision = await self.revision()
        if self._lexical is not None and self._lexical.revision == revision:
            return self._lexical
        async with self._lexical_lock:
            if self._lexical is not None and self._lexical.revision == revision:
                return self._lexical
            directory = self._lexical_dir / self.name if self._lexical_dir else None
            index = await asyncio.to_thread(LexicalIndex.load, directory, revision) if directory else None
            if index is None:
                index = await self._build_lexical(revision)
                if directory is not None:
                    try:
                        await asyncio.to_thread(index.save, directory)
                    except KnowledgeStoreError as exc:
                        # The index in memory serves all the same; the next process rebuilds it too.
                        await _log.awarning("knowledge_lexical_not_saved", collection=self.name, error=str(exc))
            self._lexical = index
            return index

    async def _build_lexical(self, revision: str) -> LexicalIndex:
        result = await self._call(lambda: self._collection.get(include=["documents", "metadatas"]))
        rows = []
        for chunk_id, text, meta in zip(
            result["ids"], result["documents"] or [], result["metadatas"] or [], strict=False
        ):
            meta = meta or {}
            # Title and heading indexed with the text, as they are embedded with it (StoredChunk.embedded_text).
            indexed = f"{meta.get('title', '')}\n{meta.get('heading', '')}\n{text or ''}"
            rows.append(LexicalRow(id=str(chunk_id), audience=str(meta.get("audience", PUBLIC)), text=indexed))
        return await asyncio.to_thread(LexicalIndex.build, revision, rows)

    async def vocabulary(self) -> set[str]:
        count = await self.count()
        if count != self._vocabulary_count:
            result = await self._call(lambda: self._collection.get(include=["documents", "metadatas"]))
            texts = [*(result["documents"] or [])]
            texts += [f"{m.get('title', '')} {m.get('heading', '')}" for m in result["metadatas"] or [] if m]
            self._vocabulary, self._vocabulary_count = vocabulary(texts), count
        return self._vocabulary

    async def nearest(self, vector: Sequence[float], n: int, audiences: Sequence[str]) -> list[Hit]:
        """The `n` chunks nearest to `vector` (by cosine) that one of `audiences` may see, nearest first."""
        # chromadb answers an unfiltered query from its HNSW index in a few ms, but a metadata filter costs
        # tens of ms at 10,000 chunks. So ask without the filter first: if every hit may be seen by this
        # user, they are also the best hits among what the user may see; otherwise ask again, filtered.
        rows = await self._query(vector, n, where=None)
        if any(hit.metadata.get("audience", PUBLIC) not in audiences for hit in rows):
            where: Mapping[str, Any] = (
                {"audience": audiences[0]} if len(audiences) == 1 else {"audience": {"$in": list(audiences)}}
            )
            rows = await self._query(vector, n, where=where)
        return rows

    async def _query(self, vector: Sequence[float], k: int, *, where: Mapping[str, Any] | None) -> list[Hit]:
        """The `k` nearest chunks."""
        result = await self._call(
            lambda: self._collection.query(
                query_embeddings=[vector],
                n_results=k,
                where=where,
                include=["documents", "metadatas", "distances"],
            )
        )
        ids = (result.get("ids") or [[]])[0]
        documents = (result.get("documents") or [[]])[0]
        metadatas = (result.get("metadatas") or [[]])[0]
        distances = (result.get("distances") or [[]])[0]
        return [
            # The collection's space is cosine: distance = 1 - similarity.
            Hit(str(chunk_id), text or "", meta or {}, 1.0 - float(distance))
            for chunk_id, text, meta, distance in zip(ids, documents, metadatas, distances, strict=False)
        ]

    async def hits(self, ids: Sequence[str], vector: Sequence[float]) -> list[Hit]:
        """The chunks `ids` with their cosine to `vector`, from their stored vectors: for chunks BM25 found
        beyond the embedding's candidates, so the threshold applies to them as to every other passage."""
        result = await self._call(
            lambda: self._collection.get(ids=list(ids), include=["documents", "metadatas", "embeddings"])
        )
        norm = math.sqrt(sum(x * x for x in vector)) or 1.0
        rows: list[Hit] = []
        for chunk_id, text, meta, embedding in zip(
            result["ids"], result["documents"] or [], result["metadatas"] or [], result["embeddings"], strict=False
        ):
            values = [float(x) for x in embedding]
            cosine = sum(a * b for a, b in zip(vector, values, strict=True)) / (
                norm * (math.sqrt(sum(x * x for x in values)) or 1.0)
            )
            rows.append(Hit(str(chunk_id), text or "", meta or {}, cosine))
        return rows

    async def _call(self, fn: Any) -> Any:
        try:
            return await asyncio.to_thread(fn)
        except Exception as exc:
            raise KnowledgeStoreError(
                f"chromadb failed on collection {self.name}: {type(exc).__name__}: {exc}"
            ) from exc


class KnowledgeBase:
    """The process's chromadb client and the collections opened through it."""

    def __init__(self, client: Any, *, embedder: Embedder, location: str, lexical_path: Path | None = None) -> None:
        self._client = client
        #: where each collection's BM25 index is saved (None: rebuilt in memory by each process)
        self.lexical_path = lexical_path
        self._embedder = embedder
        self._ef = RelaybotEmbeddingFunction(embedder)
        self._collections: dict[str, KnowledgeCollection] = {}
        self._lock = asyncio.Lock()
        self.location = location

    @classmethod
    async def open(
        cls,
        *,
        embedder: Embedder,
        path: Path | None = None,
        url: str | None = None,
        lexical_path: Path | None = None,
    ) -> KnowledgeBase:
        """A Chroma server at `url` (production), else a persistent store under `path`. The BM25 indexes are
        saved under `lexical_path`, by default `lexical` next to the embedded store's folder."""
        if url:
            base = await cls._open_http(url, embedder)
        elif path is None:
            raise KnowledgeStoreError("KnowledgeBase.open needs a path or a CHROMA_URL")
        else:
            base = await cls._open_persistent(path, embedder)
            lexical_path = lexical_path or path.parent / "lexical"
        base.lexical_path = lexical_path
        return base

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
                self._collections[name] = KnowledgeCollection(
                    raw,
                    self._embedder,
                    lexical_dir=self.lexical_path,
                    reopen=lambda: self._client.get_collection(name=name, embedding_function=self._ef),
                )
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
