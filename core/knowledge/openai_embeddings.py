"""OpenAI embeddings (or any OpenAI-compatible server), for deployments that configure them.

Optional: the offline MiniLM embedder is the default. Vectors are L2-normalized here because cosine search and
the intent classifier assume unit vectors whatever the server returns.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import openai

from core.knowledge.errors import KnowledgeError

# text-embedding-3-* dimensions; other models report theirs on the first call
_KNOWN_DIMENSIONS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}


class OpenAIEmbedder:
    def __init__(self, client: openai.AsyncOpenAI, *, model: str = "text-embedding-3-small", batch_size: int = 256):
        self._client = client
        self._model = model
        self._batch_size = batch_size
        self.dimensions = _KNOWN_DIMENSIONS.get(model, 0)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        out: list[list[float]] = []
        for start in range(0, len(texts), self._batch_size):
            batch = [t if t.strip() else " " for t in texts[start : start + self._batch_size]]
            try:
                response = await self._client.embeddings.create(model=self._model, input=batch)
            except openai.OpenAIError as exc:
                raise KnowledgeError(f"OpenAI embeddings ({self._model}) failed: {exc}") from exc
            for item in sorted(response.data, key=lambda d: d.index):
                norm = math.sqrt(sum(x * x for x in item.embedding)) or 1.0
                out.append([x / norm for x in item.embedding])
        if out and not self.dimensions:
            self.dimensions = len(out[0])
        return out

    async def aclose(self) -> None:
        await self._client.close()
