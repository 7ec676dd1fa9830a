"""What a conversation was last offered: the buttons of its newest reply, read from the history.

RecordStage keeps a reply's buttons with it (core.actions.offer_to_meta), and the history is shared
by every process, so any adapter can check a click against the offer before queueing it: a forged or
stale action id is refused at the edge and nothing is stored. A click is only ever checked after
the reply that offered it was recorded (the reply is recorded before it is sent).
"""

from __future__ import annotations

from dataclasses import dataclass

from core.actions import Action, Button, offer_from_meta
from core.stores.base import HistoryStore

__all__ = ["Offer", "last_offer"]

#: assistant messages read to skip notices (a rate-limit notice does not withdraw the offer before it)
_LOOK_BACK = 5


@dataclass(frozen=True, slots=True)
class Offer:
    """The buttons of the conversation's newest reply (its card's included); `seq` is that reply's."""

    seq: int | None = None
    buttons: tuple[Button, ...] = ()

    def find(self, action_id: str) -> Button | None:
        return next((b for b in self.buttons if b.id == action_id), None)

    def click(self, button: Button) -> Action:
        """The click on one of these buttons, as the envelope carries it."""
        return Action(id=button.id, value=button.value, message_id=str(self.seq) if self.seq is not None else None)

    @property
    def ids(self) -> list[str]:
        return [b.id for b in self.buttons]


async def last_offer(history: HistoryStore, session_id: str) -> Offer:
    """The newest reply that is not a notice, and its buttons (none: an empty offer)."""
    replies = await history.after(session_id, 0, role="assistant", last=_LOOK_BACK)
    for message in reversed(replies):
        if message.is_notice:
            continue
        buttons, card = offer_from_meta(message.meta)
        return Offer(seq=message.seq, buttons=(*buttons, *(card.actions if card else ())))
    return Offer()
