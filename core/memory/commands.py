""" "What do you remember about me?" and "forget ...", answered from the stored facts.

Recognised by a few patterns and answered without the model: what is remembered about a person
is a matter of record, not something to paraphrase, and forgetting must happen for sure. The
patterns want the request at the start of the message ("please forget my phone number",
"can you forget that?"), so "don't forget that I'm on Pro" or "I forgot my password" are not
commands. "Forget that" drops the fact learned last; "forget my X" the fact X; "forget
everything" all of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from core.memory.facts import label
from core.stores.base import UserFact

__all__ = ["MemoryCommand", "parse_command", "recall_text"]

_POLITE = (
    r"^\s*(?:(?:ok(?:ay)?|hey|hi|now|and|so|also|please)[,!\s]+)*(?:(?:can|could|would|will)\s+you\s+)?(?:please\s+)?"
)
_RECALL = re.compile(
    _POLITE
    + r"(?:what\s+(?:do|did|else\s+do)\s+you\s+(?:remember|know|recall)(?:\s+about\s+me)?"
    + r"|what\s+have\s+you\s+(?:remembered|stored|saved|kept)(?:\s+about\s+me)?"
    + r"|what\s+(?:information|info|data|facts)\s+(?:do\s+you\s+have|have\s+you\s+(?:got|stored))"
    + r"(?:\s+(?:about|on)\s+me)?"
    + r"|(?:tell\s+me|show\s+me|list)\s+what\s+you\s+(?:remember|know)(?:\s+about\s+me)?"
    + r"|do\s+you\s+remember\s+(?:me|anything\s+about\s+me))"
    + r"\s*[?.!]*\s*$",
    re.IGNORECASE,
)
_FORGET = re.compile(_POLITE + r"forget\s+(?P<what>.+?)\s*[.!?]*\s*$", re.IGNORECASE | re.DOTALL)
_ALL = re.compile(
    r"^(?:everything|all|it\s+all|all\s+of\s+it|me|about\s+me|all\s+about\s+me|everything\s+(?:about\s+me|"
    r"you\s+(?:know|remember)(?:\s+about\s+me)?))$",
    re.IGNORECASE,
)
_THAT = re.compile(r"^(?:that|it|this|what\s+i\s+(?:just\s+)?said|the\s+last\s+(?:one|thing))$", re.IGNORECASE)
_MY = re.compile(
    r"^(?:my|the)\s+(?:(?:new|old|current|previous|updated|last)\s+)?(?P<thing>[\w\s-]{1,40}?)$", re.IGNORECASE
)
_IM = r"(?:i\s*am|i['\u2019]m|im)"
_WERE = r"(?:we\s*are|we['\u2019]re)"
# Natural ways to point at a fact without naming its key: "forget where I live", "forget which plan
# I'm on", "forget what you call me". Each maps to the key the extractor stores it under; the
# phrase is what the answer repeats ("I don't have where you live stored" would read badly, so the
# answer uses the key's label).
_PHRASED: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), key)
    for pattern, key in (
        (
            r"^where\s+(?:i|we)\s+(?:live|reside|stay|moved(?:\s+to)?|(?:am|are|['\u2019]m|['\u2019]re)"
            r"(?:\s+(?:based|located|living|from))?)$"
            rf"|^where\s+{_IM}(?:\s+(?:based|located|living|from))?$",
            "location",
        ),
        (
            rf"^(?:what|which)\s+(?:plan|subscription|tier)\s+(?:(?:{_IM}|{_WERE})\s+on|(?:i|we)\s+(?:have|use|pay\s+for))$",
            "plan",
        ),
        (
            rf"^(?:what|how)\s+(?:{_IM}\s+called|my\s+name\s+is|to\s+call\s+me|you\s+(?:should\s+)?call\s+me)$"
            r"|^who\s+i\s+am$",
            "name",
        ),
        (r"^(?:what\s+)?my\s+(?:e-?mail|email\s+address)\s+is$", "email"),
        (r"^(?:what\s+)?my\s+(?:phone\s+|mobile\s+)?(?:number|phone)\s+is$", "phone"),
        (r"^(?:what|which)\s+(?:is\s+)?my\s+order(?:\s+number)?(?:\s+is)?$", "order_number"),
    )
)

# How people name the common facts; anything else is matched against the stored keys themselves.
_SYNONYMS = {
    "name": "name",
    "full name": "name",
    "email": "email",
    "e-mail": "email",
    "email address": "email",
    "address": "email",
    "phone": "phone",
    "phone number": "phone",
    "number": "phone",
    "mobile": "phone",
    "mobile number": "phone",
    "cell": "phone",
    "plan": "plan",
    "subscription": "plan",
    "tier": "plan",
    "location": "location",
    "city": "location",
    "place": "location",
    "order": "order_number",
    "order number": "order_number",
    "order id": "order_number",
}


@dataclass(frozen=True, slots=True)
class MemoryCommand:
    kind: Literal["recall", "forget_all", "forget_last", "forget_key"]
    key: str | None = None
    #: how the user named it, for the answer ("phone number")
    named: str | None = None


def parse_command(text: str) -> MemoryCommand | None:
    """The memory command `text` asks for, or None if it is an ordinary message."""
    if len(text) > 200:  # a command is a short request; a long message is a conversation
        return None
    if _RECALL.match(text):
        return MemoryCommand("recall")
    match = _FORGET.match(text)
    if match is None:
        return None
    what = " ".join(match.group("what").split())
    if _ALL.match(what):
        return MemoryCommand("forget_all")
    if _THAT.match(what):
        return MemoryCommand("forget_last")
    for pattern, key in _PHRASED:
        if pattern.match(what):
            return MemoryCommand("forget_key", key=key, named=label(key).lower())
    thing = _MY.match(what)
    if thing is None:
        return None
    named = thing.group("thing").strip().lower()
    key = _SYNONYMS.get(named) or re.sub(r"[^a-z0-9]+", "_", named).strip("_")
    return MemoryCommand("forget_key", key=key, named=named)


def recall_text(facts: list[UserFact]) -> str:
    if not facts:
        return (
            "I don't remember anything about you yet. When you tell me things like your name, your plan "
            "or where you're based, I'll keep them for our next conversations; you can ask me what I "
            "remember, or to forget it, at any time."
        )
    lines = [f"- **{label(f.key)}:** {f.value} (you told me on {f.updated_at:%Y-%m-%d})" for f in facts]
    return (
        "Here's what I remember about you:\n\n"
        + "\n".join(lines)
        + "\n\nSay “forget my "
        + label(facts[0].key).lower()
        + "” to drop one of these, or “forget everything” to clear them all."
    )
