"""What a chain run reports: the reply, who produced it, and every attempt on the way."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from core.frozen import fast_init
from core.llm.base import ToolCall, Usage

AttemptOutcome = Literal["ok", "failed", "interrupted", "skipped"]
ChainOutcome = Literal["answered", "interrupted", "static", "cached"]

NO_USAGE = Usage(tokens_in=0, tokens_out=0)


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class Attempt:
    """One try of one step.

    `outcome`: "ok" (answered), "failed" (nothing reached the user), "interrupted" (the stream broke
    after text was shown), "skipped" (circuit open, nothing sent). `error` is the error class name
    (`ProviderRateLimited`, `ProviderTimeout`, ..., or `CircuitOpen`).
    """

    provider: str
    model: str
    outcome: AttemptOutcome
    latency_ms: float = 0.0
    error: str | None = None
    status: int | None = None
    retry_after: float | None = None
    detail: str | None = None

    def to_log(self) -> dict[str, object]:
        entry: dict[str, object] = {
            "provider": self.provider,
            "model": self.model,
            "outcome": self.outcome,
            "latency_ms": round(self.latency_ms, 2),
        }
        if self.error is not None:
            entry["error"] = self.error
        if self.status is not None:
            entry["status"] = self.status
        if self.retry_after is not None:
            entry["retry_after"] = self.retry_after
        return entry


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class ChainResult:
    """The reply text and how it came about.

    `outcome`: "answered" (a step answered in full), "interrupted" (a stream broke after text was
    shown: the text is what was shown plus a notice), "static" (every step failed: the bot's static
    message), "cached" (from the response cache). `fallback_used` is true unless the chain's first
    step (or the cache) gave a complete answer.
    """

    text: str
    outcome: ChainOutcome
    fallback_used: bool
    provider: str | None
    model: str | None
    attempts: tuple[Attempt, ...]
    usage: Usage
    latency_ms: float
    ttft_ms: float | None = None
    error: str | None = None
    #: the model stopped to call these tools (run them and ask again: `Chain.run_with_tools`)
    tool_calls: tuple[ToolCall, ...] = ()
    #: how many tool calls ran on the way to this answer (`Chain.run_with_tools`)
    tools_run: int = 0

    @property
    def cache_hit(self) -> bool:
        return self.outcome == "cached"


def add_usage(total: Usage, more: Usage) -> Usage:
    return Usage(
        tokens_in=total.tokens_in + more.tokens_in,
        tokens_out=total.tokens_out + more.tokens_out,
        estimated=total.estimated or more.estimated,
    )
