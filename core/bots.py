"""Bot definitions: `bots/<name>/bot.toml` (+ prompt files), validated into `BotConfig`."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from core.errors import BotNotFound, ConfigError

BOT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")

DEFAULT_STATIC_FALLBACK = (
    "I'm having trouble processing your request right now. Please try again in a moment or contact support."
)


class Limits(BaseModel):
    messages_per_minute: int = Field(20, ge=1)
    messages_per_hour: int = Field(200, ge=1)
    tokens_per_day: int = Field(500_000, ge=1)
    #: every user of the bot together, per UTC day: past it, channels take no more messages
    bot_tokens_per_day: int = Field(5_000_000, ge=1)


class HistoryWindow(BaseModel):
    """How much of the conversation the model sees: the newest messages within both bounds."""

    max_messages: int = Field(20, ge=0)
    token_budget: int = Field(2000, ge=0)


class Models(BaseModel):
    """The LLM fallback chain, first to last, then the static message.

    Steps are "provider:model": `openai` and `anthropic` (keys and base URLs from the settings),
    or a name under `[models.endpoints]` (any OpenAI-compatible server, or a per-bot base URL and
    key for the built-in two). Timeouts and retries apply to every step unless `[models.steps]`
    overrides them for one; the breaker counts failures per provider + model.
    """

    class Endpoint(BaseModel):
        """Where a provider name points: `api` ("openai" or "anthropic"; implied for those two
        names), `base_url`, and `api_key_env`, the environment variable holding its key (unset on
        a custom endpoint: a keyless local server such as Ollama)."""

        api: Literal["openai", "anthropic"] | None = None
        base_url: str | None = None
        api_key_env: str | None = None

    class StepOverride(BaseModel):
        first_token_timeout_seconds: float | None = Field(None, gt=0)
        step_timeout_seconds: float | None = Field(None, gt=0)
        retries_per_step: int | None = Field(None, ge=0, le=5)

    chain: list[str] = Field(default_factory=list)
    static_fallback: str = DEFAULT_STATIC_FALLBACK
    interrupted_notice: str = "_(My answer was cut off here, sorry. Please ask again if you need the rest.)_"
    first_token_timeout_seconds: float = Field(10.0, gt=0)
    step_timeout_seconds: float = Field(60.0, gt=0)
    latency_budget_seconds: float = Field(60.0, gt=0)
    retries_per_step: int = Field(1, ge=0, le=5)
    max_retry_wait_seconds: float = Field(5.0, ge=0)
    breaker_failures: int = Field(5, ge=1)
    breaker_cooldown_seconds: float = Field(30.0, gt=0)
    cache_ttl_seconds: float = Field(0.0, ge=0)
    cache_shared: bool = False
    max_tokens: int = Field(1024, ge=1)
    temperature: float = Field(0.3, ge=0, le=2)
    endpoints: dict[str, Endpoint] = Field(default_factory=dict)
    steps: dict[str, StepOverride] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_chain(self) -> Models:
        for name, endpoint in self.endpoints.items():
            if name in ("openai", "anthropic"):
                if endpoint.api not in (None, name):
                    raise ValueError(f"[models.endpoints.{name}] api must be {name!r} (or left out)")
                endpoint.api = name  # type: ignore[assignment]  # narrowed by the check above
            elif endpoint.api is None or not endpoint.base_url:
                raise ValueError(f'[models.endpoints.{name}] needs api = "openai" or "anthropic" and a base_url')
        known = {"openai", "anthropic", *self.endpoints}
        for step in self.chain:
            provider, sep, model = step.partition(":")
            if not sep or not provider or not model:
                raise ValueError(f'[models] chain step {step!r} must be "provider:model", e.g. "openai:gpt-4o"')
            if provider not in known:
                raise ValueError(
                    f"[models] chain step {step!r}: unknown provider {provider!r}; use openai, anthropic, "
                    f"or add [models.endpoints.{provider}] with api and base_url"
                )
        for step in self.steps:
            if step not in self.chain:
                raise ValueError(f'[models.steps."{step}"] names no step of the chain {self.chain}')
        return self


class Intent(BaseModel):
    """One thing users come for: what it means, examples of how they say it, where to look it up,
    and who answers it (`handler`: a function registered in handlers.py with `@bot.intent(...)`;
    by default the one registered under the intent's own name, else the LLM)."""

    description: str = ""
    examples: list[str] = Field(default_factory=list)
    #: the knowledge set retrieval searches for this intent; None: the bot's default set
    knowledge: str | None = None
    handler: str | None = None


class Intents(BaseModel):
    """`[intents]`: the classifier's settings, and one `[intents.<name>]` table per intent.

    `classifier = "local"` compares the message with each intent's examples on the offline
    embeddings (no tokens); `"llm"` asks the bot's model chain for one word and falls back to the
    local classifier when the answer names no intent. Below `threshold` (cosine similarity to the
    best intent's examples) a message goes to `default`.
    """

    classifier: Literal["local", "llm"] = "local"
    threshold: float = Field(0.25, ge=0, le=1)
    default: str = "general"
    items: dict[str, Intent] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _split(cls, data: object) -> object:
        # In TOML the intents sit beside the settings ([intents.billing] next to `threshold`).
        if isinstance(data, dict) and "items" not in data:
            settings = {k: v for k, v in data.items() if not isinstance(v, dict)}
            items = {k: v for k, v in data.items() if isinstance(v, dict)}
            return {**settings, "items": items}
        return data

    @model_validator(mode="after")
    def _check(self) -> Intents:
        for name, intent in self.items.items():
            if not BOT_NAME.match(name):
                raise ValueError(f"[intents.{name}]: intent names must be lowercase letters, digits, '-' or '_'")
            if name != self.default and not intent.examples:
                raise ValueError(f"[intents.{name}] needs examples = [...] (utterances the classifier compares with)")
        if self.items and self.default not in self.items:
            raise ValueError(f"[intents] default = {self.default!r} names no [intents.<name>] table")
        return self


class Tools(BaseModel):
    """`[tools]`: which declared tools the LLM may call, and what the tools are configured with."""

    #: tools offered to the model by function calling (handlers can call any declared tool)
    llm: list[str] = Field(default_factory=list)
    timeout_seconds: float = Field(10.0, gt=0)
    #: model → tools → model rounds per turn before the model must answer
    max_rounds: int = Field(3, ge=1, le=10)
    #: string settings the bot's tools read (e.g. ticket_webhook_url)
    settings: dict[str, str] = Field(default_factory=dict)


class BotKnowledge(BaseModel):
    """`[knowledge]`: the bot's documents (`folder`, ingested into `default_set`) and retrieval overrides."""

    enabled: bool = True
    folder: str = "knowledge"
    default_set: str = Field("default", pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    top_k: int | None = Field(None, ge=1, le=50)
    min_score: float | None = Field(None, ge=-1, le=1)


class Handoff(BaseModel):
    """`[handoff]`: handing a conversation to a person (core/handoff) and what the user is told."""

    #: a request nobody took for this long goes back to the bot (the user is told `timeout_message`)
    timeout_seconds: float = Field(900.0, gt=0)
    #: the one reply a user gets when a person is asked for; later messages get none until a person answers
    acknowledgement: str = "A person will reply here shortly."
    timeout_message: str = (
        "Sorry, nobody from the team is free right now. I'm back to help in the meantime; "
        "ask for a person again later if you need one."
    )
    #: told to the user when an operator hands the conversation back ("" says nothing)
    handed_back_message: str = ""
    #: the user asking for a person in their own words (regular expressions, case-insensitive)
    user_phrases: list[str] = Field(
        default_factory=lambda: [
            r"\b(talk|speak|chat)\s+(to|with)\s+(a|an|some|the)?\s*(real\s+)?(person|human|agent|someone|operator)\b",
            r"\b(real|live)\s+(person|human|agent)\b",
            r"\bhuman\s+agent\b",
        ]
    )

    @field_validator("user_phrases")
    @classmethod
    def _check_phrases(cls, phrases: list[str]) -> list[str]:
        for phrase in phrases:
            try:
                re.compile(phrase)
            except re.error as exc:
                raise ValueError(f"[handoff] user_phrases: {phrase!r} is not a regular expression: {exc}") from exc
        return phrases


class BotConfig(BaseModel):
    name: str
    display_name: str = ""
    system_prompt: str = ""
    system_prompt_file: str | None = None
    welcome: str = ""
    limits: Limits = Field(default_factory=Limits)
    history: HistoryWindow = Field(default_factory=HistoryWindow)
    models: Models = Field(default_factory=Models)
    intents: Intents = Field(default_factory=Intents)
    tools: Tools = Field(default_factory=Tools)
    knowledge: BotKnowledge = Field(default_factory=BotKnowledge)
    handoff: Handoff = Field(default_factory=Handoff)
    path: Path | None = Field(None, exclude=True)

    @model_validator(mode="after")
    def _check(self) -> BotConfig:
        if not BOT_NAME.match(self.name):
            raise ValueError(f"bot name {self.name!r} must be lowercase letters, digits, '-' or '_'")
        if not self.display_name:
            self.display_name = self.name.replace("-", " ").title()
        return self


def load_bot(bot_dir: Path) -> BotConfig:
    """Read and validate one bot folder; errors name the file and the field to fix."""
    toml_path = bot_dir / "bot.toml"
    try:
        raw = tomllib.loads(toml_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise BotNotFound(bot_dir.name, str(bot_dir.parent)) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{toml_path}: invalid TOML: {exc}") from exc
    raw.setdefault("name", bot_dir.name)
    try:
        bot = BotConfig.model_validate({**raw, "path": bot_dir})
    except ValidationError as exc:
        raise ConfigError(f"{toml_path}: {exc}") from exc
    if bot.name != bot_dir.name:
        raise ConfigError(f"{toml_path}: name {bot.name!r} must match its folder name {bot_dir.name!r}")
    if bot.system_prompt_file:
        prompt_path = bot_dir / bot.system_prompt_file
        try:
            bot.system_prompt = prompt_path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{toml_path}: cannot read system_prompt_file {prompt_path}: {exc}") from exc
    return bot


class BotRegistry:
    """The bots this process serves, loaded once at start-up."""

    def __init__(self, bots: dict[str, BotConfig], *, default: str) -> None:
        if not bots:
            raise ConfigError("no bots configured: add bots/<name>/bot.toml or set RELAYBOT_BOTS_DIR")
        self._bots = bots
        self.default = default if default in bots else next(iter(bots))

    @classmethod
    def from_dir(cls, bots_dir: Path, *, default: str) -> BotRegistry:
        if not bots_dir.is_dir():
            raise ConfigError(
                f"bots folder {bots_dir} not found: run relaybot from the project folder or set RELAYBOT_BOTS_DIR"
            )
        bots = {
            child.name: load_bot(child)
            for child in sorted(bots_dir.iterdir())
            if child.is_dir() and (child / "bot.toml").is_file()
        }
        return cls(bots, default=default)

    def get(self, name: str) -> BotConfig | None:
        return self._bots.get(name)

    def require(self, name: str) -> BotConfig:
        bot = self._bots.get(name)
        if bot is None:
            raise BotNotFound(name, "bots")
        return bot

    def __iter__(self) -> Iterator[BotConfig]:
        return iter(self._bots.values())

    def __contains__(self, name: object) -> bool:
        return name in self._bots
