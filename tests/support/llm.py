"""Helpers for the LLM tests: settings aimed at the fakes, bots with short timeouts, a delta sink."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from core.bots import BotConfig, Models
from core.llm.base import ChatMessage, LLMRequest
from core.llm.factory import ChainFactory
from core.settings import Settings
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.openai_server import FakeOpenAI
from tests.support.harness import make_settings, write_bot

OPENAI_KEY = "sk-test-openai"
ANTHROPIC_KEY = "sk-ant-test"
CHAIN = ["openai:gpt-4o", "openai:gpt-4o-mini", "anthropic:claude-haiku-4-5"]

# Short enough that the whole LLM suite stays fast; long enough not to flake on a busy machine
# (0.3 s for the first token timed out a healthy fake at a load average of 10 on 2 cores).
FAST: dict[str, Any] = {
    "first_token_timeout_seconds": 1.0,
    "step_timeout_seconds": 3.0,
    "latency_budget_seconds": 8.0,
    "retries_per_step": 1,
    "max_retry_wait_seconds": 0.5,
    "breaker_failures": 100,
    "breaker_cooldown_seconds": 30.0,
}


def llm_settings(
    tmp_path: Path, openai: FakeOpenAI | None, anthropic: FakeAnthropic | None, **overrides: Any
) -> Settings:
    values: dict[str, Any] = {}
    if openai is not None:
        values |= {"openai_api_key": OPENAI_KEY, "openai_base_url": openai.base_url}
    if anthropic is not None:
        values |= {"anthropic_api_key": ANTHROPIC_KEY, "anthropic_base_url": anthropic.base_url}
    return make_settings(tmp_path, **(values | overrides))


def bot(chain: list[str] | None = None, name: str = "support", **models: Any) -> BotConfig:
    return BotConfig(
        name=name,
        system_prompt="You are a helpful assistant.",
        models=Models.model_validate({"chain": CHAIN if chain is None else chain, **FAST, **models}),
    )


def ask(text: str = "How do I export my tasks?") -> LLMRequest:
    return LLMRequest(messages=(ChatMessage("system", "You are a helpful assistant."), ChatMessage("user", text)))


class Deltas:
    """A delta sink that records what a streaming channel would have shown."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    async def __call__(self, text: str) -> None:
        self.parts.append(text)

    @property
    def shown(self) -> str:
        return "".join(self.parts)


@asynccontextmanager
async def chain_factory(settings: Settings, **kwargs: Any) -> AsyncIterator[ChainFactory]:
    factory = ChainFactory(settings, **kwargs)
    try:
        yield factory
    finally:
        await factory.aclose()


def write_bot_models(bots_dir: Path, **models: Any) -> Path:
    """A copy of the example bot (chain gpt-4o → gpt-4o-mini → claude-haiku-4-5) with short
    timeouts; returns the bots folder."""
    write_bot(bots_dir, models={**FAST, **models})
    return bots_dir
