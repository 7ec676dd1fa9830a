"""What a classification says, and the session field that pins a conversation to a running flow."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

IntentMethod = Literal["local", "llm", "flow"]

#: session field naming the intent whose handler runs a multi-step flow (empty: none). While it is
#: set, the next message goes to that handler unclassified: a "yes" is about the pending question.
ACTIVE_FLOW_FIELD = "flow"


@dataclass(frozen=True, slots=True, kw_only=True)
class IntentResult:
    """The chosen intent and its confidence.

    Local: the bot's trained model chooses the intent; `confidence` is the chosen intent's score (its
    similarity to the message: centroid and nearest example mixed, about 0..1, see core.intents.local), which
    need not be the highest of `scores`; below the bot's threshold the intent is the default one and
    `candidate` names the intent the model chose. LLM: 1.0 when the model answered with exactly one intent name.
    """

    intent: str
    confidence: float
    method: IntentMethod
    candidate: str | None = None
    #: every intent's score (local), for the turn log and for tuning thresholds
    scores: dict[str, float] = field(default_factory=dict)
    tokens_in: int = 0
    tokens_out: int = 0
