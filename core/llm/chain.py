"""The fallback chain: try each step in order until one answers, within a latency budget.

Rules, each for a reason:
- A step has two deadlines: the first token (a hung provider is found out fast) and the whole
  answer. Both, and every retry wait, are clipped to the chain's latency budget, so a reply never
  takes much longer than the budget however many steps fail.
- A step is retried only on errors that can heal (429, 5xx, timeouts, a dropped connection), after
  the server's Retry-After or a short backoff, and only if that wait is within `max_retry_wait`
  and the budget: a server asking for 30 s means "use the next step", not "make the user wait".
  400/401 and unreadable answers move on at once.
- Fall back freely until text reaches the user. Once a delta has been shown, another provider's
  answer must not start on top of it: the chain keeps what was shown, appends a short notice, and
  logs it. Without a delta sink nothing was shown, so a broken stream is discarded and the chain
  goes on as if it had failed before the first token.
- A step whose circuit breaker is open is skipped without a request. Breaker and cache stores
  failing (Redis down) never fail the turn: the chain carries on without them.
- Every step failed, or the budget ran out: the bot's static message.
- Function calling (`run_with_tools`): a step may answer with tool calls instead of text; the
  tools run and the chain is asked again with their results, for at most `max_rounds` rounds, each
  round a full chain run (so a provider failing mid-loop falls back like any other). The last
  round forbids further calls so the model must answer. Requests with tools are never cached: the
  tools may act (a ticket, a handoff), and a cached answer would skip that.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import structlog

from core.bots import DEFAULT_STATIC_FALLBACK, BotConfig, Models
from core.errors import ProviderBadResponse, ProviderError, ProviderRejected, ProviderTimeout, StoreError
from core.llm.base import IN_PROCESS, ChatMessage, LLMProvider, LLMRequest, ToolCall, Usage, estimated_usage
from core.llm.breaker import BreakerPolicy, CircuitBreaker
from core.llm.cache import SHARED_SCOPE, CachedAnswer, ResponseCache, cache_key
from core.llm.result import NO_USAGE, Attempt, ChainResult, add_usage

#: what an in-process provider's attempt runs under instead of a deadline (`core.llm.base.IN_PROCESS`)
_NO_DEADLINE: contextlib.nullcontext[None] = contextlib.nullcontext()

__all__ = [
    "DEFAULT_INTERRUPTED_NOTICE",
    "Chain",
    "ChainPolicy",
    "ChainSource",
    "DeltaSink",
    "Step",
    "StepPolicy",
    "ToolRunner",
]

DeltaSink = Callable[[str], Awaitable[None]]
#: runs one tool call and gives the text the model sees as its result; never raises
ToolRunner = Callable[[ToolCall], Awaitable[str]]
#: how the generate stage finds a bot's chain (`ChainFactory.for_bot`)
ChainSource = Callable[[BotConfig], "Chain"]

DEFAULT_INTERRUPTED_NOTICE: str = Models().interrupted_notice


@dataclass(frozen=True, slots=True, kw_only=True)
class StepPolicy:
    first_token_timeout: float = 10.0
    total_timeout: float = 60.0
    retries: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    provider: LLMProvider
    policy: StepPolicy = field(default_factory=StepPolicy)
    #: the circuit breaker's key (provider + model + endpoint); None: never skipped (offline)
    breaker_key: str | None = None

    @property
    def label(self) -> str:
        return f"{self.provider.name}:{self.provider.model}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainPolicy:
    latency_budget: float = 60.0
    max_retry_wait: float = 5.0
    #: first wait before a retry when the server did not say (doubles each time)
    retry_backoff: float = 0.25
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    #: 0 turns the response cache off for this chain
    cache_ttl: float = 0.0
    cache_shared: bool = False


@dataclass(slots=True)
class _AttemptRun:
    attempt: Attempt
    text: str = ""
    shown: bool = False
    usage: Usage | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    first_token_at: float | None = None
    error: ProviderError | None = None


@dataclass(slots=True)
class _Run:
    started: float
    budget_end: float
    attempts: list[Attempt] = field(default_factory=list)
    usage: Usage = NO_USAGE
    last_error: ProviderError | None = None


class Chain:
    """One bot's steps, first to last, then its static message. Built by `core.llm.factory`."""

    def __init__(
        self,
        steps: Sequence[Step],
        *,
        policy: ChainPolicy | None = None,
        bot: str = "",
        static_fallback: str = DEFAULT_STATIC_FALLBACK,
        interrupted_notice: str = DEFAULT_INTERRUPTED_NOTICE,
        breaker: CircuitBreaker | None = None,
        cache: ResponseCache | None = None,
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self.steps = tuple(steps)
        self.policy = policy or ChainPolicy()
        self._bot = bot
        self._static = static_fallback
        self._notice = interrupted_notice
        self._breaker = breaker
        self._cache = cache if self.policy.cache_ttl > 0 else None
        self._log = logger or structlog.get_logger("relaybot.llm")

    async def run(self, request: LLMRequest, *, on_delta: DeltaSink | None = None, user_key: str) -> ChainResult:
        """The reply for `request`; never raises for a provider failure.

        `on_delta` receives text as it streams (only where the channel can show it); `user_key`
        scopes the response cache to one user unless the bot shares it.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        run = _Run(started=started, budget_end=started + self.policy.latency_budget)
        key = self._cache_key(request, user_key)
        if key is not None and (hit := await self._cache_get(key)) is not None:
            return ChainResult(
                text=hit.text,
                outcome="cached",
                fallback_used=False,
                provider=hit.provider,
                model=hit.model,
                attempts=(),
                usage=NO_USAGE,
                latency_ms=(loop.time() - started) * 1000,
            )
        for index, step in enumerate(self.steps):
            result = await self._run_step(index, step, request, on_delta, run)
            if result is not None:
                if (
                    key is not None
                    and result.outcome == "answered"
                    and result.provider is not None
                    and not result.tool_calls
                ):
                    await self._cache_put(key, result)
                return result
            if loop.time() >= run.budget_end:
                break
        await self._log.aerror(
            "llm_chain_exhausted",
            bot=self._bot,
            steps=[s.label for s in self.steps],
            attempts=[a.to_log() for a in run.attempts],
            budget_spent=loop.time() >= run.budget_end,
        )
        return ChainResult(
            text=self._static,
            outcome="static",
            fallback_used=True,
            provider="static",
            model=None,
            attempts=tuple(run.attempts),
            usage=run.usage,
            latency_ms=(loop.time() - started) * 1000,
            error=_describe(run.last_error) if run.last_error else _why_nothing_ran(run),
        )

    async def _run_step(
        self, index: int, step: Step, request: LLMRequest, on_delta: DeltaSink | None, run: _Run
    ) -> ChainResult | None:
        """Try one step (with its retries); a result ends the chain, None moves to the next step."""
        loop = asyncio.get_running_loop()
        tries = 0
        # Without a breaker (a local step, or none configured) there is nothing to ask or tell.
        breaker, key = self._breaker, step.breaker_key
        guard = (breaker, key) if breaker is not None and key is not None else None
        while loop.time() < run.budget_end:
            if guard is not None and not await self._allow(*guard, step):
                run.attempts.append(
                    Attempt(
                        provider=step.provider.name, model=step.provider.model, outcome="skipped", error="CircuitOpen"
                    )
                )
                await self._log.ainfo("llm_step_skipped", bot=self._bot, step=step.label, reason="circuit open")
                return None
            attempt = await self._attempt(step, request, on_delta, run.budget_end)
            run.attempts.append(attempt.attempt)
            if attempt.usage is not None:
                run.usage = add_usage(run.usage, attempt.usage)
            if attempt.error is None:
                if guard is not None:
                    await self._record(*guard, step, None)
                return self._result(index, step, attempt, run, outcome="answered", text=attempt.text)
            run.last_error = attempt.error
            if guard is not None:
                await self._record(*guard, step, attempt.error)
            if attempt.shown:
                # Text is on the user's screen: finish this answer deliberately, never start another.
                if on_delta is not None:
                    await on_delta(f"\n\n{self._notice}")
                await self._log.awarning(
                    "llm_stream_interrupted",
                    bot=self._bot,
                    step=step.label,
                    error=type(attempt.error).__name__,
                    detail=str(attempt.error),
                    shown_chars=len(attempt.text),
                )
                text = f"{attempt.text.rstrip()}\n\n{self._notice}"
                return self._result(index, step, attempt, run, outcome="interrupted", text=text)
            await self._log.awarning(
                "llm_attempt_failed",
                bot=self._bot,
                step=step.label,
                error=type(attempt.error).__name__,
                status=attempt.error.status,
                detail=str(attempt.error),
            )
            tries += 1
            wait = self._retry_wait(attempt.error, tries, step.policy)
            if wait is None or loop.time() + wait >= run.budget_end:
                return None
            await asyncio.sleep(wait)
        return None

    def _result(
        self,
        index: int,
        step: Step,
        attempt: _AttemptRun,
        run: _Run,
        *,
        outcome: Literal["answered", "interrupted"],
        text: str,
    ) -> ChainResult:
        loop = asyncio.get_running_loop()
        answered = outcome == "answered"
        return ChainResult(
            text=text,
            outcome=outcome,
            fallback_used=index > 0 or not answered,
            provider=step.provider.name,
            model=step.provider.model,
            attempts=tuple(run.attempts),
            usage=run.usage,
            latency_ms=(loop.time() - run.started) * 1000,
            ttft_ms=(attempt.first_token_at - run.started) * 1000 if attempt.first_token_at else None,
            error=None if answered or attempt.error is None else _describe(attempt.error),
            tool_calls=attempt.tool_calls if answered else (),
        )

    async def _attempt(
        self, step: Step, request: LLMRequest, on_delta: DeltaSink | None, budget_end: float
    ) -> _AttemptRun:
        loop = asyncio.get_running_loop()
        start = loop.time()
        first_deadline = min(start + step.policy.first_token_timeout, budget_end)
        end_deadline = min(start + step.policy.total_timeout, budget_end)
        parts: list[str] = []
        run = _AttemptRun(attempt=Attempt(provider=step.provider.name, model=step.provider.model, outcome="ok"))
        stream = step.provider.stream(request)
        try:
            # One deadline for the whole stream, moved once the first words arrive (a timeout
            # per chunk cost as much CPU as a fast provider's chunks themselves).
            try:
                in_process = getattr(step.provider, IN_PROCESS, False)
                # An in-process answer exists whole at once: no deadline can interrupt it, and its
                # pieces would only race the final reply that carries all of it.
                shows = on_delta if not in_process else None
                async with _NO_DEADLINE if in_process else asyncio.timeout_at(first_deadline) as deadline:
                    while True:
                        # Awaited here, not in a helper: a coroutine per chunk cost more than a
                        # fast provider's chunk.
                        try:
                            chunk = await anext(stream)
                        except StopAsyncIteration:
                            break
                        except ProviderError:
                            raise
                        except Exception as exc:  # not CancelledError: a timeout must reach the deadline
                            raise await self._contract_broken(step, exc) from exc
                        if chunk.text:
                            if run.first_token_at is None:
                                run.first_token_at = loop.time()
                                if deadline is not None:
                                    deadline.reschedule(end_deadline)
                            parts.append(chunk.text)
                            if shows is not None:
                                await shows(chunk.text)
                                run.shown = True
                        if chunk.usage is not None:
                            run.usage = chunk.usage
                        if chunk.tool_calls:
                            run.tool_calls = chunk.tool_calls
            except TimeoutError as exc:
                if parts:
                    why = f"no end of the answer within {self._limit(start, step.policy.total_timeout, budget_end)}"
                else:
                    why = f"no first token within {self._limit(start, step.policy.first_token_timeout, budget_end)}"
                raise ProviderTimeout(f"{step.label}: {why}", provider=step.provider.name) from exc
        except ProviderError as exc:
            run.error = exc
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()  # releases the HTTP response if we stopped reading early
        run.text = "".join(parts)
        if run.error is None:
            run.text = run.text.strip()
            if not run.text and not run.tool_calls:
                run.error = ProviderBadResponse(f"{step.label} gave an empty answer", provider=step.provider.name)
            elif run.usage is None:
                run.usage = estimated_usage(request, run.text)
        if run.error is not None:
            # Tokens generated before a failure are still spent; count them, estimated.
            run.usage = estimated_usage(request, run.text) if parts else None
        latency_ms = (loop.time() - start) * 1000
        if run.error is None:
            run.attempt = Attempt(
                provider=step.provider.name, model=step.provider.model, outcome="ok", latency_ms=latency_ms
            )
        else:
            run.attempt = Attempt(
                provider=step.provider.name,
                model=step.provider.model,
                outcome="interrupted" if run.shown else "failed",
                latency_ms=latency_ms,
                error=type(run.error).__name__,
                status=run.error.status,
                retry_after=run.error.retry_after,
                detail=str(run.error),
            )
        return run

    async def run_with_tools(
        self,
        request: LLMRequest,
        *,
        run_tool: ToolRunner,
        max_rounds: int = 3,
        on_delta: DeltaSink | None = None,
        user_key: str,
    ) -> ChainResult:
        """Like `run`, but tool calls are run (through `run_tool`) and the model asked again.

        Text of every round reaches `on_delta` and the reply, rounds apart by a blank line. The
        result sums the usage and latency of every round and lists every attempt.
        """
        if not request.tools:
            return await self.run(request, on_delta=on_delta, user_key=user_key)
        messages = list(request.messages)
        results: list[ChainResult] = []
        texts: list[str] = []
        tools_run = 0
        sink = _RoundSink(on_delta) if on_delta is not None else None
        for round_no in range(max_rounds + 1):
            last = round_no == max_rounds
            this = dataclasses.replace(request, messages=tuple(messages), tool_choice="none" if last else "auto")
            if sink is not None:
                sink.new_round()
            result = await self.run(this, on_delta=sink, user_key=user_key)
            results.append(result)
            if result.text:
                texts.append(result.text)
            if result.outcome != "answered" or not result.tool_calls or last:
                break
            messages.append(ChatMessage("assistant", result.text, tool_calls=result.tool_calls))
            for call in result.tool_calls:
                messages.append(ChatMessage("tool", await run_tool(call), tool_call_id=call.id))
                tools_run += 1
        final = results[-1]
        usage = NO_USAGE
        for r in results:
            usage = add_usage(usage, r.usage)
        return ChainResult(
            text="\n\n".join(texts) if texts else self._static,
            outcome=final.outcome if texts else "static",
            fallback_used=any(r.fallback_used for r in results) or not texts,
            provider=final.provider,
            model=final.model,
            attempts=tuple(a for r in results for a in r.attempts),
            usage=usage,
            latency_ms=sum(r.latency_ms for r in results),
            ttft_ms=next((r.ttft_ms for r in results if r.ttft_ms is not None), None),
            error=final.error,
            tools_run=tools_run,
        )

    def _limit(self, start: float, seconds: float, budget_end: float) -> str:
        """Which limit a deadline of `seconds` from `start` was: the step's own, or the chain's
        budget if that ended first."""
        if budget_end < start + seconds:
            return f"the chain's latency budget ({self.policy.latency_budget:g} s)"
        return f"{seconds:g} s"

    async def _contract_broken(self, step: Step, exc: Exception) -> ProviderBadResponse:
        """A provider must raise ProviderError; one that does not still must not cost the answer."""
        await self._log.aexception("llm_provider_contract_broken", step=step.label)
        return ProviderBadResponse(
            f"{step.label} failed unexpectedly: {type(exc).__name__}: {exc}", provider=step.provider.name
        )

    def _retry_wait(self, error: ProviderError, tries: int, policy: StepPolicy) -> float | None:
        if not error.retryable or tries > policy.retries:
            return None
        wait = error.retry_after if error.retry_after is not None else self.policy.retry_backoff * 2 ** (tries - 1)
        return wait if wait <= self.policy.max_retry_wait else None

    async def _allow(self, breaker: CircuitBreaker, key: str, step: Step) -> bool:
        try:
            return await breaker.allow(key, self.policy.breaker)
        except StoreError as exc:
            # Without breaker state, sending the request is better than skipping a healthy step.
            await self._log.awarning("llm_breaker_unavailable", step=step.label, error=str(exc))
            return True

    async def _record(self, breaker: CircuitBreaker, key: str, step: Step, error: ProviderError | None) -> None:
        try:
            # A rejection (400/401) proves the provider is up: it is about our request or key.
            if error is None or isinstance(error, ProviderRejected):
                await breaker.record_success(key)
            else:
                await breaker.record_failure(key, self.policy.breaker)
        except StoreError as exc:
            await self._log.awarning("llm_breaker_unavailable", step=step.label, error=str(exc))

    def _cache_key(self, request: LLMRequest, user_key: str) -> str | None:
        if self._cache is None or request.tools:
            return None
        scope = SHARED_SCOPE if self.policy.cache_shared else f"user:{user_key}"
        return cache_key(bot=self._bot, scope=scope, steps=[s.label for s in self.steps], request=request)

    async def _cache_get(self, key: str) -> CachedAnswer | None:
        assert self._cache is not None
        try:
            return await self._cache.get(key)
        except StoreError as exc:
            await self._log.awarning("llm_cache_unavailable", error=str(exc))
            return None

    async def _cache_put(self, key: str, result: ChainResult) -> None:
        assert self._cache is not None and result.provider is not None and result.model is not None
        answer = CachedAnswer(text=result.text, provider=result.provider, model=result.model)
        try:
            await self._cache.put(key, answer, ttl_seconds=self.policy.cache_ttl)
        except StoreError as exc:
            await self._log.awarning("llm_cache_unavailable", error=str(exc))


class _RoundSink:
    """Passes deltas on, with a blank line before the first delta of a round after shown text."""

    def __init__(self, sink: DeltaSink) -> None:
        self._sink = sink
        self._shown = False
        self._round_started = False

    def new_round(self) -> None:
        self._round_started = False

    async def __call__(self, text: str) -> None:
        if not self._round_started and self._shown:
            text = f"\n\n{text}"
        self._round_started = True
        self._shown = True
        await self._sink(text)


def _describe(error: ProviderError) -> str:
    return f"{type(error).__name__}: {error}"


def _why_nothing_ran(run: _Run) -> str:
    if run.attempts and all(a.outcome == "skipped" for a in run.attempts):
        return "every step's circuit breaker is open"
    return "the chain's latency budget was spent"
