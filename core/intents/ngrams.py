"""Character n-grams of a message, hashed into a fixed-size unit vector: the surface form the embedding blurs.

The local classifier's model (core.intents.local) reads them next to the message's embedding. A sentence
embedding of a short message ("flat tire", "refund pls", "cant login") rests on one or two words, and a typo
or a word the embedding model rarely saw moves it far; the shared letters of "refund" in "refund pls" and in an
intent's example "how do I get a refund" do not move. Words are lower-cased and padded with spaces, so n-grams at
a word's start and end are their own features. Hashing (crc32, the same in every process, unlike `hash`) keeps
the vector's size fixed whatever the vocabulary. 2**12 buckets gave the same sub-sampled accuracy on the dev bots
as 2**14 (collisions among a bot's few thousand n-grams cost nothing measurable) at a quarter of the model's size.
"""

from __future__ import annotations

import re
import zlib
from typing import Any

import numpy as np

__all__ = ["NGRAM_BUCKETS", "NGRAM_SIZES", "ngram_vectors"]

#: the n-gram lengths counted
NGRAM_SIZES = (3, 4, 5)
#: the hashed vector's size
NGRAM_BUCKETS = 2**12
_WORD = re.compile(r"[^\W_]+")


def ngram_vectors(
    texts: list[str], *, sizes: tuple[int, ...] = NGRAM_SIZES, buckets: int = NGRAM_BUCKETS
) -> np.ndarray[Any, np.dtype[np.float32]]:
    """One row per text: the counts of its words' character n-grams in `buckets` hashed columns, each row scaled
    to unit length (a text with no letters or digits gets a zero row)."""
    out = np.zeros((len(texts), buckets), dtype=np.float32)
    for row, text in enumerate(texts):
        for word in _WORD.findall(text.lower()):
            padded = f" {word} "
            for size in sizes:
                for start in range(max(1, len(padded) - size + 1)):
                    gram = padded[start : start + size]
                    out[row, zlib.crc32(gram.encode()) % buckets] += 1.0
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.clip(norms, 1e-12, None)
