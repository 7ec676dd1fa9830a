"""relaybot's embedder as a chromadb embedding function, registered so a reopened collection rebuilds it.

relaybot passes its own embeddings to every add and query, so chromadb calls this only if someone queries a
collection by text. It exists so that chromadb never falls back to its default embedding function, which
downloads a model at run time. Built from a stored config it loads the packaged ONNX model on first use.
"""

from __future__ import annotations

from typing import Any

from chromadb.api.types import Documents, EmbeddingFunction, Embeddings
from chromadb.utils.embedding_functions import register_embedding_function

from core.knowledge.embeddings import Embedder, OnnxMiniLMEmbedder, RecentTextsEmbedder

NAME = "relaybot-minilm-int8"


@register_embedding_function
class RelaybotEmbeddingFunction(EmbeddingFunction[Documents]):
    def __init__(self, embedder: Embedder | None = None) -> None:
        self._embedder = embedder

    def __call__(self, input: Documents) -> Embeddings:
        embedder = self._embedder
        if isinstance(embedder, RecentTextsEmbedder):
            embedder = embedder.inner
        if not isinstance(embedder, OnnxMiniLMEmbedder):
            # Lazily, and only on this rarely used path: relaybot itself always passes embeddings.
            embedder = self._embedder = OnnxMiniLMEmbedder.load()
        import numpy as np

        return [np.asarray(v, dtype=np.float32) for v in embedder.embed_sync(list(input))]

    @staticmethod
    def name() -> str:
        return NAME

    def get_config(self) -> dict[str, Any]:
        return {"model": "all-MiniLM-L6-v2", "quantization": "int8"}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> RelaybotEmbeddingFunction:
        # Cheap on purpose: chromadb calls this on every get_or_create to check the config.
        return RelaybotEmbeddingFunction()

    def default_space(self) -> Any:
        return "cosine"

    def supported_spaces(self) -> list[Any]:
        return ["cosine"]

    def max_tokens(self) -> int:
        return 256
