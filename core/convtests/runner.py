"""Runs conversation tests through the real pipeline, in this process.

One `Runtime` serves the whole run (`offline_runtime`: embedded stores in a temporary folder, the
bots' knowledge ingested into a kept store), with the model chains of `TestChains`, on a `TestClock`: every part of
the runtime that reads the time reads the conversation's. Each message goes through `Worker.process`,
as the bus would hand it over: dedupe, the pipeline, the outbox (to `TranscriptChannel`), then the
memory stages; when a turn moves the clock, the handoff timeout sweep runs first, as it would have
meanwhile. Conversations are kept apart
by their ids (each has its own conversation and user), so they share nothing: not a session, a fact, a
rate limit or a flow.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace

from core.actions import Action
from core.bots import BotConfig
from core.convtests.chains import TestChains
from core.convtests.channel import TranscriptChannel, TurnRecorder
from core.convtests.clock import TestClock
from core.convtests.expect import Mismatch, TurnOutcome, check_turn
from core.convtests.loader import Conversation
from core.convtests.offline import offline_runtime
from core.convtests.spec import TurnSpec
from core.envelope import Envelope, session_id_for
from core.llm.scripted import ScriptedProvider
from core.runtime import Runtime
from core.settings import Settings

__all__ = ["ConversationResult", "ConversationRunner"]


@dataclass(slots=True)
class ConversationResult:
    conversation: Conversation
    seconds: float
    turns: list[TurnOutcome] = field(default_factory=list)
    mismatches: list[Mismatch] = field(default_factory=list)
    #: what went wrong outside the expectations: the model script, or an error that ended the run
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.mismatches and not self.problems


class ConversationRunner:
    """Build with `ConversationRunner.open(settings)`; `run` one conversation at a time."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        chains: TestChains,
        channel: TranscriptChannel,
        recorder: TurnRecorder,
        clock: TestClock,
    ) -> None:
        self.runtime = runtime
        self._chains = chains
        self._channel = channel
        self._recorder = recorder
        self._clock = clock
        self._count = 0

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, settings: Settings, *, bots: list[str], report: Callable[[str], None] | None = None
    ) -> AsyncIterator[ConversationRunner]:
        """A runner for these bots' tests; `report` hears of knowledge being (re)ingested."""
        clock = TestClock()
        recorder = TurnRecorder()
        async with offline_runtime(
            settings,
            bots=bots,
            report=report,
            clock=clock,
            observers=[recorder],
        ) as runtime:
            chains = runtime.chains
            assert isinstance(chains, TestChains)  # what offline_runtime builds
            channel = TranscriptChannel()
            runtime.add_channel(channel)
            yield cls(runtime, chains=chains, channel=channel, recorder=recorder, clock=clock)

    async def run(self, conversation: Conversation, bot: BotConfig) -> ConversationResult:
        spec = conversation.spec
        self._count += 1
        # Ids of its own: another test's facts, flow, session or rate limit can never leak in.
        conversation_id = f"convtest-{self._count}"
        user_id = f"test:{spec.user}:{self._count}"
        script = spec.script()
        provider: ScriptedProvider | None = None
        if isinstance(script, str):
            provider = ScriptedProvider.fixed(script)
        elif script is not None:
            provider = ScriptedProvider(script)
        started = time.perf_counter()
        result = ConversationResult(conversation, 0.0)
        last: TurnOutcome | None = None
        times = spec.times()
        session_id = session_id_for(bot.name, spec.channel, conversation_id)
        with self._chains.using(provider), self._clock.starting_at(spec.now):
            for index, turn in enumerate(spec.turns):
                sent_before: list[str] = []
                if self._clock.set(times[index]):
                    try:
                        sent_before = await self._time_passed(session_id)
                    except Exception as exc:
                        result.problems.append(f"turn {index + 1}: the run failed: {type(exc).__name__}: {exc}")
                        break
                outcome: TurnOutcome | None = None
                try:
                    text, action = _message(turn, last)
                except ValueError as exc:
                    result.problems.append(f"turn {index + 1}: {exc}")
                    break
                for repeat in range(turn.repeat):
                    envelope = Envelope.create(
                        bot=bot.name,
                        channel=spec.channel,
                        channel_message_id=turn.message_id or f"{index + 1}.{repeat + 1}",
                        conversation_id=conversation_id,
                        user_id=user_id,
                        user_name=spec.user_name,
                        text=text,
                        received_at=self._clock.now(),
                        action=action,
                    )
                    try:
                        outcome = await self._send(envelope)
                    except Exception as exc:
                        result.problems.append(f"turn {index + 1}: the run failed: {type(exc).__name__}: {exc}")
                        break
                if outcome is None:
                    break
                if sent_before:
                    outcome = replace(outcome, replies=(*sent_before, *outcome.replies))
                result.turns.append(outcome)
                last = outcome
                result.mismatches.extend(
                    check_turn(turn, outcome, number=index + 1, line=conversation.turn_lines[index])
                )
        if provider is not None:
            result.problems.extend(f"model script: {problem}" for problem in provider.problems)
            if provider.unused and not result.problems:
                unused = ", ".join(_describe_step(step) for step in provider.unused)
                result.problems.append(f"model script: {len(provider.unused)} step(s) never asked for: {unused}")
        result.seconds = time.perf_counter() - started
        return result

    async def _time_passed(self, session_id: str) -> list[str]:
        """What the bot does while the clock moves on, as the runtime's timeout sweep would have done it
        meanwhile: a request for a person nobody took in time goes back to the bot. The messages it sends
        the conversation (the timeout's) come before the next turn's reply."""
        await self.runtime.desk.expire_waiting()
        return [reply.text for reply in self._channel.take_unprompted(session_id) if reply.final]

    async def _send(self, envelope: Envelope) -> TurnOutcome:
        await self.runtime.worker.process(envelope)
        turn = self._recorder.take(envelope.id)
        replies = self._channel.take(envelope.id)
        facts = await self.runtime.history.facts(envelope.bot, envelope.user_id)
        handoff = await self.runtime.handoff_desk.state(envelope.session_id)
        return replace(TurnOutcome.of(envelope, turn, replies, facts), handoff=str(handoff))


def _message(turn: TurnSpec, last: TurnOutcome | None) -> tuple[str, Action | None]:
    """The turn's text, and its click: a `click` names a button of the previous reply, as a channel checks."""
    if turn.click is None:
        return turn.say or "", None
    offered = last.offered if last is not None else ()
    for button in offered:
        if button.id == turn.click:
            return button.label, Action(id=button.id, value=button.value, message_id=last.offered_in if last else None)
    ids = ", ".join(b.id for b in offered) or "none"
    raise ValueError(f"click: {turn.click!r} is not a button of the previous reply (it offered: {ids})")


def _describe_step(step: object) -> str:
    text = repr(step)
    return text if len(text) <= 80 else text[:79] + "…"
