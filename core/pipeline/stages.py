"""The turn's own steps, each a small async callable configured through its constructor."""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client.metrics import MetricWrapperBase

from core.actions import offer_from_meta, offer_to_meta
from core.clock import Clock, SystemClock
from core.envelope import Envelope
from core.knowledge.context import format_passages
from core.knowledge.sources import cite
from core.llm.base import ChatMessage, LLMProvider, LLMRequest
from core.llm.chain import ChainSource
from core.llm.factory import single_provider_chains
from core.memory.context import memory_block
from core.memory.summary import window
from core.metrics import Metrics
from core.pipeline.turn import Turn
from core.ratelimit.base import RateDecision, RateLimiter, RateLimits
from core.stores.base import HistoryStore, Session, SessionStore, StoredMessage

if TYPE_CHECKING:
    from core.handlers.llm_tools import LLMToolBinding

#: the tools a turn offers the model (`LLMTools.for_turn`); None: none
ToolsFor = Callable[[Turn], "LLMToolBinding | None"]


def describe_wait(seconds: float) -> str:
    """A human wait time: "a few seconds", "about 40 seconds", "about 3 minutes"."""
    if seconds < 5:
        return "a few seconds"
    if seconds < 90:
        return f"about {math.ceil(seconds / 5) * 5} seconds"
    if seconds < 90 * 60:
        return f"about {math.ceil(seconds / 60)} minutes"
    return f"about {math.ceil(seconds / 3600)} hours"


class RateLimitStage:
    """Over-limit users get a polite notice with the wait; their message is not processed."""

    def __init__(self, limiter: RateLimiter) -> None:
        self._limiter = limiter

    async def __call__(self, turn: Turn) -> None:
        self.apply(turn, await self._limiter.hit(usage_key(turn), turn_limits(turn)))

    @staticmethod
    def apply(turn: Turn, decision: RateDecision) -> None:
        """Answer the turn with the notice `decision` calls for, if any."""
        if decision.window == "day":
            turn.answer(
                "You've reached today's usage limit for this assistant. "
                f"Please try again in {describe_wait(decision.retry_after)}.",
                notice="token_limit",
            )
        elif not decision.allowed:
            turn.answer(
                "You're sending messages faster than I can answer them. "
                f"Please try again in {describe_wait(decision.retry_after)}.",
                notice="rate_limited",
            )


def turn_limits(turn: Turn) -> RateLimits:
    return RateLimits(
        per_minute=turn.bot.limits.messages_per_minute,
        per_hour=turn.bot.limits.messages_per_hour,
        tokens_per_day=turn.bot.limits.tokens_per_day,
    )


def usage_key(turn: Turn) -> str:
    return f"{turn.bot.name}:{turn.envelope.user_id}"


def bot_usage_key(bot: str) -> str:
    """The limiter key of a bot's daily tokens over all its users."""
    return f"bot:{bot}"


class UsageStage:
    """Add the turn's tokens to the user's daily total, which the rate limit stage enforces."""

    def __init__(self, limiter: RateLimiter) -> None:
        self._limiter = limiter

    async def __call__(self, turn: Turn) -> None:
        if turn.tokens_in or turn.tokens_out:
            # And to the bot's total over every user, which channels check before taking a message.
            await self._limiter.add_tokens(
                usage_key(turn), turn.tokens_in + turn.tokens_out, also=(bot_usage_key(turn.bot.name),)
            )


class LoadSessionStage:
    """Load the conversation's session, or create it, seeding its window from durable history."""

    def __init__(self, sessions: SessionStore, history: HistoryStore, *, clock: Clock | None = None) -> None:
        self._sessions = sessions
        self._history = history
        self._clock = clock or SystemClock()

    async def __call__(self, turn: Turn) -> None:
        loaded = await self._sessions.load_with_recent(turn.envelope.session_id, turn.bot.history.max_messages)
        await self.apply(turn, *loaded)

    async def apply(self, turn: Turn, session: Session | None, recent: list[StoredMessage]) -> None:
        """Put the loaded session and its window on the turn, creating the session if there was none."""
        env = turn.envelope
        window = turn.bot.history.max_messages
        turn.session_messages = recent
        if session is None:
            session = Session(
                session_id=env.session_id,
                bot=env.bot,
                channel=env.channel,
                conversation_id=env.conversation_id,
                user_id=env.user_id,
                created_at=self._clock.now(),
            )
            await self._sessions.create(session)
            turn.session_created = True
            # An expired session (TTL) comes back with its recent past from the durable history.
            earlier = await self._history.recent(env.session_id, window)
            if earlier:
                await self._sessions.append(env.session_id, earlier, keep=window)
            turn.session_messages = earlier
        turn.session = session


class HistoryWindowStage:
    """The newest messages that fit both the message count and the token budget."""

    def __init__(self, sessions: SessionStore) -> None:
        self._sessions = sessions

    async def __call__(self, turn: Turn) -> None:
        limits = turn.bot.history
        if limits.max_messages == 0:
            return
        recent = turn.session_messages
        if recent is None:  # read with the session by LoadSessionStage, unless that did not run
            recent = await self._sessions.recent(turn.envelope.session_id, limits.max_messages)
        turn.history = window(recent, max_messages=limits.max_messages, token_budget=limits.token_budget)


class AssembleContextStage:
    """System prompt + what we know of the user + the history window + the new message."""

    def __init__(self, *, clock: Clock | None = None) -> None:
        self._clock = clock or SystemClock()

    async def __call__(self, turn: Turn) -> None:
        env = turn.envelope
        user_context = [
            f"- Channel: {env.channel}",
            # The date, not the minute: an exact-match response cache keyed on this prompt would
            # otherwise never hit across minutes.
            f"- Today (UTC): {self._clock.now():%Y-%m-%d}",
        ]
        if env.user_name:
            user_context.insert(0, f"- Name: {env.user_name}")
        system = turn.bot.system_prompt.strip()
        system = f"{system}\n\nAbout the user you are talking to:\n" + "\n".join(user_context)
        system += memory_block(turn.facts, turn.summary)
        if turn.passages is not None:
            system = f"{system}\n\n{format_passages(turn.passages)}"
        if turn.handler_notes:
            system = f"{system}\n\nFor this message:\n" + "\n".join(turn.handler_notes)
        turn.context = [
            ChatMessage("system", system),
            *(ChatMessage(m.role, m.content, tokens=m.tokens) for m in turn.history if m.role in ("user", "assistant")),
            ChatMessage("user", env.text),
        ]


class GenerateStage:
    """Run the bot's LLM chain, streaming deltas to the channel when it can show them.

    `chain_for` gives each bot its chain (`ChainFactory.for_bot`). A bare `provider` runs as a
    one-step chain in front of the bot's static message (embedding, tests). `tools_for` gives the
    tools a turn offers the model (function calling; the chain runs them and asks again).
    """

    def __init__(
        self,
        provider: LLMProvider | None = None,
        *,
        chain_for: ChainSource | None = None,
        tools_for: ToolsFor | None = None,
    ) -> None:
        if chain_for is None:
            if provider is None:
                raise TypeError("GenerateStage needs a provider or chain_for")
            chain_for = single_provider_chains(provider)
        elif provider is not None:
            raise TypeError("GenerateStage takes a provider or chain_for, not both")
        # The chain logs its attempts, interruptions and exhaustion itself (logger relaybot.llm).
        self._chain_for = chain_for
        self._tools_for = tools_for

    async def __call__(self, turn: Turn) -> None:
        models = turn.bot.models
        request = LLMRequest(
            messages=tuple(turn.context),
            max_tokens=models.max_tokens,
            temperature=models.temperature,
            passages=tuple(turn.passages) if turn.passages is not None else None,
        )
        chain = self._chain_for(turn.bot)
        tools = self._tools_for(turn) if self._tools_for is not None else None
        if tools is None:
            result = await chain.run(request, on_delta=turn.stream, user_key=turn.envelope.user_id)
        else:
            result = await chain.run_with_tools(
                dataclasses.replace(request, tools=tools.specs),
                run_tool=tools.run,
                max_rounds=tools.max_rounds,
                on_delta=turn.stream,
                user_key=turn.envelope.user_id,
            )
        turn.provider, turn.model = result.provider, result.model
        turn.fallback_used = result.fallback_used
        turn.attempts = result.attempts
        turn.ttft_ms = result.ttft_ms
        turn.cache_hit = result.cache_hit
        turn.llm_outcome = result.outcome
        # Added, not set: an LLM intent classification earlier in the turn spent tokens too.
        turn.tokens_in += result.usage.tokens_in
        turn.tokens_out += result.usage.tokens_out
        turn.tokens_estimated = result.usage.estimated
        if result.error is not None:
            turn.error = result.error
        if result.outcome == "static":
            turn.answer(result.text)  # every model failed: the buttons were meant for a real answer
        else:
            # The passages the answer cites become its sources, listed the same way in the text and in
            # the reply's `sources`; an answer that cites none lists none.
            cited = cite(result.text, turn.passages or ())
            # Buttons a handler offered before falling through go with the model's answer.
            turn.answer(cited.text, actions=turn.offer_actions, card=turn.offer_card)
            turn.reply_sources = cited.sources


class RecordStage:
    """Append the exchange: to the session window (if processed) and to the durable history.

    The reply is stamped with `clock`'s time (the user's message with its `received_at`)."""

    def __init__(self, sessions: SessionStore, history: HistoryStore, *, clock: Clock | None = None) -> None:
        self._sessions = sessions
        self._history = history
        self._clock = clock or SystemClock()

    async def __call__(self, turn: Turn) -> None:
        window = await self.record(turn)
        if window:
            await self._sessions.append(turn.envelope.session_id, window, keep=window_kept(turn))

    async def record(self, turn: Turn) -> list[StoredMessage]:
        """Append the exchange to the durable history; what the session window gets ([]: nothing)."""
        env = turn.envelope
        meta = {"kind": "notice", "notice": turn.notice} if turn.notice else {}
        # The reply address rides with the user's message: where a person's or a proactive message goes later.
        user_meta = {**meta, **_click_meta(env), "reply_to": env.reply_to}
        user = StoredMessage(
            role="user", content=env.text, created_at=env.received_at, ref=env.channel_message_id, meta=user_meta
        )
        reply_meta = {**meta, **offer_to_meta(turn.reply_actions, turn.reply_card)}
        reply = StoredMessage(
            role="assistant",
            content=turn.reply_text or "",
            created_at=self._clock.now(),
            ref=env.channel_message_id,
            meta=reply_meta,
        )
        # A held turn (a person was asked for or holds the conversation) has no reply to record.
        messages = [user] if turn.silent else [user, reply]
        saved = await self._history.append(
            session_id=env.session_id,
            bot=env.bot,
            channel=env.channel,
            user_id=env.user_id,
            messages=messages,
            # Once per inbound message: a turn run again (after a crash or a store error) stores nothing.
            turn_key=env.dedupe_key,
        )
        turn.seq = saved[-1].seq
        turn.recorded = saved
        # The time tells runs apart on the system clock; a test's clock, which stands still within a
        # turn, stamps two runs alike, and then only a different answer shows the earlier one.
        first_run = (saved[-1].created_at, saved[-1].content) == (messages[-1].created_at, messages[-1].content)
        if len(saved) != len(messages) or not first_run:
            # This message was recorded by an earlier run of the turn: the answer is the one on record
            # (it may already have been shown), and the session window already has it.
            turn.rerun = True
            if saved[-1].role != "assistant":
                turn.hold()  # the first run was held: it stays without a reply
                return []
            turn.silent = False
            turn.reply_text = saved[-1].content
            turn.reply_actions, turn.reply_card = offer_from_meta(saved[-1].meta)
            return []
        return saved if turn.session is not None and not turn.notice else []


def window_kept(turn: Turn) -> int:
    """The session window's length: trimmed to what the bot reads, the list stays the same size
    however long the talk."""
    return max(1, turn.bot.history.max_messages)


def _click_meta(envelope: Envelope) -> dict[str, str]:
    # The history says which button a message was (its text is the label the user saw).
    return {"action": envelope.action.id} if envelope.action is not None else {}


class LogTurnStage:
    """One structured `turn` event per reply."""

    def __init__(self, logger: structlog.typing.FilteringBoundLogger | None = None) -> None:
        self._log = logger or structlog.get_logger("relaybot.turn")

    async def __call__(self, turn: Turn) -> None:
        if not self._log.is_enabled_for(logging.INFO):
            return  # spares building the event's thirty fields for a line nobody writes
        env = turn.envelope
        await self._log.ainfo(
            "turn",
            bot=env.bot,
            session_id=env.session_id,
            user_id=env.user_id,
            channel=env.channel,
            envelope_id=env.id,
            intent=turn.intent,
            intent_confidence=turn.intent_confidence,
            intent_method=turn.intent_method,
            intent_candidate=turn.intent_candidate,
            handler=turn.handler,
            handoff=turn.handoff,
            tool_calls=turn.tool_calls,
            model=turn.model,
            provider=turn.provider,
            fallback_used=turn.fallback_used,
            notice=turn.notice,
            tokens_in=turn.tokens_in,
            tokens_out=turn.tokens_out,
            tokens_estimated=turn.tokens_estimated,
            history_messages=len(turn.history),
            seq=turn.seq,
            latency_ms=round(turn.latency_ms, 2),
            ttft_ms=round(turn.ttft_ms, 2) if turn.ttft_ms is not None else None,
            cache_hit=turn.cache_hit,
            llm_outcome=turn.llm_outcome,
            attempts=[a.to_log() for a in turn.attempts],
            error=turn.error,
        )


class MetricsStage:
    """The turn's Prometheus counters and histograms."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        # Each label set's series, looked up once: prometheus_client's labels() validates and
        # locks on every call, and a turn updates five or six series. The label values are bots,
        # channels, outcomes, providers, models and error class names: a bounded set.
        self._children: dict[tuple[MetricWrapperBase, tuple[str, ...]], Any] = {}

    def _child(self, metric: MetricWrapperBase, *labels: str) -> Any:
        child = self._children.get((metric, labels))
        if child is None:
            child = self._children[(metric, labels)] = metric.labels(*labels)
        return child

    async def __call__(self, turn: Turn) -> None:
        m, env = self._metrics, turn.envelope
        outcome = turn.notice or ("held" if turn.silent else "fallback" if turn.fallback_used else "answered")
        self._child(m.turns, env.bot, env.channel, outcome).inc()
        self._child(m.turn_latency, env.channel).observe(turn.latency_ms / 1000)
        if turn.notice in ("rate_limited", "token_limit"):
            self._child(m.rate_limited, env.bot, "tokens" if turn.notice == "token_limit" else "messages").inc()
        if turn.fallback_used:
            self._child(m.fallbacks, env.bot).inc()
        for attempt in turn.attempts:
            if attempt.error:
                self._child(m.provider_errors, attempt.provider, attempt.model, attempt.error).inc()
        if turn.ttft_ms is not None:
            self._child(m.time_to_first_token, turn.provider or "unknown").observe(turn.ttft_ms / 1000)
        self._child(m.tokens, env.bot, "in").inc(turn.tokens_in)
        self._child(m.tokens, env.bot, "out").inc(turn.tokens_out)
