"""Offline token estimates: no tokenizer download at run time.

A rough count in the way BPE tokenizers split text: about 1.3 tokens per word, one per
punctuation mark, and extra for long words. It budgets the history window and stands in for
usage a provider does not report; it has not been calibrated against a real tokenizer.
"""

from __future__ import annotations

import functools
import re

_PIECES = re.compile(r"\w+|[^\w\s]", re.UNICODE)


@functools.lru_cache(maxsize=65536)
def estimate_tokens(text: str) -> int:
    # Cached: every turn re-estimates the same history window (about 40 calls per turn).
    pieces = _PIECES.findall(text)
    words = sum(1 for p in pieces if p[0].isalnum() or p[0] == "_")
    # Long words (and unspaced runs such as CJK text) split into several tokens.
    long_extra = sum(len(p) // 8 for p in pieces if len(p) > 8)
    return max(1, round(words * 1.3) + (len(pieces) - words) + long_extra) if text else 0
