""" "What do you remember about me?", "where do I live?" and "forget ...", answered from the stored facts.

Recognised by a few patterns and answered without the model: what is remembered about a person
is a matter of record, not something to paraphrase, and forgetting must happen for sure. The
patterns want the request at the start of the message ("please forget my phone number",
"can you forget that?"), so "don't forget that I'm on Pro" or "I forgot my password" are not
commands. "Forget that" drops the fact learned last; "forget my X" the fact X; "forget
everything" all of them.

A question about one fact ("what's my name?", "where do I live?", "do you know which plan I'm
on?") is answered from the store when that fact is stored, and is an ordinary question otherwise
(MemoryCommandStage lets the turn go on): "what's my balance?" is for the bot's knowledge, its
handlers or its model, and offline those had no way to show what the user told the bot.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Literal

from core.memory.facts import label
from core.stores.base import UserFact

__all__ = ["MemoryCommand", "fact_text", "parse_command", "recall_text"]

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
_END = r"(?:\s+again)?\s*[?.!]*\s*$"
# "Do you know where I live?", "can you tell me my email?", "remind me which plan I'm on": what
# follows is named as after "forget" (`_fact_key`).
_ASK_ABOUT = re.compile(
    _POLITE + r"(?:do\s+you\s+(?:know|remember)|tell\s+me|remind\s+me(?:\s+of)?)\s+(?P<what>.+?)" + _END,
    re.IGNORECASE | re.DOTALL,
)
# "What's my name?", "where am I based?", "which plan are we on?": a fact asked for directly. The
# thing asked for is a short name, three words at most ("my plan", "my email address"; not "my plan's
# storage limit" or "my best option for ten users").
_ASK_MY = re.compile(
    _POLITE
    + r"(?:what|whats)(?:['\u2019]s|\s+is|\s+was|\s+are)?\s+my\s+(?:(?:new|current)\s+)?"
    + r"(?P<thing>[\w-]+(?:\s+[\w-]+){0,2}?)"
    + _END,
    re.IGNORECASE,
)
_ASK_PHRASED: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(_POLITE + pattern + _END, re.IGNORECASE), key)
    for pattern, key in (
        (
            r"(?:where\s+(?:do|did)\s+(?:i|we)\s+(?:live|reside|stay|move\s+to)"
            r"|where\s+(?:am\s+i|are\s+we)\s+(?:based|located|living|from))",
            "location",
        ),
        (
            r"(?:what|which)\s+(?:plan|subscription|tier)\s+"
            r"(?:(?:am\s+i|are\s+we)\s+on|(?:do|did)\s+(?:i|we)\s+(?:have|use|pay\s+for|choose|pick))",
            "plan",
        ),
        (r"(?:who\s+am\s+i|what\s+(?:do\s+you\s+call\s+me|am\s+i\s+called))", "name"),
    )
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
_MY_OWN = re.compile(r"^my\s+(?:(?:new|current)\s+)?(?P<thing>[\w\s-]{1,40}?)$", re.IGNORECASE)
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
    kind: Literal["recall", "forget_all", "forget_last", "forget_key", "ask_key"]
    key: str | None = None
    #: how the user named it, for the answer ("phone number")
    named: str | None = None


@functools.lru_cache(maxsize=1024)  # asked twice a turn (the command stage, then the facts stage after the reply)
def parse_command(text: str) -> MemoryCommand | None:
    """The memory command `text` asks for, or None if it is an ordinary message."""
    if len(text) > 200:  # a command is a short request; a long message is a conversation
        return None
    if _RECALL.match(text):
        return MemoryCommand("recall")
    match = _FORGET.match(text)
    if match is None:
        return _asked_fact(text)
    what = " ".join(match.group("what").split())
    if _ALL.match(what):
        return MemoryCommand("forget_all")
    if _THAT.match(what):
        return MemoryCommand("forget_last")
    found = _fact_key(what, _MY)
    return None if found is None else MemoryCommand("forget_key", key=found[0], named=found[1])


def _asked_fact(text: str) -> MemoryCommand | None:
    """The fact a question asks for ("what's my name?"), or None."""
    for pattern, key in _ASK_PHRASED:
        if pattern.match(text):
            return MemoryCommand("ask_key", key=key, named=label(key).lower())
    direct = _ASK_MY.match(text)
    found: tuple[str, str] | None
    if direct is not None:
        found = _named_key(direct.group("thing"))
    else:
        about = _ASK_ABOUT.match(text)
        # Only "my X" here: "do you know the opening hours?" is a question for the bot.
        found = None if about is None else _fact_key(" ".join(about.group("what").split()), _MY_OWN)
    return None if found is None else MemoryCommand("ask_key", key=found[0], named=found[1])


def _fact_key(what: str, mine: re.Pattern[str]) -> tuple[str, str] | None:
    """(key, how the user named it) for a fact named as after "forget": "where I live", "my email"."""
    for pattern, key in _PHRASED:
        if pattern.match(what):
            return key, label(key).lower()
    thing = mine.match(what)
    return None if thing is None else _named_key(thing.group("thing"))


def _named_key(thing: str) -> tuple[str, str]:
    named = " ".join(thing.split()).lower()
    return _SYNONYMS.get(named) or re.sub(r"[^a-z0-9]+", "_", named).strip("_"), named


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


def fact_text(fact: UserFact) -> str:
    """The answer to a question about one stored fact, with when it was said."""
    value = fact.value
    if fact.key == "location":
        said = f"You're based in {value}"
    elif fact.key == "plan":
        said = f"You're on the {value} plan" if not value.lower().endswith(" plan") else f"You're on the {value}"
    else:
        said = f"Your {label(fact.key).lower()} is {value}"
    return f"{said} (you told me on {fact.updated_at:%Y-%m-%d}). If that has changed, just tell me."
