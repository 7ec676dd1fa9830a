"""Runs a turn's stages in order, then its closing stages, and produces one reply, or none when the
turn is held (a person was asked for or holds the conversation: the bot stays silent)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence

import structlog

from core.bots import BotConfig
from core.envelope import Envelope, Reply
from core.errors import StoreError
from core.pipeline.turn import DeltaSink, Turn

Stage = Callable[[Turn], Awaitable[None]]


class Pipeline:
    """`stages` build the answer and stop early once one calls `turn.answer`; `closing` stages
    (save, log) run for every turn, including rate-limited and failed ones; `after` stages (fact
    extraction, summaries) run once the reply is with the outbox (`follow_up`), off the user's wait.

    `after_side_by_side(turn)` says whether the turn's `after` stages may each wait on a model (for
    seconds): then they run side by side; otherwise one after another, in this task, which spares a
    task and a gather on every turn of a bot with no model (its memory is local and instant).
    Without it, they always run side by side.
    """

    def __init__(
        self,
        *,
        stages: Sequence[Stage],
        closing: Sequence[Stage],
        after: Sequence[Stage] = (),
        after_side_by_side: Callable[[Turn], bool] | None = None,
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self._stages = tuple(stages)
        self._closing = tuple(closing)
        self._after = tuple(after)
        self._after_side_by_side = after_side_by_side
        self._log = logger or structlog.get_logger("relaybot.pipeline")

    async def run(
        self, envelope: Envelope, bot: BotConfig, *, stream: DeltaSink | None = None, retryable: bool = False
    ) -> Reply | None:
        """The reply to `envelope` (`run_turn` without the turn); None when the turn is held."""
        reply, _ = await self.run_turn(envelope, bot, stream=stream, retryable=retryable)
        return reply

    async def run_turn(
        self, envelope: Envelope, bot: BotConfig, *, stream: DeltaSink | None = None, retryable: bool = False
    ) -> tuple[Reply | None, Turn]:
        """The reply to `envelope` (None when the turn is held), and the turn that produced it (for `follow_up`).

        With `retryable`, a StoreError (Redis or the database unreachable) is raised instead of
        answered: the message is safe on the bus and is retried once the store is back, rather
        than told "try again later". The last attempt answers with the bot's static message.
        """
        turn = Turn(envelope=envelope, bot=bot, stream=stream)
        try:
            for stage in self._stages:
                await stage(turn)
                if turn.done:
                    break
        except StoreError:
            if retryable:
                raise
            await self._degrade(turn, bot)
        except Exception:
            # A broken stage must not leave the user without an answer.
            await self._degrade(turn, bot)
        if turn.reply_text is None and not turn.silent:
            turn.answer(bot.models.static_fallback)
            turn.fallback_used = True
        for stage in self._closing:
            try:
                await stage(turn)
            except StoreError:
                if retryable:
                    raise  # nothing was sent yet: the retry records and answers it whole
                await self._log.aexception("turn_closing_stage_failed")
                turn.error = turn.error or "store unavailable while recording the turn"
            except Exception as exc:
                await self._log.aexception("turn_closing_stage_failed", error=str(exc))
                turn.error = turn.error or f"{type(exc).__name__}: {exc}"
        return (None if turn.silent else self._reply(envelope, turn, bot)), turn

    async def follow_up(self, turn: Turn) -> None:
        """Run the `after` stages, side by side; call it once the reply is in the outbox.

        Never raises: the reply is out, and a failure here (a model or database down) costs a fact
        or a summary update, which the log records. Cancelled (shutdown past its grace), it logs
        what was not done before giving way.
        """
        if not self._after:
            return
        try:
            if self._after_side_by_side is None or self._after_side_by_side(turn):
                results = await self._run_side_by_side(turn)
            else:
                results = await self._run_one_by_one(turn)
        except asyncio.CancelledError:
            await self._log.awarning(
                "turn_follow_up_cancelled", envelope_id=turn.envelope.id, session_id=turn.envelope.session_id
            )
            raise
        for stage, result in zip(self._after, results, strict=True):
            if isinstance(result, Exception):
                await self._log.aerror(
                    "turn_follow_up_failed",
                    stage=type(stage).__name__,
                    envelope_id=turn.envelope.id,
                    error=f"{type(result).__name__}: {result}",
                    exc_info=result,
                )

    async def _run_one_by_one(self, turn: Turn) -> list[BaseException | None]:
        results: list[BaseException | None] = []
        for stage in self._after:
            try:
                await stage(turn)
                results.append(None)
            except Exception as exc:
                results.append(exc)
        return results

    async def _run_side_by_side(self, turn: Turn) -> list[BaseException | None]:
        """Every `after` stage at once (each may wait on a model), the first in this task and the
        others in tasks of their own: one task fewer per turn than gathering them all."""
        others = [asyncio.ensure_future(stage(turn)) for stage in self._after[1:]]
        results: list[BaseException | None] = []
        try:
            await self._after[0](turn)
            results.append(None)
        except Exception as exc:
            results.append(exc)
        except asyncio.CancelledError:
            for task in others:
                task.cancel()
            raise
        for outcome in await asyncio.gather(*others, return_exceptions=True):
            results.append(outcome if isinstance(outcome, BaseException) else None)
        return results

    async def _degrade(self, turn: Turn, bot: BotConfig) -> None:
        await self._log.aexception("turn_stage_failed")
        exc = sys.exc_info()[1]
        turn.error = f"{type(exc).__name__}: {exc}"
        turn.fallback_used = True
        turn.answer(bot.models.static_fallback)

    @staticmethod
    def _reply(envelope: Envelope, turn: Turn, bot: BotConfig) -> Reply:
        return Reply(
            envelope_id=envelope.id,
            session_id=envelope.session_id,
            bot=envelope.bot,
            channel=envelope.channel,
            reply_to=envelope.reply_to,
            in_reply_to=envelope.channel_message_id,
            dedupe_key=envelope.dedupe_key,
            text=turn.reply_text or bot.models.static_fallback,
            seq=turn.seq,
            actions=turn.reply_actions,
            card=turn.reply_card,
            # Only the knowledge the model's answer cites (GenerateStage): a handler's prompt, a notice or the
            # static fallback lists none.
            sources=turn.reply_sources if turn.reply_text and not turn.notice else (),
        )
