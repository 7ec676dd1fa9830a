"""Sending a reply split into parts, once each, even when the delivery is retried."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from core.streams import StreamRegistry


async def send_parts(
    progress: StreamRegistry, reply_id: str, parts: Sequence[str], post: Callable[[int, str], Awaitable[str]]
) -> tuple[str, ...]:
    """Post `parts` in order, skipping those a previous attempt already sent; returns every message id.

    `post(index, text)` sends one part (the index lets the first part differ, e.g. quote the question)

    and raises DeliveryError; the outbox retries the whole delivery, which resumes at the part
    that failed. Parts are recorded one by one, so a crash loses at most the record of one part.
    """
    sent = await progress.sent_parts(reply_id)
    for index in range(len(sent), len(parts)):
        message_id = await post(index, parts[index])
        await progress.part_sent(reply_id, message_id)
        sent.append(message_id)
    return tuple(sent)
