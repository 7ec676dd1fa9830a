"""The turn's own steps, each a small async callable configured through its constructor."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import structlog

from core.errors import ProviderError
from core.llm.base import ChatMessage, LLMProvider, LLMRequest
from core.pipeline.turn import Turn
from core.ratelimit.base import RateLimiter, RateLimits
from core.stores.base import HistoryStore, Session, SessionStore, StoredMessage
from core.tokens import estimate_tokens


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
        limits = RateLimits(
            per_minute=turn.bot.limits.messages_per_minute,
            per_hour=turn.bot.limits.messages_per_hour,
            tokens_per_day=turn.bot.limits.tokens_per_day,
        )
        decision = await self._limiter.hit(usage_key(turn), limits)
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


def usage_key(turn: Turn) -> str:
    return f"{turn.bot.name}:{turn.envelope.user_id}"


class UsageStage:
    """Add the turn's tokens to the user's daily total, which the rate limit stage enforces."""

    def __init__(self, limiter: RateLimiter) -> None:
        self._limiter = limiter

    async def __call__(self, turn: Turn) -> None:
        if turn.tokens_in or turn.tokens_out:
            await self._limiter.add_tokens(usage_key(turn), turn.tokens_in + turn.tokens_out)


class LoadSessionStage:
    """Load the conversation's session, or create it, seeding its window from durable history."""

    def __init__(self, sessions: SessionStore, history: HistoryStore) -> None:
        self._sessions = sessions
        self._history = history

    async def __call__(self, turn: Turn) -> None:
        env = turn.envelope
        session = await self._sessions.load(env.session_id)
        if session is None:
            session = Session(
                session_id=env.session_id,
                bot=env.bot,
                channel=env.channel,
                conversation_id=env.conversation_id,
                user_id=env.user_id,
            )
            await self._sessions.create(session)
            turn.session_created = True
            # An expired session (TTL) comes back with its recent past from the durable history.
            earlier = await self._history.recent(env.session_id, turn.bot.history.max_messages)
            if earlier:
                await self._sessions.append(env.session_id, earlier)
        turn.session = session


class HistoryWindowStage:
    """The newest messages that fit both the message count and the token budget."""

    def __init__(self, sessions: SessionStore) -> None:
        self._sessions = sessions

    async def __call__(self, turn: Turn) -> None:
        window = turn.bot.history
        if window.max_messages == 0:
            return
        recent = await self._sessions.recent(turn.envelope.session_id, window.max_messages)
        kept: list[StoredMessage] = []
        budget = window.token_budget
        for message in reversed(recent):
            if message.is_notice or message.role == "system":
                continue
            cost = estimate_tokens(message.content)
            if cost > budget:
                break
            budget -= cost
            kept.append(message)
        kept.reverse()
        turn.history = kept


class AssembleContextStage:
    """System prompt + what we know of the user + the history window + the new message."""

    async def __call__(self, turn: Turn) -> None:
        env = turn.envelope
        user_context = [
            f"- Channel: {env.channel}",
            f"- Current time (UTC): {datetime.now(UTC):%Y-%m-%d %H:%M}",
        ]
        if env.user_name:
            user_context.insert(0, f"- Name: {env.user_name}")
        system = turn.bot.system_prompt.strip()
        system = f"{system}\n\nAbout the user you are talking to:\n" + "\n".join(user_context)
        turn.context = [
            ChatMessage("system", system),
            *(ChatMessage(m.role, m.content) for m in turn.history if m.role in ("user", "assistant")),
            ChatMessage("user", env.text),
        ]


class GenerateStage:
    """Ask the provider, streaming deltas to the channel when it can show them."""

    def __init__(self, provider: LLMProvider, *, logger: structlog.typing.FilteringBoundLogger | None = None) -> None:
        self._provider = provider
        self._log = logger or structlog.get_logger("relaybot.generate")

    async def __call__(self, turn: Turn) -> None:
        request = LLMRequest(messages=tuple(turn.context))
        parts: list[str] = []
        turn.provider, turn.model = self._provider.name, self._provider.model
        try:
            async for chunk in self._provider.stream(request):
                if chunk.text:
                    parts.append(chunk.text)
                    if turn.stream is not None:
                        await turn.stream(chunk.text)
                if chunk.usage is not None:
                    turn.tokens_in, turn.tokens_out = chunk.usage.tokens_in, chunk.usage.tokens_out
                    turn.tokens_estimated = chunk.usage.estimated
        except ProviderError as exc:
            await self._log.awarning("provider_failed", provider=exc.provider, error=str(exc))
            turn.error = str(exc)
            turn.fallback_used = True
            # Text already streamed stays; the static message says the rest could not be produced.
            shown = "".join(parts)
            fallback = turn.bot.models.static_fallback
            turn.answer(f"{shown}\n\n{fallback}" if shown else fallback)
            return
        turn.answer("".join(parts).strip() or turn.bot.models.static_fallback)


class RecordStage:
    """Append the exchange: to the session window (if processed) and to the durable history."""

    def __init__(self, sessions: SessionStore, history: HistoryStore) -> None:
        self._sessions = sessions
        self._history = history

    async def __call__(self, turn: Turn) -> None:
        env = turn.envelope
        meta = {"kind": "notice", "notice": turn.notice} if turn.notice else {}
        user = StoredMessage(
            role="user", content=env.text, created_at=env.received_at, ref=env.channel_message_id, meta=meta
        )
        reply = StoredMessage(role="assistant", content=turn.reply_text or "", ref=env.channel_message_id, meta=meta)
        saved = await self._history.append(
            session_id=env.session_id,
            bot=env.bot,
            channel=env.channel,
            user_id=env.user_id,
            messages=[user, reply],
        )
        turn.seq = saved[-1].seq
        if turn.session is not None and not turn.notice:
            await self._sessions.append(env.session_id, saved)


class LogTurnStage:
    """One structured `turn` event per reply."""

    def __init__(self, logger: structlog.typing.FilteringBoundLogger | None = None) -> None:
        self._log = logger or structlog.get_logger("relaybot.turn")

    async def __call__(self, turn: Turn) -> None:
        env = turn.envelope
        await self._log.ainfo(
            "turn",
            bot=env.bot,
            session_id=env.session_id,
            user_id=env.user_id,
            channel=env.channel,
            envelope_id=env.id,
            intent=turn.intent,
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
            cache_hit=False,
            error=turn.error,
        )
