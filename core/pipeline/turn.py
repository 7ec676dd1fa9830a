"""The context one message carries through the pipeline."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from core.actions import Button, Card, check_offer
from core.bots import BotConfig
from core.envelope import Envelope
from core.knowledge.passage import Passage
from core.llm.base import ChatMessage
from core.llm.result import Attempt
from core.stores.base import Session, StoredMessage, Summary, UserFact
from core.tools.base import ToolResult

DeltaSink = Callable[[str], Awaitable[None]]

#: who asked for a person during a turn (core.handoff.desk.HandoffCause's in-turn values)
AskCause = Literal["handler", "tool", "model", "user"]


@dataclass(frozen=True, slots=True)
class PersonAsked:
    """A person was asked for during the turn; the handoff stage carries it out when the turn ends."""

    cause: AskCause
    reason: str


@dataclass(kw_only=True, slots=True)
class Turn:
    envelope: Envelope
    bot: BotConfig
    stream: DeltaSink | None = None
    started_at: float = field(default_factory=time.monotonic)

    session: Session | None = None
    session_created: bool = False
    #: the newest messages of the session's list, read with the session (None: not read yet)
    session_messages: list[StoredMessage] | None = None
    history: list[StoredMessage] = field(default_factory=list)
    context: list[ChatMessage] = field(default_factory=list)
    #: what the user told the bot about themselves, and the summary of messages older than `history`
    facts: list[UserFact] = field(default_factory=list)
    summary: Summary | None = None
    intent: str | None = None
    #: the classifier's score for `intent` (None: not classified); how it was chosen: local | llm | flow
    intent_confidence: float | None = None
    intent_method: str | None = None
    #: below the threshold: the intent that scored best before the default was chosen
    intent_candidate: str | None = None
    #: the handler that ran (answered, or fell through to the LLM), and every tool call of the turn
    handler: str | None = None
    tool_calls: list[dict[str, object]] = field(default_factory=list)
    #: the same calls whole (arguments, output): never logged, they may hold personal data; tests read them
    tool_results: list[ToolResult] = field(default_factory=list)
    #: what a handler that fell through tells the model (order details, the flow's state)
    handler_notes: list[str] = field(default_factory=list)
    #: the knowledge set to search (an intent may name one); None: the bot's default set
    knowledge_set: str | None = None
    #: retrieved knowledge, best first; None: no knowledge was searched, []: nothing relevant was found
    passages: list[Passage] | None = None

    reply_text: str | None = None
    #: buttons and card offered with the reply (a handler's `turn.reply(text, buttons=...)`)
    reply_actions: tuple[Button, ...] = ()
    reply_card: Card | None = None
    #: the knowledge the answer cites, as listed at its end ("[1] Title (Section)"); set only with a model's
    #: (or the offline provider's) answer, never with a handler's own reply
    reply_sources: tuple[str, ...] = ()
    #: buttons a handler offered for the model's answer (`HandlerTurn.offer`): set on the reply if the model answers
    offer_actions: tuple[Button, ...] = ()
    offer_card: Card | None = None
    notice: str | None = None
    done: bool = False
    seq: int | None = None
    #: the user's message and the reply as RecordStage stored them (with their seqs)
    recorded: list[StoredMessage] = field(default_factory=list)
    #: the inbound message had been recorded by an earlier run of this turn (RecordStage)
    rerun: bool = False
    #: no reply at all: a person was asked for or holds the conversation (`hold`)
    silent: bool = False
    #: a person asked for during this turn (`ask_for_person`), and what the turn did about handoff
    #: (requested, acknowledged, held), for the turn log
    person_asked: PersonAsked | None = None
    handoff: str | None = None

    provider: str | None = None
    model: str | None = None
    fallback_used: bool = False
    tokens_in: int = 0
    tokens_out: int = 0
    tokens_estimated: bool = False
    error: str | None = None
    #: every try of every LLM step, in order (error class and latency each)
    attempts: tuple[Attempt, ...] = ()
    #: from the start of generation to the first token of the answer used; None if nothing streamed
    ttft_ms: float | None = None
    cache_hit: bool = False
    #: answered | interrupted (stream cut after text was shown) | static | cached
    llm_outcome: str | None = None

    def answer(
        self, text: str, *, notice: str | None = None, actions: tuple[Button, ...] = (), card: Card | None = None
    ) -> None:
        """End the turn with this reply; later stages are skipped.

        `notice` names a reply that is not a conversation answer (e.g. "rate_limited"): it is shown
        and recorded, but the message was not processed and neither enters the model's context.
        `actions` and `card` are offered with it (checked here: a bad offer fails in the code that made it).
        """
        check_offer(actions, card)
        self.reply_actions = actions
        self.reply_card = card
        self.reply_sources = ()
        self.reply_text = text
        self.notice = notice
        self.done = True

    def hold(self) -> None:
        """End the turn without a reply: the message is recorded, the bot says nothing."""
        self.reply_text = ""
        self.reply_actions, self.reply_card = (), None
        self.silent = True
        self.done = True

    def ask_for_person(self, cause: AskCause, reason: str) -> None:
        """Hand the conversation to a person once the turn ends; its reply becomes the bot's
        acknowledgement ("A person will reply here shortly")."""
        if self.person_asked is None:
            self.person_asked = PersonAsked(cause, reason)

    @property
    def latency_ms(self) -> float:
        return (time.monotonic() - self.started_at) * 1000
