"""Builds each bot's chain from the settings and its `[models]` table, and owns the SDK clients.

Step names are "provider:model". `openai` and `anthropic` take their key and base URL from the
settings (OPENAI_API_KEY, OPENAI_BASE_URL, ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL), unless the
bot's `[models.endpoints.<name>]` overrides them; any other provider name must be such an endpoint
(an OpenAI-compatible server, or a second Anthropic account). A step whose key is not configured
is left out with a warning; a bot left with no step at all answers through the offline provider,
exactly as when no key is configured anywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import redis.asyncio as aioredis
import structlog

from core.bots import BotConfig, Models
from core.llm.base import LLMProvider
from core.llm.breaker import BreakerPolicy, CircuitBreaker
from core.llm.breaker.memory import MemoryCircuitBreaker
from core.llm.breaker.redis import RedisCircuitBreaker
from core.llm.cache import ResponseCache
from core.llm.cache.memory import MemoryResponseCache
from core.llm.cache.redis import RedisResponseCache
from core.llm.chain import Chain, ChainPolicy, ChainSource, Step, StepPolicy
from core.llm.offline import OfflineProvider
from core.settings import Settings

if TYPE_CHECKING:
    import anthropic
    import openai

__all__ = [
    "DEFAULT_ANTHROPIC_BASE_URL",
    "DEFAULT_OPENAI_BASE_URL",
    "ChainFactory",
    "chain_policy",
    "single_provider_chains",
]

DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"
DEFAULT_ANTHROPIC_BASE_URL = "https://api.anthropic.com"

# Local OpenAI-compatible servers (Ollama, vLLM, LM Studio) want no key, but the SDK insists on one.
_KEYLESS = "not-needed"


@dataclass(frozen=True, slots=True)
class _Endpoint:
    name: str
    api: str
    base_url: str
    api_key: str


class ChainFactory:
    """One chain per bot (built on first use, then kept); shared clients, breaker and cache.

    `redis`, when given, holds the breaker state and the response cache for every worker (the
    caller owns the client). `environ` resolves a bot's `api_key_env` names; pass the process
    environment from the composition root, so this module never reads it itself.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        redis: aioredis.Redis | None = None,
        environ: Mapping[str, str] | None = None,
        breaker: CircuitBreaker | None = None,
        cache: ResponseCache | None = None,
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self._settings = settings
        self._environ: Mapping[str, str] = environ if environ is not None else {}
        self._breaker = breaker or (RedisCircuitBreaker(redis) if redis is not None else MemoryCircuitBreaker())
        self._cache = cache or (RedisResponseCache(redis) if redis is not None else MemoryResponseCache())
        self._log = logger or structlog.get_logger("relaybot.llm")
        self._chains: dict[str, Chain] = {}
        self._clients: dict[tuple[str, str, str], openai.AsyncOpenAI | anthropic.AsyncAnthropic] = {}

    def for_bot(self, bot: BotConfig) -> Chain:
        chain = self._chains.get(bot.name)
        if chain is None:
            chain = self._chains[bot.name] = self._build(bot)
        return chain

    async def aclose(self) -> None:
        """Close the SDK clients (their connection pools); chains built earlier stop working."""
        clients, self._clients = list(self._clients.values()), {}
        self._chains.clear()
        for client in clients:
            await client.close()

    def _build(self, bot: BotConfig) -> Chain:
        models = bot.models
        resolved = {name: self._endpoint(models, name.partition(":")[0]) for name in models.chain}
        steps: list[Step] = []
        for name, endpoint in resolved.items():
            if isinstance(endpoint, str):
                continue
            steps.append(
                Step(
                    provider=self._provider(endpoint, name.partition(":")[2]),
                    policy=_step_policy(models, name),
                    breaker_key=f"{name}@{endpoint.base_url}",
                )
            )
        unavailable = {name: reason for name, reason in resolved.items() if isinstance(reason, str)}
        if not steps:
            # No usable step: the offline provider, which says plainly that no model is configured
            # (the normal state of a laptop without keys, so information rather than a warning).
            self._log.info("llm_offline", bot=bot.name, unavailable=unavailable)
            steps.append(Step(provider=offline_provider(bot), policy=_step_policy(models, "")))
        else:
            for name, reason in unavailable.items():
                self._log.warning("llm_step_unavailable", bot=bot.name, step=name, reason=reason)
        return Chain(
            steps,
            policy=chain_policy(models),
            bot=bot.name,
            static_fallback=models.static_fallback,
            interrupted_notice=models.interrupted_notice,
            breaker=self._breaker,
            cache=self._cache,
            logger=self._log,
        )

    def _endpoint(self, models: Models, name: str) -> _Endpoint | str:
        """Where `name` points and its key, or why the step cannot run."""
        override = models.endpoints.get(name)
        env_name = override.api_key_env if override is not None else None
        if name in ("openai", "anthropic"):
            s = self._settings
            setting_url = s.openai_base_url if name == "openai" else s.anthropic_base_url
            default_url = DEFAULT_OPENAI_BASE_URL if name == "openai" else DEFAULT_ANTHROPIC_BASE_URL
            base_url = (override.base_url if override is not None else None) or setting_url or default_url
            if env_name is None:
                secret = s.openai_api_key if name == "openai" else s.anthropic_api_key
                key = secret.get_secret_value() if secret is not None else None
                env_name = "OPENAI_API_KEY" if name == "openai" else "ANTHROPIC_API_KEY"
            else:
                key = self._environ.get(env_name)
            if not key:
                return f"no API key: set {env_name}"
            return _Endpoint(name=name, api=name, base_url=base_url, api_key=key)
        if override is None or override.api is None or not override.base_url:
            return f"no [models.endpoints.{name}] with api and base_url"  # the bot validator prevents this
        if env_name is None:
            key = _KEYLESS
        else:
            key = self._environ.get(env_name, "")
            if not key:
                return f"no API key: set {env_name}"
        return _Endpoint(name=name, api=override.api, base_url=override.base_url, api_key=key)

    def _provider(self, endpoint: _Endpoint, model: str) -> LLMProvider:
        # The SDKs load here, on first use: importing them takes seconds, which offline mode and
        # processes that never call a model (channel adapters) should not pay.
        import anthropic
        import openai

        from core.llm.anthropic import AnthropicProvider
        from core.llm.openai import OpenAIProvider, TokenLimitParam

        client_key = (endpoint.api, endpoint.base_url, endpoint.api_key)
        client = self._clients.get(client_key)
        if endpoint.api == "anthropic":
            if client is None:
                # max_retries=0: the chain decides about retries, with the whole chain's budget in view.
                client = anthropic.AsyncAnthropic(api_key=endpoint.api_key, base_url=endpoint.base_url, max_retries=0)
                self._clients[client_key] = client
            assert isinstance(client, anthropic.AsyncAnthropic)
            return AnthropicProvider(client, model=model, name=endpoint.name)
        if client is None:
            client = openai.AsyncOpenAI(api_key=endpoint.api_key, base_url=endpoint.base_url, max_retries=0)
            self._clients[client_key] = client
        assert isinstance(client, openai.AsyncOpenAI)
        # OpenAI's own API wants max_completion_tokens (its newer models refuse max_tokens);
        # compatible servers mostly know only max_tokens.
        param: TokenLimitParam = (
            "max_completion_tokens" if endpoint.base_url.rstrip("/") == DEFAULT_OPENAI_BASE_URL else "max_tokens"
        )
        return OpenAIProvider(client, model=model, name=endpoint.name, token_limit_param=param)


def offline_provider(bot: BotConfig) -> OfflineProvider:
    """The offline provider of `bot`, which introduces itself with the bot's `welcome`."""
    return OfflineProvider(introduction=bot.welcome)


def single_provider_chains(provider: LLMProvider) -> ChainSource:
    """Each bot's chain as one step, `provider`, then the bot's static message; no breaker, no cache."""
    return provider_chains(lambda _bot: provider)


def provider_chains(provider_for: Callable[[BotConfig], LLMProvider]) -> ChainSource:
    """Each bot's chain as one step, its provider `provider_for(bot)`, then the bot's static message; no
    breaker, no cache."""
    chains: dict[str, Chain] = {}

    def chain_for(bot: BotConfig) -> Chain:
        chain = chains.get(bot.name)
        if chain is None:
            models = bot.models
            chain = chains[bot.name] = Chain(
                [Step(provider=provider_for(bot), policy=_step_policy(models, ""))],
                policy=chain_policy(models),
                bot=bot.name,
                static_fallback=models.static_fallback,
                interrupted_notice=models.interrupted_notice,
            )
        return chain

    return chain_for


def chain_policy(models: Models) -> ChainPolicy:
    return ChainPolicy(
        latency_budget=models.latency_budget_seconds,
        max_retry_wait=models.max_retry_wait_seconds,
        breaker=BreakerPolicy(
            failure_threshold=models.breaker_failures, cooldown_seconds=models.breaker_cooldown_seconds
        ),
        cache_ttl=models.cache_ttl_seconds,
        cache_shared=models.cache_shared,
    )


def _step_policy(models: Models, step: str) -> StepPolicy:
    override = models.steps.get(step)
    first = override.first_token_timeout_seconds if override is not None else None
    total = override.step_timeout_seconds if override is not None else None
    retries = override.retries_per_step if override is not None else None
    return StepPolicy(
        first_token_timeout=first if first is not None else models.first_token_timeout_seconds,
        total_timeout=total if total is not None else models.step_timeout_seconds,
        retries=retries if retries is not None else models.retries_per_step,
    )
