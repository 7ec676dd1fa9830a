"""BM25 over a collection's chunks: the lexical half of hybrid retrieval.

The embedding ranks a question by its gist and weighs a rare term or a number ("Pro plan", "25 GB",
"iOS 16") little; BM25 ranks by exactly those words. Each chunk is indexed with its document title and
section heading, like the embedded text, so "annual refund" finds the chunk under "Refunds - Annual plans".

The index is derived data: built from the chroma collection's chunks and saved under
`<lexical dir>/<collection>/<revision>/` with a `current` file naming the revision in use (replaced
atomically, so a reader never sees half an index). The revision is the one the collection carries in its
metadata (a new one on every write), which is how a reader knows the files are in step with chromadb.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import bm25s
import numpy as np

from core.knowledge.errors import KnowledgeStoreError
from core.knowledge.terms import query_terms, tokens

__all__ = ["LexicalIndex", "LexicalRow", "tokens"]

#: the saved files' format, and the version of `core.knowledge.terms.tokens`: a change to either must bump
#: it (indexes saved before are then rebuilt)
_FORMAT = 6


@dataclass(frozen=True, slots=True)
class LexicalRow:
    """One chunk as the index needs it: its chroma id, who may see it, and the text to index."""

    id: str
    audience: str
    text: str


class LexicalIndex:
    """A BM25 index over one collection's chunks, at one revision of that collection."""

    def __init__(self, revision: str, ids: list[str], audiences: list[str], model: bm25s.BM25 | None) -> None:
        self.revision = revision
        self.ids = ids
        self._audiences = np.array(audiences, dtype=object)
        self._model = model  # None when the collection is empty
        # How many chunks hold each term (bm25s keeps its scores by term: a column per term, one entry per
        # chunk holding it), for the answer decision's weights (core.knowledge.answerability).
        self._document_frequency: dict[str, int] = {}
        if model is not None:
            pointers = model.scores["indptr"]
            self._document_frequency = {
                term: int(pointers[column + 1] - pointers[column])
                for term, column in model.vocab_dict.items()
                if column + 1 < len(pointers)  # bm25s adds "" to the vocabulary, without a column
            }

    @classmethod
    def build(cls, revision: str, rows: Sequence[LexicalRow]) -> LexicalIndex:
        ids = [row.id for row in rows]
        audiences = [row.audience for row in rows]
        if not rows:
            return cls(revision, ids, audiences, None)
        model = bm25s.BM25()
        # An empty token list (a chunk of stop words) would be dropped by bm25s and shift the row numbers.
        model.index([tokens(row.text) or ["\x00"] for row in rows], show_progress=False)
        return cls(revision, ids, audiences, model)

    def __len__(self) -> int:
        return len(self.ids)

    def idf(self, term: str) -> float:
        """BM25's inverse document frequency of a term (of `tokens`): high for a term few chunks hold, and
        highest for one none holds."""
        n = len(self.ids)
        df = self._document_frequency.get(term, 0)
        return math.log(1.0 + (n - df + 0.5) / (df + 0.5))

    def holds(self, term: str) -> bool:
        """Whether any chunk holds the term (of `tokens`)."""
        return term in self._document_frequency

    def search(self, query: str, k: int, audiences: Sequence[str]) -> list[tuple[str, float]]:
        """The ids of the `k` best chunks for `query` that one of `audiences` may see, with their BM25
        scores; chunks sharing no term with the query are left out."""
        terms = [t for t in query_terms(query) if self._model is not None and t in self._model.vocab_dict]
        if self._model is None or not terms:
            return []
        mask = np.isin(self._audiences, list(audiences)).astype(np.float32)
        limit = min(k, len(self.ids))
        docs, scores = self._model.retrieve(
            [terms], k=limit, show_progress=False, weight_mask=mask, n_threads=0, backend_selection="numpy"
        )
        return [(self.ids[int(d)], float(s)) for d, s in zip(docs[0], scores[0], strict=True) if s > 0]

    # ----------------------------------------------------------------------------------------------
    # Persistence

    def save(self, directory: Path) -> None:
        """Write this revision under `directory` and make it the current one; older revisions go."""
        target = directory / self.revision
        staging = directory / f".{self.revision}.{uuid.uuid4().hex}.tmp"
        try:
            staging.mkdir(parents=True, exist_ok=False)
            if self._model is not None:
                self._model.save(str(staging / "bm25"))
            (staging / "rows.json").write_text(
                json.dumps(
                    {
                        "format": _FORMAT,
                        "revision": self.revision,
                        "ids": self.ids,
                        "audiences": self._audiences.tolist(),
                    }
                )
            )
            try:
                staging.rename(target)
            except OSError:
                # Another process saved the same revision first (a revision's index is the same whoever
                # builds it): keep theirs.
                shutil.rmtree(staging, ignore_errors=True)
                if not (target / "rows.json").is_file():
                    raise
            pointer = directory / f".current.{uuid.uuid4().hex}.tmp"
            pointer.write_text(self.revision)
            os.replace(pointer, directory / "current")  # atomic: readers see the old or the new revision
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise KnowledgeStoreError(
                f"cannot write the BM25 index under {directory}: {exc}; fix: make the data directory writable "
                "(the index is rebuilt from chromadb, so deleting the folder is always safe)"
            ) from exc
        for old in directory.iterdir():
            if old.name not in (self.revision, "current") and not old.name.startswith("."):
                shutil.rmtree(old, ignore_errors=True)

    @classmethod
    def load(cls, directory: Path, revision: str) -> LexicalIndex | None:
        """The saved index of `revision`, or None when there is none (or it is unreadable: it is rebuilt)."""
        try:
            if (directory / "current").read_text().strip() != revision:
                return None
            meta = json.loads((directory / revision / "rows.json").read_text())
            if meta.get("format") != _FORMAT or meta.get("revision") != revision:
                return None
            model = None
            if meta["ids"]:
                model = bm25s.BM25.load(str(directory / revision / "bm25"))
            return cls(revision, list(meta["ids"]), list(meta["audiences"]), model)
        except (OSError, ValueError, KeyError):
            return None
