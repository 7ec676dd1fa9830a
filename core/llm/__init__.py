"""The LLM seam: providers behind one streaming Protocol, tried in order by a fallback chain.

    base.py       ChatMessage, LLMRequest, StreamChunk, Usage, the LLMProvider Protocol
    openai.py     OpenAI and any OpenAI-compatible server (AsyncOpenAI, chat completions, streamed)
    anthropic.py  Anthropic (AsyncAnthropic, messages, streamed)
    offline.py    no model configured: deterministic, and says so
    status.py     HTTP status / error type / Retry-After → core.errors.ProviderError subclasses
    chain.py      the fallback chain: deadlines, budget, retries, breaker, cache, cut streams
    result.py     ChainResult and Attempt, what a run reports to the turn log
    breaker/      circuit breakers per provider + model (base, memory, redis)
    cache/        the optional response cache (base, memory, redis)
    factory.py    a bot's chain from Settings + [models]; owns the SDK clients

Only `base` is imported here, so importing a type does not load the SDKs.
"""

from core.llm.base import ChatMessage, LLMProvider, LLMRequest, StreamChunk, Usage

__all__ = ["ChatMessage", "LLMProvider", "LLMRequest", "StreamChunk", "Usage"]
