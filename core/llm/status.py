"""Provider HTTP failures in our vocabulary: status code + error type + Retry-After → ProviderError.

Shared by the OpenAI and Anthropic providers, whose SDKs raise different classes for the same
wire facts. Classification follows what can heal: 429 and 5xx (Anthropic's 529 "overloaded"
included) may succeed on a retry; other 4xx say the request or the key is wrong and never will.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

from core.errors import ProviderError, ProviderRateLimited, ProviderRejected, ProviderUnavailable

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
