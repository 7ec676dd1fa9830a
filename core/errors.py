"""Every error relaybot raises on purpose, in one tree.

    RelaybotError
    ├── ConfigError            bad or missing configuration; the message says which setting to fix
    │   ├── BotNotFound        no bots/<name>/bot.toml for a requested bot
    │   └── PortInUse          the port to listen on is taken by another process
    ├── StoreError             a session/history store failed (Redis or SQL down, bad data)
    ├── InvalidAction          a button, card or click breaks the rules of core.actions (also a ValueError)
    ├── ProviderError          an LLM provider failed; `retryable` says whether trying again can help
    │   ├── ProviderRateLimited    429: retryable, `retry_after` from the Retry-After header
    │   ├── ProviderUnavailable    5xx/529, an error event mid-stream, or the connection failed: retryable
    │   ├── ProviderTimeout        no first token, or no end, within the step's timeout: retryable
    │   ├── ProviderRejected       400/401/403/404...: the request, key or model name is wrong; not retried
    │   └── ProviderBadResponse    the answer did not parse (malformed JSON, empty answer); not retried
    ├── DeliveryError          a channel could not deliver; `retryable` and `retry_after` steer the outbox
    ├── AttachmentUnavailable  a channel could not fetch a file the user sent; `retryable` says if later may work
    └── PoisonMessage          a queue entry that can never be handled; dead-lettered without retries

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


class PortInUse(ConfigError):
    def __init__(self, port: int) -> None:
        # One line a person can act on, instead of the event loop's bind traceback.
        super().__init__(f"port {port} is in use; use --port")
        self.port = port


class StoreError(RelaybotError):
    """A store (Redis, SQL) failed to read or write."""


class InvalidAction(RelaybotError, ValueError):
    """A button, card or click that breaks the rules of `core.actions`; the message names the field.

    Also a ValueError, so code that parses envelopes (which raise ValueError for bad data) catches it too.
    """


class ProviderError(RelaybotError):
    def __init__(
        self,
        message: str,
        *,
        provider: str,
        retryable: bool = False,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status


class ProviderRateLimited(ProviderError):
    """429: the provider asks us to slow down; `retry_after` (seconds) when it said how long."""

    def __init__(
        self, message: str, *, provider: str, retry_after: float | None = None, status: int | None = 429
    ) -> None:
        super().__init__(message, provider=provider, retryable=True, retry_after=retry_after, status=status)


class ProviderUnavailable(ProviderError):
    """The provider is down or overloaded (5xx, 529), or could not be reached: may heal soon."""

    def __init__(
        self, message: str, *, provider: str, retry_after: float | None = None, status: int | None = None
    ) -> None:
        super().__init__(message, provider=provider, retryable=True, retry_after=retry_after, status=status)


class ProviderTimeout(ProviderError):
    """No first token, or no end of the answer, within the step's timeout."""

    def __init__(self, message: str, *, provider: str) -> None:
        super().__init__(message, provider=provider, retryable=True)


class ProviderRejected(ProviderError):
    """The provider refused the request for good (bad request, bad key, unknown model): not retried."""

    def __init__(self, message: str, *, provider: str, status: int | None = None) -> None:
        super().__init__(message, provider=provider, retryable=False, status=status)


class ProviderBadResponse(ProviderError):
    """The provider answered something we cannot use (malformed JSON, no text at all)."""

    def __init__(self, message: str, *, provider: str) -> None:
        super().__init__(message, provider=provider, retryable=False)


class DeliveryError(RelaybotError):
    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        outcome_unknown: bool = False,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        # A send that timed out may have reached the user: repeating it could answer twice.
        self.outcome_unknown = outcome_unknown


class AttachmentUnavailable(RelaybotError):
    """A file the user sent could not be fetched through its channel.

    `retryable`: asking again later can help (the platform timed out, was unreachable or limited
    us, for `retry_after` seconds when it said); otherwise the reference or the file is bad for good.
    """

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class PoisonMessage(RelaybotError):
    """An entry that can never be handled (malformed payload): dead-lettered at once, not retried."""
