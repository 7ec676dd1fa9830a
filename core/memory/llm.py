"""Fact extraction and summaries by the bot's own model chain, when one is configured.

Both run after the reply is sent, through the same chain as the answers (so the same keys,
fallbacks, breakers and timeouts apply). Extraction asks for structured output: one JSON object
`{"facts": [{"key": ..., "value": ...}]}`, sent as `FACTS_SCHEMA` (OpenAI-style endpoints
constrain the answer to it; Anthropic reads the same shape from the prompt) and validated here
before anything is stored; a model that answers anything else is treated like a failed call.
Whenever the chain cannot help (offline, every step failed, an unreadable answer), the local
extractor or summarizer does the job instead, so memory never depends on a model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import structlog
from pydantic import BaseModel, Field, ValidationError

from core.bots import BotConfig
from core.llm.base import ChatMessage, LLMRequest
from core.llm.chain import Chain, ChainSource
from core.memory.facts import KEY_PATTERN, MAX_VALUE_CHARS, ExtractedFact, LocalFactExtractor
from core.memory.summary import DEFAULT_SUMMARY_TOKENS, HEADER, LocalSummarizer, clip_tokens, in_context
from core.stores.base import StoredMessage, UserFact

__all__ = ["FACTS_SCHEMA", "ChainFactExtractor", "ChainSummarizer", "has_model", "may_state_facts", "parse_facts"]

#: the JSON Schema of the extraction answer (also spelled out to the model in the prompt)
FACTS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "facts": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"key": {"type": "string"}, "value": {"type": "string"}},
                "required": ["key", "value"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["facts"],
    "additionalProperties": False,
}

EXTRACT_PROMPT = """You extract facts that a user states about themselves, for a support assistant's memory.
Read the user's message and answer with one JSON object and nothing else, in exactly this shape:
{"facts": [{"key": "plan", "value": "Pro"}]}
Use these keys when they fit: name, email, phone, plan, location, order_number. For another lasting
personal fact use a short snake_case key (company, role, language, timezone). Only facts the user
states about themselves in this message; not questions, guesses, hypotheticals, or facts about
other people. Values are short (the plan name, not a sentence). If the user corrects an earlier
fact, give the new value. With no such fact, answer {"facts": []}."""

SUMMARY_PROMPT = """You keep the running summary of a support conversation, so the assistant can continue it
without the older messages. Update the summary with the new messages: keep what the user wants,
what they said about their situation, names, numbers, decisions, and what is still open; drop
greetings and small talk. Write plain sentences in the third person ("The user ..."), at most
{words} words. Answer with the updated summary only."""

_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.IGNORECASE)


class _Fact(BaseModel):
    key: str = Field(min_length=1, max_length=40)
    value: str = Field(min_length=1, max_length=MAX_VALUE_CHARS)


class _Facts(BaseModel):
    facts: list[_Fact]


_SENTENCES = re.compile(r"[^.!?\n]+[.!?]*")
_FIRST_PERSON = re.compile(r"\b(?:i|i['\u2019]m|im|i['\u2019]ve|my|mine|me|we|we['\u2019]re|our|us)\b", re.IGNORECASE)


def may_state_facts(text: str) -> bool:
    """Whether a message could tell something about its writer: a first-person sentence that is
    not a question. Most support messages are questions ("How do I export my tasks?"); asking a
    model to read those for facts would double the model calls for nothing."""
    for sentence in _SENTENCES.findall(text):
        if not sentence.rstrip().endswith("?") and _FIRST_PERSON.search(sentence):
            return True
    return False


def has_model(chain: Chain) -> bool:
    """Whether the chain has a real model (not only the offline provider, which cannot read)."""
    return any(step.provider.name != "offline" for step in chain.steps)


def parse_facts(text: str) -> list[ExtractedFact]:
    """The facts of a model's JSON answer; ValueError if it is not the agreed shape.

    Tolerates a Markdown code fence around the object (models add them even when told not to);
    items whose key is not snake_case are dropped rather than failing the whole answer.
    """
    body = _FENCE.sub("", text.strip())
    start, end = body.find("{"), body.rfind("}")
    if start < 0 or end < start:
        raise ValueError(f"no JSON object in the answer: {text[:80]!r}")
    try:
        parsed = _Facts.model_validate(json.loads(body[start : end + 1]))
    except (json.JSONDecodeError, ValidationError) as exc:
        raise ValueError(f"the answer is not {{'facts': [...]}}: {exc}") from exc
    facts: dict[str, str] = {}
    for item in parsed.facts:
        key = re.sub(r"[^a-z0-9]+", "_", item.key.strip().lower()).strip("_")
        value = " ".join(item.value.split())
        if KEY_PATTERN.match(key) and value:
            facts[key] = value
    return [ExtractedFact(key, value) for key, value in facts.items()]


class ChainFactExtractor:
    """Extraction by the bot's chain when it has a model; the local extractor otherwise."""

    def __init__(
        self,
        chain_for: ChainSource,
        *,
        fallback: LocalFactExtractor | None = None,
        max_tokens: int = 300,
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self._chain_for = chain_for
        self._local = fallback or LocalFactExtractor()
        self._max_tokens = max_tokens
        self._log = logger or structlog.get_logger("relaybot.memory")

    async def extract(
        self, text: str, *, bot: BotConfig, user_key: str, known: Sequence[UserFact]
    ) -> list[ExtractedFact]:
        local = self._local.extract_now(text)
        chain = self._chain_for(bot)
        if not has_model(chain) or not may_state_facts(text):
            return local
        prompt = EXTRACT_PROMPT
        if known:
            remembered = "\n".join(f"- {f.key}: {f.value}" for f in known)
            prompt += f"\n\nAlready known about this user (report a fact again only if it changed):\n{remembered}"
        request = LLMRequest(
            messages=(ChatMessage("system", prompt), ChatMessage("user", text)),
            max_tokens=self._max_tokens,
            temperature=0.0,
            json_schema=FACTS_SCHEMA,
        )
        result = await chain.run(request, user_key=user_key)
        if result.outcome in ("answered", "cached"):
            try:
                # The model reads what the patterns miss; where both found a key, the model's reading wins.
                merged = {f.key: f for f in local} | {f.key: f for f in parse_facts(result.text)}
                return list(merged.values())
            except ValueError as exc:
                await self._log.awarning("memory_extraction_unreadable", bot=bot.name, error=str(exc))
        else:
            await self._log.awarning("memory_extraction_failed", bot=bot.name, error=result.error)
        return local


class ChainSummarizer:
    """Summaries by the bot's chain when it has a model; the extractive summary otherwise."""

    def __init__(
        self,
        chain_for: ChainSource,
        *,
        max_tokens: int = DEFAULT_SUMMARY_TOKENS,
        fallback: LocalSummarizer | None = None,
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self._chain_for = chain_for
        self.max_tokens = max_tokens
        self._local = fallback or LocalSummarizer(max_tokens=max_tokens)
        self._log = logger or structlog.get_logger("relaybot.memory")

    async def summarize(
        self, previous: str | None, messages: Sequence[StoredMessage], *, bot: BotConfig, user_key: str
    ) -> str:
        chain = self._chain_for(bot)
        if not has_model(chain):
            return self._local.fold(previous, messages)
        lines = [f"{'User' if m.role == 'user' else 'Assistant'}: {m.content}" for m in messages if in_context(m)]
        so_far = previous.removeprefix(HEADER).strip() if previous else "(none yet)"
        request = LLMRequest(
            messages=(
                ChatMessage("system", SUMMARY_PROMPT.format(words=int(self.max_tokens / 1.3))),
                ChatMessage("user", f"Summary so far:\n{so_far}\n\nNew messages:\n" + "\n".join(lines)),
            ),
            max_tokens=self.max_tokens + 50,
            temperature=0.0,
        )
        result = await chain.run(request, user_key=user_key)
        if result.outcome in ("answered", "cached") and result.text.strip():
            return clip_tokens(f"{HEADER}\n{result.text.strip()}", self.max_tokens)
        await self._log.awarning("memory_summary_failed", bot=bot.name, error=result.error)
        return self._local.fold(previous, messages)
