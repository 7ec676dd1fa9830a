"""The KnowledgeBase seam over chromadb: one collection per bot and knowledge set.

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
from typing import Any, Literal
from urllib.parse import urlsplit

import structlog

from core.knowledge.answerability import AnswerRule, Evidence, coverage, unknown_share
from core.knowledge.chroma_ef import RelaybotEmbeddingFunction
from core.knowledge.embeddings import Embedder
from core.knowledge.errors import KnowledgeStoreError
from core.knowledge.lexical import LexicalIndex, LexicalRow
from core.knowledge.passage import Passage
from core.knowledge.relevance import unknown_names, vocabulary

_log = structlog.get_logger("relaybot.knowledge")

SET_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
DEFAULT_SET = "default"
#: everyone may see a chunk with this audience; otherwise the audience is a user id (or "tenant:<id>")
PUBLIC = "*"
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
#: the revision of a collection written before revisions existed (its BM25 index is built on first use)
UNVERSIONED = "0"

Retrieval = Literal["hybrid", "dense", "lexical"]


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
    """One bot's knowledge set: add and replace a source's chunks, and search them."""

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

    async def search(
        self,
        query: str,
        *,
        k: int = 4,
        min_score: float = 0.0,
        coverage_weight: float = 0.0,
        min_evidence: float = -1.0,
        unknown_weight: float = 0.0,
        audiences: Sequence[str] = (PUBLIC,),
        reject_unknown_names: bool = False,
        retrieval: Retrieval = "hybrid",
    ) -> list[Passage]:
        """The `k` best chunks that one of `audiences` may see, when they answer the question by the rule of
        core.knowledge.answerability: some chunk has a cosine similarity to the query of `min_score` or more
        (the others may be up to COMPANION_MARGIN below it) and that cosine plus `coverage_weight` times the
        share of the question's terms the passages contain, less `unknown_weight` times the share no chunk
        contains, reaches `min_evidence`; else nothing. With the defaults of the last three, the cosine
        threshold alone decides.

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
        if reject_unknown_names and unknown_names(query, await self.vocabulary()):
            return None
        n = max(CANDIDATES, 4 * k)
        (vector,) = await self._embedder.embed([query])
        dense = await self._dense(vector, n, audiences)
        index = await self.lexical_index()
        lexical: list[str] = []
        if retrieval != "dense":
            lexical = [chunk_id for chunk_id, _ in index.search(query, n, audiences)]
        rows = {row[0]: row for row in dense}
        missing = [chunk_id for chunk_id in lexical if chunk_id not in rows]
        if missing:
            rows.update((row[0], row) for row in await self._rows(missing, vector))
        ranked: list[tuple[list[str], float]] = {
            "hybrid": [([row[0] for row in dense], 1.0), (lexical, LEXICAL_WEIGHT)],
            "dense": [([row[0] for row in dense], 1.0)],
            "lexical": [(lexical, 1.0)],
        }[retrieval]
        fused: dict[str, float] = {}
        for ranking, weight in ranked:
            for rank, chunk_id in enumerate(ranking, start=1):
                fused[chunk_id] = fused.get(chunk_id, 0.0) + weight / (RRF_K + rank)
        if not fused:
            return None
        # Ties (one retriever's r-th against the other's r-th) go to the closer chunk.
        order = sorted(fused, key=lambda chunk_id: (-fused[chunk_id], -rows[chunk_id][3]))
        best = max(rows[chunk_id][3] for chunk_id in order)
        # Once a candidate reaches `min_score`, a passage slightly below it may come along (COMPANION_MARGIN):
        # the overview of a document ("Tasklane has four plans: ...") often scores just under a question's own
        # best section.
        floor = min(min_score, best) - COMPANION_MARGIN
        passages: list[Passage] = []
        for chunk_id in order:
            _, text, meta, score = rows[chunk_id]
            if score < floor:
                continue
            passages.append(
                Passage(
                    text=text,
                    source=str(meta.get("source", "")),
                    title=str(meta.get("title", "")),
                    heading=str(meta.get("heading", "")),
                    url=str(meta.get("url", "")),
                    score=round(score, 4),
                )
            )
            if len(passages) == k:
                break
        shared = coverage(query, (f"{p.title}\n{p.heading}\n{p.text}" for p in passages), index.idf)
        unknown = unknown_share(query, index.idf, index.holds)
        return passages, Evidence(cosine=best, coverage=shared, unknown=unknown)

    async def _dense(
        self, vector: Sequence[float], n: int, audiences: Sequence[str]
    ) -> list[tuple[str, str, Mapping[str, Any], float]]:
        # chromadb answers an unfiltered query from its HNSW index in a few ms, but a metadata filter costs
        # tens of ms at 10,000 chunks. So ask without the filter first: if every hit may be seen by this
        # user, they are also the best hits among what the user may see; otherwise ask again, filtered.
        rows = await self._query(vector, n, where=None)
        if any(meta.get("audience", PUBLIC) not in audiences for _, _, meta, _ in rows):
            where: Mapping[str, Any] = (
                {"audience": audiences[0]} if len(audiences) == 1 else {"audience": {"$in": list(audiences)}}
            )
            rows = await self._query(vector, n, where=where)
        return rows

    async def _query(
        self, vector: Sequence[float], k: int, *, where: Mapping[str, Any] | None
    ) -> list[tuple[str, str, Mapping[str, Any], float]]:
        """(id, text, metadata, cosine) of the `k` nearest chunks."""
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
            (str(chunk_id), text or "", meta or {}, 1.0 - float(distance))
            for chunk_id, text, meta, distance in zip(ids, documents, metadatas, distances, strict=False)
        ]

    async def _rows(
        self, ids: Sequence[str], vector: Sequence[float]
    ) -> list[tuple[str, str, Mapping[str, Any], float]]:
        """(id, text, metadata, cosine) of chunks BM25 found beyond the embedding's candidates: their cosine
        comes from their stored vectors, so the threshold applies to them as to every other passage."""
        result = await self._call(
            lambda: self._collection.get(ids=list(ids), include=["documents", "metadatas", "embeddings"])
        )
        norm = math.sqrt(sum(x * x for x in vector)) or 1.0
        rows = []
        for chunk_id, text, meta, embedding in zip(
            result["ids"], result["documents"] or [], result["metadatas"] or [], result["embeddings"], strict=False
        ):
            values = [float(x) for x in embedding]
            cosine = sum(a * b for a, b in zip(vector, values, strict=True)) / (
                norm * (math.sqrt(sum(x * x for x in values)) or 1.0)
            )
            rows.append((str(chunk_id), text or "", meta or {}, cosine))
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
