"""Intent classification: which of a bot's intents a message is about, and how sure we are.

`LocalIntentClassifier` compares the message with each intent's example utterances on the offline
embeddings (no tokens, no network); `LLMIntentClassifier` asks the bot's model chain for one word
and falls back to the local one. `IntentStage` puts the result on the turn.
"""

from core.intents.base import ACTIVE_FLOW_FIELD, IntentResult
from core.intents.llm import LLMIntentClassifier
from core.intents.local import LocalIntentClassifier
from core.intents.stage import IntentStage

__all__ = ["ACTIVE_FLOW_FIELD", "IntentResult", "IntentStage", "LLMIntentClassifier", "LocalIntentClassifier"]
