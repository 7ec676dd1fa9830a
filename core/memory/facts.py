"""Facts users state about themselves, found without a language model.

The local extractor knows a few common facts (name, email, phone, plan, location, order number)
by the way people state them: "My name is Alice", "I'm on the Pro plan", "I'm based in Tokyo".
Each pattern wants the speaker to be talking about themselves ("my", "I'm", "call me"), so a
question about someone else's plan or an email address pasted for a colleague is not taken as
the user's own. It misses facts phrased any other way; the LLM extractor is there for those.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from core.bots import BotConfig
from core.stores.base import UserFact

__all__ = [
    "KEY_PATTERN",
    "MAX_VALUE_CHARS",
    "ExtractedFact",
    "FactExtractor",
    "LocalFactExtractor",
    "label",
]

#: a fact's key: short snake_case, so the LLM's own keys ("company", "preferred_language") fit too
KEY_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
MAX_VALUE_CHARS = 200

_LABELS = {"email": "Email", "order_number": "Order number", "phone": "Phone"}


def label(key: str) -> str:
    """How a key reads to a person: "order_number" -> "Order number"."""
    return _LABELS.get(key) or key.replace("_", " ").capitalize()


@dataclass(frozen=True, slots=True)
class ExtractedFact:
    key: str
    value: str


class FactExtractor(Protocol):
    async def extract(
        self, text: str, *, bot: BotConfig, user_key: str, known: Sequence[UserFact]
    ) -> list[ExtractedFact]:
        """The facts the user states about themselves in `text` (their own message)."""
        ...


# A name: one to three capitalised words ("Alice", "Mary-Jane O'Neil", "José García").
_NAME = r"(?P<value>[A-ZÀ-Þ][\w'\u2019-]*(?:\s+(?!I\b|I['\u2019])[A-ZÀ-Þ][\w'\u2019-]*){0,2})"
# A place: capitalised words, optionally ", Country" ("Tokyo", "New York", "Lyon, France"); a
# following "I" starts the next clause ("... in Lyon. I'm on ...").
_PLACE = (
    r"(?P<value>[A-ZÀ-Þ][\w'\u2019-]*"
    r"(?:(?:\s+|,\s*|\s+(?:de|del|la|le|am|upon|on)\s+)(?!I\b|I['\u2019])[A-ZÀ-Þ][\w'\u2019-]*){0,3})"
)
_I_AM = r"(?:i\s*am|i['\u2019]m|im)"
_WE_ARE = r"(?:we\s*are|we['\u2019]re)"

# A word only "on" (`I'm on the Pro plan`): as a substring it is in most messages.
_ON = re.compile(r"\son\b", re.IGNORECASE)
# The one letter `re.IGNORECASE` equates with an ASCII letter that casefold() leaves as it is.
_FOLD_LIKE_RE = str.maketrans({"\u0131": "i"})

# (key, gate, pattern). Lead-in words are case-insensitive (`(?i:...)`); names and places must be
# capitalised, which is what tells "I'm based in Tokyo" from "I'm based in the office".
# Patterns are tried in order and each key is taken once per message.
# The gate lists literals of which every match holds one (in the case-folded text): most messages
# state no fact, and checking a few substrings costs a fraction of running the pattern.
_PATTERNS: tuple[tuple[str, tuple[str, ...], re.Pattern[str]], ...] = tuple(
    (key, gate, re.compile(pattern))
    for key, gate, pattern in (
        ("name", ("name",), r"(?i:\bmy\s+(?:new\s+|full\s+)?name\s*(?:is|['\u2019]s)\s+(?:now\s+)?)" + _NAME),
        ("name", ("call",), r"(?i:\b(?:call\s+me|" + _I_AM + r"\s+called)\s+)" + _NAME),
        # Typed in lower case ("my name is alice"): one word, taken only after "my name is".
        ("name", ("name",), r"(?i:\bmy\s+name\s*(?:is|['\u2019]s)\s+)(?P<lower>[a-zà-ÿ][\w'\u2019-]+)\b"),
        ("email", ("@",), r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"),
        (
            "phone",
            ("number", "phone", "mobile", "cell", "call", "text", "reach"),
            r"(?i:\b(?:my\s+(?:new\s+)?(?:(?:phone|mobile|cell|telephone|contact)\s+)?(?:number|phone|mobile|cell)\s+is(?:\s+now)?"
            r"|(?:call|text|reach)\s+me\s+(?:at|on))\s+)(?P<value>\+?\d[\d\s().-]{5,}\d)",
        ),
        (
            "plan",
            ("on", "plan", "subscription", "tier"),
            r"(?i:\b(?:(?:" + _I_AM + r"|" + _WE_ARE + r")\s+(?:currently\s+|still\s+|now\s+)?on"
            r"|(?:my|our)\s+(?:current\s+)?(?:plan|subscription|tier)\s+is)\s+(?:the\s+|a\s+|an\s+)?)"
            r"(?P<value>[A-Za-z][\w+-]*)(?P<noun>(?i:\s+(?:plan|subscription|tier)\b))?",
        ),
        (
            # A change of plan: "I upgraded to Pro", "we downgraded to the Free plan"; after "switched to"
            # or "moved to" only with the noun ("I switched to Chrome" is not a plan).
            "plan",
            ("upgraded", "downgraded"),
            r"(?i:\b(?:i|we)(?:\s+have|['\u2019]ve)?\s+(?:just\s+|now\s+)?(?:upgraded|downgraded)\s+(?:to|our\s+plan\s+to)\s+"
            r"(?:the\s+|a\s+|an\s+)?)"
            # Without the noun, only a name that ends the clause ("I upgraded to Windows 11" is no plan).
            r"(?P<value>[A-Za-z][\w+-]*)(?:(?P<noun>(?i:\s+(?:plan|subscription|tier)\b))|(?=\s*(?:[.,;!?]|$)))",
        ),
        (
            "plan",
            ("plan", "subscription", "tier"),
            r"(?i:\b(?:i|we)(?:\s+have|['\u2019]ve)?\s+(?:just\s+|now\s+)?(?:switched|moved|changed)\s+(?:over\s+)?to\s+"
            r"(?:the\s+|a\s+|an\s+)?)"
            r"(?P<value>[A-Za-z][\w+-]*)(?P<noun>(?i:\s+(?:plan|subscription|tier)\b))",
        ),
        (
            # "I have the Pro plan", "we pay for the business subscription": here the noun is required,
            # or "I use Chrome" would be a plan.
            "plan",
            ("plan", "subscription", "tier"),
            r"(?i:\b(?:i|we)\s+(?:have|use|pay\s+for|bought|subscribed\s+to)\s+(?:the\s+|a\s+|an\s+)?)"
            r"(?P<value>[A-Za-z][\w+-]*)(?P<noun>(?i:\s+(?:plan|subscription|tier)\b))",
        ),
        (
            "location",
            ("based", "located", "living", "live", "reside", "location", "city"),
            r"(?i:\b(?:(?:" + _I_AM + r"|" + _WE_ARE + r")\s+(?:currently\s+|now\s+)?(?:based|located|living)\s+in"
            r"|(?:i|we)\s+(?:now\s+|currently\s+)?(?:live|reside)\s+in|(?:my|our)\s+(?:new\s+)?(?:location|city)\s+is)\s+)"
            + _PLACE,
        ),
        (
            # A statement of change: "(Actually) I moved to Lisbon", "we've just relocated to Lyon, France".
            # The new value replaces the stored one (facts are kept one per key).
            "location",
            ("moved", "relocated"),
            r"(?i:\b(?:i|we)(?:\s+have|['\u2019]ve)?\s+(?:just\s+|recently\s+|now\s+)?(?:moved|relocated)\s+"
            r"(?:to|over\s+to)\s+)" + _PLACE + r"(?!\s+(?i:plan|subscription|tier)\b)",
        ),
        (
            "order_number",
            ("order",),
            r"(?i:\border\s*(?:number|no\.?|id|#)?\s*(?:is\s*)?[:#]?\s*)(?P<value>#?[A-Za-z0-9][A-Za-z0-9-]{3,})\b",
        ),
    )
)

# An email address counts only when the user says it is theirs ("my email is", "reach me at").
_EMAIL_OWNER = re.compile(
    r"\b(?:my\s+(?:new\s+|updated\s+|current\s+)?(?:e-?mail|email\s+address|address|contact)|(?:e-?mail|reach|contact|write\s+to)\s+me|me\s+at|"
    r"(?:i\s*am|i['\u2019]m)\s+at)\b",
    re.IGNORECASE,
)
# Words that follow "I'm on the ..." or "I have a ..." without being a plan.
_NOT_PLANS = {
    "phone", "way", "road", "train", "bus", "move", "go", "line", "call", "site", "page", "website", "app",
    "question", "problem", "issue", "account", "bug", "few", "lot", "new", "look", "bit", "moment", "meeting",
    "team", "same", "other", "old",
}  # fmt: skip
_PLAN_IS = re.compile(r"\b(?:plan|subscription|tier)\s+is\b", re.IGNORECASE)
_NOT_NAMES = {"not", "the", "a", "an", "on", "in", "unknown", "irrelevant", "private", "secret", "none", "no"}


_GATE_WORDS = tuple(sorted({word for _, gate, _ in _PATTERNS for word in gate} - {"on"}))


def gate_words(text: str) -> set[str]:
    """The gate words `text` holds: a pattern whose gate holds none of them cannot match it."""
    folded = text.casefold().translate(_FOLD_LIKE_RE)
    present = {word for word in _GATE_WORDS if word in folded}
    if _ON.search(text):
        present.add("on")
    return present


class LocalFactExtractor:
    """Regular expressions for the common facts: instant, deterministic, no model needed."""

    async def extract(
        self, text: str, *, bot: BotConfig | None = None, user_key: str = "", known: Sequence[UserFact] = ()
    ) -> list[ExtractedFact]:
        return self.extract_now(text)

    def extract_now(self, text: str) -> list[ExtractedFact]:
        found: dict[str, str] = {}
        present = gate_words(text)
        for key, gate, pattern in _PATTERNS:
            if key in found or present.isdisjoint(gate):
                continue
            value = self._match(key, pattern, text)
            if value:
                found[key] = value[:MAX_VALUE_CHARS]
        return [ExtractedFact(key, value) for key, value in found.items()]

    @staticmethod
    def _match(key: str, pattern: re.Pattern[str], text: str) -> str | None:
        if key == "email":
            for match in pattern.finditer(text):
                if _EMAIL_OWNER.search(text[max(0, match.start() - 40) : match.start()]):
                    return match.group(0).rstrip(".").lower()
            return None
        for match in pattern.finditer(text):
            groups = match.groupdict()
            if groups.get("lower"):
                word = groups["lower"]
                if word.lower() in _NOT_NAMES:
                    continue
                return word.capitalize()
            value = match.group("value").strip().rstrip(".,;:!?")
            if key == "plan":
                # "I'm on the Pro plan", "my plan is Business": a capitalised name, or any word
                # followed by plan/subscription/tier ("we have the business plan").
                named = value[:1].isupper() or match.group("noun") or _PLAN_IS.search(match.group(0))
                # "I'm on the team" is not a plan; "I'm on the Team plan" is.
                if (value.lower() in _NOT_PLANS and not match.group("noun")) or not named:
                    continue
                value = value if any(c.isupper() for c in value) else value.capitalize()
            elif key == "phone":
                if not 7 <= len(re.sub(r"\D", "", value)) <= 15:
                    continue
                value = " ".join(value.split())
            elif key == "order_number":
                value = value.lstrip("#").upper()
                if not any(c.isdigit() for c in value):
                    continue
            return value
        return None
