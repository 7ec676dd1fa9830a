"""Bot definitions: `bots/<name>/bot.toml` (+ prompt files), validated into `BotConfig`."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError, model_validator

from core.errors import BotNotFound, ConfigError

BOT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")

DEFAULT_STATIC_FALLBACK = (
    "I'm having trouble processing your request right now. Please try again in a moment or contact support."
)


class Limits(BaseModel):
    messages_per_minute: int = Field(20, ge=1)
    messages_per_hour: int = Field(200, ge=1)
    tokens_per_day: int = Field(500_000, ge=1)


class HistoryWindow(BaseModel):
    """How much of the conversation the model sees: the newest messages within both bounds."""

    max_messages: int = Field(20, ge=0)
    token_budget: int = Field(2000, ge=0)


class Models(BaseModel):
    """The LLM fallback chain, first to last, then the static message."""

    chain: list[str] = Field(default_factory=list)
    static_fallback: str = DEFAULT_STATIC_FALLBACK


class BotConfig(BaseModel):
    name: str
    display_name: str = ""
    system_prompt: str = ""
    system_prompt_file: str | None = None
    welcome: str = ""
    limits: Limits = Field(default_factory=Limits)
    history: HistoryWindow = Field(default_factory=HistoryWindow)
    models: Models = Field(default_factory=Models)
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
                f"bots folder {bots_dir} not found: run relaybot from the project folder "
                f"or set RELAYBOT_BOTS_DIR"
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
