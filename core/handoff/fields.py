"""How a conversation's handoff state is kept in its session's fields (shared by every process).

    handoff.state      "" (the bot) | pending_human | human
    handoff.since      when a person was asked for (ISO 8601, UTC)
    handoff.cause      who asked (handler, tool, model, user, operator)
    handoff.reason     why, in a sentence
    handoff.operator   the operator holding it while `human`
    handoff.acked      "1" once the user was told a person will reply
    reply_to           the channel's address for a person's replies (kept from the user's messages)

Session fields only merge, so "" means unset; every transition is one compare-and-set
(`SessionStore.swap_fields`) on `handoff.state`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from core.handoff.desk import HandoffState

STATE = "handoff.state"
SINCE = "handoff.since"
CAUSE = "handoff.cause"
REASON = "handoff.reason"
OPERATOR = "handoff.operator"
ACKED = "handoff.acked"
REPLY_TO = "reply_to"

#: the stored value of each state (the bot's is the unset field)
STORED = {HandoffState.BOT: "", HandoffState.PENDING_HUMAN: "pending_human", HandoffState.HUMAN: "human"}


def state_of(fields: Mapping[str, str]) -> HandoffState:
    """The handoff state the session's fields hold (a value this version does not know reads as the bot)."""
    value = fields.get(STATE, "")
    if value == "pending_human":
        return HandoffState.PENDING_HUMAN
    if value == "human":
        return HandoffState.HUMAN
    return HandoffState.BOT


def held(fields: Mapping[str, str]) -> bool:
    """Whether a person was asked for or holds the conversation: the bot stays silent."""
    return state_of(fields) is not HandoffState.BOT


def since(fields: Mapping[str, str]) -> datetime | None:
    raw = fields.get(SINCE, "")
    try:
        return datetime.fromisoformat(raw) if raw else None
    except ValueError:
        return None


def cleared() -> dict[str, str]:
    """The fields of a conversation back with the bot."""
    return {STATE: "", SINCE: "", CAUSE: "", REASON: "", OPERATOR: "", ACKED: ""}
