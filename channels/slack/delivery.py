"""Posting to Slack through `AsyncWebClient`, with Slack's errors turned into `DeliveryError`s.

The outbox (core/delivery/sender.py) retries; this module only says how:
- HTTP 429 / `ratelimited`: retryable after the Retry-After header's seconds;
- Slack's transient errors (5xx, `internal_error`, `fatal_error`, `service_unavailable`): retryable;
- every other `ok: false` (`channel_not_found`, `not_in_channel`, `invalid_auth`, `msg_too_long`...):
  not retried, logged with Slack's error code so a person can fix the app's set-up;
- a timeout: the message may have been posted and Slack has no idempotency key, so the outcome is
  unknown (the outbox records it rather than risk answering twice);
- a refused connection: nothing was sent, retryable.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from channels.slack.inbound import parse_reply_to
from core.envelope import Reply
from core.errors import DeliveryError

_TRANSIENT = frozenset({"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"})


def _header(headers: object, name: str) -> str | None:
    if not isinstance(headers, dict):
        return None
    for key, value in headers.items():
        if str(key).lower() == name.lower():
            return str(value[0] if isinstance(value, list | tuple) and value else value)
    return None


def classify(exc: SlackApiError, method: str) -> DeliveryError:
    """A SlackApiError as the outbox needs it (retryable or not, and how long to wait)."""
    response = exc.response
    status = getattr(response, "status_code", None)
    code = response.get("error") if response is not None else None
    if status == 429 or code == "ratelimited":
        raw = _header(getattr(response, "headers", None), "Retry-After")
        try:
            retry_after = max(0.0, float(raw)) if raw else 1.0
        except ValueError:
            retry_after = 1.0
        return DeliveryError(
            f"slack {method}: rate limited; retry in {retry_after:g}s", retryable=True, retry_after=retry_after
        )
    if (status is not None and status >= 500) or code in _TRANSIENT:
        return DeliveryError(f"slack {method}: {code or status} (transient); will retry", retryable=True)
    hint = {
        "channel_not_found": "the channel is gone or the app cannot see it",
        "not_in_channel": "invite the app to the channel (/invite @app)",
        "invalid_auth": "SLACK_BOT_TOKEN is wrong or revoked",
        "not_authed": "set SLACK_BOT_TOKEN",
        "missing_scope": "add the scope the error names, then reinstall the app",
        "is_archived": "the channel is archived",
    }.get(str(code), "")
    detail = f" ({hint})" if hint else ""
    return DeliveryError(f"slack {method}: {code or status}{detail}; not retried", retryable=False)


class SlackPoster:
    """`chat.postMessage` in the reply's thread and `chat.update`: the EditOps of the streamer."""

    def __init__(self, client: AsyncWebClient) -> None:
        self._client = client

    async def post(self, reply: Reply, text: str, *, blocks: list[dict[str, Any]] | None = None) -> str:
        channel, thread_ts = parse_reply_to(reply.reply_to)
        try:
            # With blocks, `text` is what notifications and screen readers without Block Kit show.
            response = await self._client.chat_postMessage(
                channel=channel, thread_ts=thread_ts, text=text, mrkdwn=True, unfurl_links=False, blocks=blocks
            )
        except SlackApiError as exc:
            raise classify(exc, "chat.postMessage") from exc
        except TimeoutError as exc:
            raise DeliveryError(
                "slack chat.postMessage timed out; it may have been posted", retryable=True, outcome_unknown=True
            ) from exc
        except aiohttp.ClientConnectorError as exc:
            raise DeliveryError(f"slack unreachable: {exc}", retryable=True) from exc
        except aiohttp.ClientError as exc:
            # The connection broke after the request left: it may have been posted.
            raise DeliveryError(f"slack chat.postMessage failed: {exc}", retryable=True, outcome_unknown=True) from exc
        return str(response.get("ts"))

    async def edit(
        self, reply: Reply, message_ref: str, text: str, *, blocks: list[dict[str, Any]] | None = None
    ) -> None:
        channel, _ = parse_reply_to(reply.reply_to)
        await self.update(channel, message_ref, text, blocks=blocks)

    async def update(self, channel: str, ts: str, text: str, *, blocks: list[dict[str, Any]] | None = None) -> None:
        try:
            await self._client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks)
        except SlackApiError as exc:
            raise classify(exc, "chat.update") from exc
        except (TimeoutError, aiohttp.ClientError) as exc:
            # An edit repeats safely: retrying shows the same text once.
            raise DeliveryError(f"slack chat.update failed: {exc!r}", retryable=True) from exc
