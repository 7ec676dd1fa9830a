"""Memory's pipeline stages.

Before the answer: `LoadMemoryStage` (the user's facts, the session's summary, and the history
window trimmed to what the summary does not cover) and `MemoryCommandStage` (answers "what do you
remember" and "forget ..." itself). After the reply is handed to the outbox, off the user's wait:
`ExtractFactsStage` and `FoldSummaryStage`.
"""

from __future__ import annotations

import structlog

from core.clock import Clock, SystemClock
from core.memory.commands import MemoryCommand, fact_text, parse_command, recall_text
from core.memory.facts import FactExtractor, label
from core.memory.summary import Summarizer, plan_fold
from core.pipeline.turn import Turn
from core.stores.base import HistoryStore, StoredMessage, Summary, UserFact
from core.tokens import estimate_tokens

__all__ = ["ExtractFactsStage", "FoldSummaryStage", "LoadMemoryStage", "MemoryCommandStage"]

#: facts shown to the model at most (the newest), so a chatty user cannot grow every prompt
MAX_FACTS_IN_CONTEXT = 30
#: the source message kept with a fact
MAX_SOURCE_CHARS = 500
#: messages read to plan a fold at most (a bot whose window holds thousands of messages still reads a bounded tail)
MAX_FOLD_READ = 500


class LoadMemoryStage:
    """Facts and summary onto the turn; runs after HistoryWindowStage."""

    def __init__(self, history: HistoryStore) -> None:
        self._history = history

    async def __call__(self, turn: Turn) -> None:
        env = turn.envelope
        self.apply(turn, *await self._history.facts_and_summary(env.bot, env.user_id, env.session_id))

    @staticmethod
    def apply(turn: Turn, facts: list[UserFact], summary: Summary | None) -> None:
        """Put the read facts and summary on the turn, and trim the window to what the summary does not cover."""
        if len(facts) > MAX_FACTS_IN_CONTEXT:
            newest = sorted(facts, key=lambda f: f.updated_at)[-MAX_FACTS_IN_CONTEXT:]
            facts = sorted(newest, key=lambda f: f.key)
        turn.facts = facts
        if turn.bot.history.max_messages == 0:
            return
        turn.summary = summary
        if turn.summary is not None:
            through = turn.summary.through_seq
            # Folded messages are in the summary; showing them again would spend the budget twice.
            turn.history = [m for m in turn.history if m.seq is None or m.seq > through]


class MemoryCommandStage:
    """Answers the memory commands from the store, without the model."""

    def __init__(self, history: HistoryStore, *, logger: structlog.typing.FilteringBoundLogger | None = None) -> None:
        self._history = history
        self._log = logger or structlog.get_logger("relaybot.memory")

    async def __call__(self, turn: Turn) -> None:
        command = parse_command(turn.envelope.text)
        if command is None:
            return
        env = turn.envelope
        facts = await self._history.facts(env.bot, env.user_id)
        if command.kind == "ask_key":
            asked = next((f for f in facts if f.key == command.key), None)
            if asked is None:
                return  # nothing stored under that name: an ordinary question, for the rest of the turn
            turn.intent = turn.intent or "memory"
            turn.answer(fact_text(asked))
            return
        turn.intent = turn.intent or "memory"
        if command.kind == "recall":
            turn.answer(recall_text(facts))
            return
        text = await self._forget(turn, command, facts)
        await self._log.ainfo("memory_forget", bot=env.bot, user_id=env.user_id, command=command.kind, key=command.key)
        turn.facts = await self._history.facts(env.bot, env.user_id)
        turn.answer(text)

    async def _forget(self, turn: Turn, command: MemoryCommand, facts: list[UserFact]) -> str:
        env = turn.envelope
        if command.kind == "forget_all":
            count = await self._history.forget(env.bot, env.user_id)
            if count == 0:
                return "There was nothing to forget: I don't remember anything about you."
            return f"Done: I've forgotten everything I knew about you ({count} fact{'s' if count != 1 else ''})."
        if command.kind == "forget_last":
            if not facts:
                return "There was nothing to forget: I don't remember anything about you."
            last = max(facts, key=lambda f: f.updated_at)
            await self._history.forget(env.bot, env.user_id, [last.key])
            return f"Done: I've forgotten your {label(last.key).lower()} ({last.value})."
        key = command.key or ""
        known = {f.key: f for f in facts}
        if key not in known:
            what = command.named or label(key).lower()
            return f"I don't have your {what} stored, so there's nothing to forget."
        await self._history.forget(env.bot, env.user_id, [key])
        return f"Done: I've forgotten your {label(key).lower()} ({known[key].value})."


class ExtractFactsStage:
    """After the reply: facts the user stated in this message, stored with the message and its time."""

    def __init__(
        self,
        history: HistoryStore,
        extractor: FactExtractor,
        *,
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self._history = history
        self._extractor = extractor
        self._log = logger or structlog.get_logger("relaybot.memory")

    async def __call__(self, turn: Turn) -> None:
        env = turn.envelope
        # A notice (rate limit) means the message was not processed; a command is not a statement.
        if turn.notice or not env.text.strip() or parse_command(env.text) is not None:
            return
        found = await self._extractor.extract(env.text, bot=turn.bot, user_key=env.user_id, known=turn.facts)
        known = {f.key: f.value for f in turn.facts}
        new = [
            UserFact(key=f.key, value=f.value, source=env.text[:MAX_SOURCE_CHARS], updated_at=env.received_at)
            for f in found
            if known.get(f.key) != f.value
        ]
        if not new:
            return
        await self._history.remember(bot=env.bot, user_id=env.user_id, facts=new)
        await self._log.ainfo("memory_facts_stored", bot=env.bot, user_id=env.user_id, keys=sorted(f.key for f in new))


class FoldSummaryStage:
    """After the reply: fold what no longer fits the history window into the running summary."""

    def __init__(
        self,
        history: HistoryStore,
        summarizer: Summarizer,
        *,
        keep_fraction: float = 0.5,
        clock: Clock | None = None,
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        if not 0 < keep_fraction < 1:
            raise ValueError("keep_fraction must be between 0 and 1")
        self._history = history
        self._summarizer = summarizer
        self._keep = keep_fraction
        self._clock = clock or SystemClock()
        self._log = logger or structlog.get_logger("relaybot.memory")

    async def __call__(self, turn: Turn) -> None:
        window = turn.bot.history
        if turn.notice or window.max_messages == 0:
            return
        if _fits_without_fold(turn):
            return
        session_id = turn.envelope.session_id
        summary = await self._history.summary(session_id)
        through = summary.through_seq if summary is not None else 0
        unsummarized = _unsummarized_in_turn(turn, through)
        if unsummarized is None:
            # A bounded read from the tail: a conversation whose older part was never summarized (it
            # predates memory) starts its summary here rather than reading its whole past.
            tail = await self._history.recent(session_id, min(2 * window.max_messages + 2, MAX_FOLD_READ))
            unsummarized = [m for m in tail if m.seq is not None and m.seq > through]
        plan = plan_fold(
            unsummarized, max_messages=window.max_messages, token_budget=window.token_budget, keep_fraction=self._keep
        )
        if plan is None:
            return
        text = await self._summarizer.summarize(
            summary.text if summary is not None else None, plan.fold, bot=turn.bot, user_key=turn.envelope.user_id
        )
        stored = await self._history.save_summary(
            session_id, Summary(text=text, through_seq=plan.through_seq, updated_at=self._clock.now())
        )
        await self._log.ainfo(
            "memory_summary_folded",
            session_id=session_id,
            folded=len(plan.fold),
            through_seq=plan.through_seq,
            stored=stored,
        )


def _unsummarized_in_turn(turn: Turn, through: int) -> list[StoredMessage] | None:
    """The messages after `through`, when the turn holds all of them: its window (every stored
    message after the summary, none dropped) and the two it recorded. None: read them instead."""
    if turn.seq is None or len(turn.recorded) != 2 or turn.rerun:
        return None
    summarized_with_window = turn.summary.through_seq if turn.summary is not None else 0
    if summarized_with_window != through or len(turn.history) != turn.seq - 2 - through:
        return None  # the summary moved since the turn read it, or the window left messages out
    return [*turn.history, *turn.recorded]


def _fits_without_fold(turn: Turn) -> bool:
    """True when the turn itself shows that every unsummarized message still fits the window.

    Then `plan_fold` would find nothing to fold, and reading the tail of the history to find that
    out (a database query on every turn) is skipped. It holds when the window the turn was given
    is every stored message after the summary (none dropped, no notices among them) and, with
    this turn's two messages added, they fit both bounds. Anything else takes the exact path.
    """
    if turn.seq is None:
        return False
    limits = turn.bot.history
    through = turn.summary.through_seq if turn.summary is not None else 0
    earlier = turn.history
    # RecordStage stored this turn's user message and reply as seq - 1 and seq.
    if len(earlier) != turn.seq - 2 - through or len(earlier) + 2 > limits.max_messages:
        return False
    tokens = sum(m.tokens for m in earlier)
    tokens += estimate_tokens(turn.envelope.text) + estimate_tokens(turn.reply_text or "")
    return tokens <= limits.token_budget
