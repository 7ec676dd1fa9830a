"""Circuit breakers per provider + model: the seam, with memory and Redis backends."""

from core.llm.breaker.base import BreakerPolicy, CircuitBreaker

__all__ = ["BreakerPolicy", "CircuitBreaker"]
