"""Provider HTTP failures in our vocabulary: status code + error type + Retry-After → ProviderError.

Shared by the OpenAI and Anthropic providers, whose SDKs raise different classes for the same
wire facts. Classification follows what can heal: 429 and 5xx (Anthropic's 529 "overloaded"
included) may succeed on a retry; other 4xx say the request or the key is wrong and never will.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

from core.errors import (
    ProviderBadResponse,
    ProviderError,
    ProviderRateLimited,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
)

# Error types that arrive inside a 200 stream (an `error` event) rather than as a status code.
_RATE_LIMIT_TYPES = frozenset({"rate_limit_error", "rate_limit_exceeded"})
# OpenAI answers 429 when the account is out of credit: no amount of waiting fixes that.
_NO_QUOTA_TYPES = frozenset({"insufficient_quota"})
# 408 (request timeout) and 409 (conflict) are the transient 4xx both SDKs retry themselves.
_TRANSIENT_4XX = frozenset({408, 409})
_MAX_RETRY_AFTER = 24 * 3600.0


def retry_after_seconds(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds the server asked us to wait: `retry-after-ms`, then `retry-after` (seconds or date)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        raw = lowered.get(name)
        if raw is None:
            continue
        try:
            value = float(raw) / scale
        except ValueError:
            if name == "retry-after-ms":
                continue
            try:
                value = parsedate_to_datetime(raw).timestamp() - (time.time() if now is None else now)
            except (TypeError, ValueError, IndexError):
                continue
        if math.isfinite(value):
            return min(max(0.0, value), _MAX_RETRY_AFTER)
    return None


def error_for_status(
    status: int,
    message: str,
    *,
    provider: str,
    headers: Mapping[str, str] | None = None,
    error_type: str | None = None,
) -> ProviderError:
    """The ProviderError for an HTTP status (or, for a 200 stream's error event, its error type)."""
    retry_after = retry_after_seconds(headers) if headers is not None else None
    if error_type in _NO_QUOTA_TYPES:
        return ProviderRejected(message, provider=provider, status=status)
    if status == 429 or (status < 400 and error_type in _RATE_LIMIT_TYPES):
        return ProviderRateLimited(message, provider=provider, retry_after=retry_after, status=status)
    if status >= 500 or status in _TRANSIENT_4XX or status < 400:
        # status < 400: an error event inside a stream that had started fine; the provider failed
        # part way, which is a server-side fault whatever its type says.
        return ProviderUnavailable(message, provider=provider, retry_after=retry_after, status=status)
    return ProviderRejected(message, provider=provider, status=status)


def error_type_of(body: object) -> str | None:
    """`error.type` from an OpenAI- or Anthropic-shaped error body, if there is one."""
    if not isinstance(body, Mapping):
        return None
    inner = body.get("error", body)
    if isinstance(inner, Mapping):
        kind = inner.get("type")
        return kind if isinstance(kind, str) else None
    return None


@dataclass(frozen=True, slots=True)
class SdkErrors:
    """One SDK's exception classes for the same wire facts (both SDKs share attribute names)."""

    timeout: type[Exception]
    connection: tuple[type[Exception], ...]
    status: type[Exception]
    key_setting: str
    #: an `error` event inside a 200 stream; None where the SDK has no such case to tell apart
    in_stream: type[Exception] | None = None


def convert_sdk_error(exc: Exception, sdk: SdkErrors, *, where: str, provider: str) -> ProviderError:
    """An SDK exception as our ProviderError, with a message that says where and what to check."""
    if isinstance(exc, sdk.timeout):
        return ProviderTimeout(f"{where} timed out (SDK timeout)", provider=provider)
    if isinstance(exc, sdk.connection):
        return ProviderUnavailable(
            f"cannot reach {where}: {exc} (is the base URL right and the server up?)", provider=provider
        )
    # Both SDKs' status and stream errors carry status_code, message, response and body.
    err: Any = exc
    if isinstance(exc, sdk.status):
        hint = f" (check {sdk.key_setting})" if err.status_code in (401, 403) else ""
        return error_for_status(
            err.status_code,
            f"{where} answered {err.status_code}: {err.message}{hint}",
            provider=provider,
            headers=err.response.headers,
            error_type=error_type_of(err.body),
        )
    if sdk.in_stream is not None and isinstance(exc, sdk.in_stream):
        # An `error` event inside a 200 stream: the server failed part way.
        return error_for_status(
            200, f"{where} failed mid-stream: {err.message}", provider=provider, error_type=error_type_of(err.body)
        )
    # JSONDecodeError/ValidationError (both ValueError) and anything else the SDK lets through.
    return ProviderBadResponse(
        f"{where} sent a response we could not read: {type(exc).__name__}: {exc}", provider=provider
    )
