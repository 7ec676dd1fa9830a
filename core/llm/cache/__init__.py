"""The optional LLM response cache: the seam, with memory and Redis backends."""

from core.llm.cache.base import SHARED_SCOPE, CachedAnswer, ResponseCache, cache_key

__all__ = ["SHARED_SCOPE", "CachedAnswer", "ResponseCache", "cache_key"]
