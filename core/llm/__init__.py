"""The LLM seam: providers behind one streaming Protocol."""

from core.llm.base import ChatMessage, LLMProvider, LLMRequest, StreamChunk, Usage

__all__ = ["ChatMessage", "LLMProvider", "LLMRequest", "StreamChunk", "Usage"]
