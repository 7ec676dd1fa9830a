"""Per-user rate limits."""

from core.ratelimit.base import RateDecision, RateLimiter, RateLimits

__all__ = ["RateDecision", "RateLimiter", "RateLimits"]
