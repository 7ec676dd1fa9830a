"""Streamed deltas go out in ~50 ms pieces, the first one too; nothing lost or reordered, and an
answer complete before its first piece is due goes out as the final reply alone."""

from __future__ import annotations

import asyncio

from core.delivery.coalesce import DeltaCoalescer


class Recorder:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def __call__(self, text: str) -> None:
        self.sent.append(text)


async def test_an_answer_complete_within_the_first_interval_sends_no_piece() -> None:
    out = Recorder()
    stream = DeltaCoalescer(out, interval=0.05, max_chars=10_000)
    for i in range(100):
        await stream(f"tok{i} ")
    await stream.close()  # the final reply carries the text: pieces before it would repeat it
    await asyncio.sleep(0.1)
    assert out.sent == []


async def test_a_burst_of_tokens_is_one_piece_once_the_interval_passed() -> None:
    out = Recorder()
    stream = DeltaCoalescer(out, interval=0.05, max_chars=10_000)
    tokens = [f"tok{i} " for i in range(100)]
    for token in tokens[:50]:
        await stream(token)
    await asyncio.sleep(0.2)
    assert out.sent == ["".join(tokens[:50])]  # sent by the timer, without waiting for a token
    for token in tokens[50:]:
        await stream(token)
    await stream.close()
    # The interval has long passed since that piece: the next token goes at once, the rest on close.
    assert out.sent == ["".join(tokens[:50]), tokens[50], "".join(tokens[51:])]


async def test_a_pause_sends_what_waits_without_a_further_token() -> None:
    out = Recorder()
    stream = DeltaCoalescer(out, interval=0.05)
    await stream("Hello")
    await stream(", wor")
    await stream("ld")
    await asyncio.sleep(0.2)  # the model pauses (a tool call): the buffered text is shown anyway
    assert out.sent == ["Hello, world"]
    await stream("!")
    await stream.close()
    assert "".join(out.sent) == "Hello, world!"


async def test_a_large_buffer_goes_before_the_interval() -> None:
    out = Recorder()
    stream = DeltaCoalescer(out, interval=10.0, max_chars=10)
    for _ in range(5):
        await stream("abcd")
    assert out.sent == ["abcdabcdabcd"]  # once 10 characters waited, long before the interval
    await stream.close()
    assert "".join(out.sent) == "abcd" * 5


async def test_nothing_is_sent_after_close() -> None:
    out = Recorder()
    stream = DeltaCoalescer(out, interval=0.05)
    await stream("a")
    await asyncio.sleep(0.1)
    await stream("b")
    await stream.close()
    await stream("late")
    await asyncio.sleep(0.1)
    assert out.sent == ["a", "b"]
