"""Small talk: a message that is only a greeting, thanks or goodbye ("ok bye", "thanks, that's all").

Such a message asks for nothing, yet its embedding sits near whichever intent has a short, polite example:
"goodbye" scored 0.42 for a bot's cancellation intent (leaving) on a labelled set, above its threshold. The
local intent classifier therefore routes small talk by rule: to the intents whose own examples are small talk
(a bot's "general" or "greeting" intent), else to the default intent. A message with anything more in it
("thanks, how do I cancel?") is classified as usual. The offline provider answers it in kind rather than
searching the knowledge for "bye". Its own module: both use it, and neither should import the other.
"""

from __future__ import annotations

import re

__all__ = ["is_small_talk"]

_PHRASE = (
    r"(?:ok(?:ay)?|alright|thanks?(?:\s+(?:a\s+lot|so\s+much|very\s+much|again|anyway))?|thank\s+you"
    r"(?:\s+(?:so\s+much|very\s+much|again))?|thx|ty|cheers|much\s+appreciated|great|perfect|cool|nice|"
    r"(?:good)?\s*bye(?:\s*bye)?(?:\s+(?:now|for\s+now))?|see\s+(?:you|ya)(?:\s+(?:later|soon|tomorrow))?|"
    r"take\s+care|later|cya|have\s+a\s+(?:good|nice|great|lovely)\s+(?:one|day|evening|night|weekend)|"
    r"that'?s\s+(?:all|it|everything)(?:\s+for\s+now)?|that\s+is\s+all|that\s+(?:helped|helps|works|worked)|"
    r"hi|hello|hey|hiya|howdy|good\s+(?:morning|afternoon|evening|night)|you\s+too)"
)
_SMALL_TALK = re.compile(rf"^[\W_]*{_PHRASE}(?:[\W_]+{_PHRASE})*[\W_]*$", re.IGNORECASE)


def is_small_talk(text: str) -> bool:
    """Whether `text` is nothing but greetings, thanks and goodbyes."""
    return len(text) <= 80 and bool(_SMALL_TALK.match(text.strip()))
