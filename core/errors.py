"""Every error relaybot raises on purpose, in one tree.

    RelaybotError
    ├── ConfigError            bad or missing configuration; the message says which setting to fix
    │   └── BotNotFound        no bots/<name>/bot.toml for a requested bot
    ├── StoreError             a session/history store failed (Redis or SQL down, bad data)
    ├── ProviderError          an LLM provider failed; `retryable` says whether trying again can help
    └── DeliveryError          a channel could not deliver; `retryable` and `retry_after` steer the outbox

Library errors (redis, SQLAlchemy, aiohttp, SDKs) are converted where they are caught, with
`raise ... from exc`, so callers see one vocabulary and keep what they need (`retry_after`).
Expected control flow (a rate-limited message, a duplicate) is not an error.
"""

from __future__ import annotations


class RelaybotError(Exception):
    """Base of every error relaybot raises on purpose."""


class ConfigError(RelaybotError):
    """Configuration is missing or invalid."""


class BotNotFound(ConfigError):
    def __init__(self, name: str, bots_dir: str) -> None:
        super().__init__(
            f"no bot named {name!r}: expected {bots_dir}/{name}/bot.toml "
            f"(set RELAYBOT_BOTS_DIR to the folder that holds your bots)"
        )
        self.name = name


class StoreError(RelaybotError):
    """A store (Redis, SQL) failed to read or write."""


class ProviderError(RelaybotError):
    def __init__(self, message: str, *, provider: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.provider = provider
        self.retryable = retryable


class DeliveryError(RelaybotError):
    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
