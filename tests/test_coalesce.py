"""Streamed deltas go out in ~50 ms pieces: the first at once, the rest batched, nothing lost or reordered."""

from __future__ import annotations

import asyncio

from core.delivery.coalesce import DeltaCoalescer


class Recorder:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def __call__(self, text: str) -> None:
        self.sent.append(text)


async def test_a_burst_of_tokens_is_one_send_after_the_first() -> None:
    out = Recorder()
    stream = DeltaCoalescer(out, interval=0.05, max_chars=10_000)
    tokens = [f"tok{i} " for i in range(100)]
    for token in tokens:
        await stream(token)
    await stream.close()
    assert out.sent == ["tok0 ", "".join(tokens[1:])]


async def test_a_pause_sends_what_waits_without_a_further_token() -> None:
    out = Recorder()
    stream = DeltaCoalescer(out, interval=0.05)
    await stream("Hello")
    await stream(", wor")
    await stream("ld")
    await asyncio.sleep(0.2)  # the model pauses (a tool call): the buffered text is shown anyway
    assert out.sent == ["Hello", ", world"]
    await stream("!")
    await stream.close()
    assert "".join(out.sent) == "Hello, world!"


async def test_a_large_buffer_goes_before_the_interval() -> None:
    out = Recorder()
    stream = DeltaCoalescer(out, interval=10.0, max_chars=10)
    for _ in range(5):
        await stream("abcd")
    assert out.sent == ["abcd", "abcdabcdabcd"]  # the first, then once 10 characters waited
    await stream.close()
    assert "".join(out.sent) == "abcd" * 5


async def test_nothing_is_sent_after_close() -> None:
    out = Recorder()
    stream = DeltaCoalescer(out, interval=0.05)
    await stream("a")
    await stream("b")
    await stream.close()
    await stream("late")
    await asyncio.sleep(0.1)
    assert out.sent == ["a", "b"]
