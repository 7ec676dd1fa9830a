"""The thread the SQLite history runs on (core.stores.sql_exec.CallThread): calls in the order they
came, outcomes back on the caller's loop, a cancelled caller costs nobody else, and close runs what
was queued before it."""

from __future__ import annotations

import asyncio
import threading

import pytest

from core.stores.sql_exec import CallThread


async def test_calls_run_on_one_other_thread_in_the_order_they_came() -> None:
    thread = CallThread("test-sql")
    seen: list[tuple[int, str]] = []

    def record(n: int) -> int:
        seen.append((n, threading.current_thread().name))
        return n * 10

    try:
        results = await asyncio.gather(*(thread.run(record, n) for n in range(50)))
    finally:
        await thread.close()

    assert results == [n * 10 for n in range(50)]
    assert [n for n, _ in seen] == list(range(50))
    assert {name for _, name in seen} == {"test-sql"}


async def test_an_error_reaches_its_caller_and_the_next_call_still_runs() -> None:
    thread = CallThread("test-sql")

    def fail(_: None) -> None:
        raise ValueError("disk I/O error")

    try:
        with pytest.raises(ValueError, match="disk I/O error"):
            await thread.run(fail, None)
        assert await thread.run(lambda x: x + 1, 1) == 2
    finally:
        await thread.close()


async def test_a_cancelled_caller_leaves_the_call_to_finish_and_the_thread_usable() -> None:
    thread = CallThread("test-sql")
    release = threading.Event()
    ran: list[str] = []

    def slow(_: None) -> str:
        release.wait(5)
        ran.append("slow")
        return "late"

    try:
        waiting = asyncio.ensure_future(thread.run(slow, None))
        await asyncio.sleep(0.01)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        release.set()
        assert await thread.run(lambda x: x, "next") == "next"
        assert ran == ["slow"]
    finally:
        await thread.close()


async def test_close_runs_the_calls_queued_before_it_and_refuses_later_ones() -> None:
    thread = CallThread("test-sql")
    ran: list[int] = []
    queued = [asyncio.ensure_future(thread.run(ran.append, n)) for n in range(5)]
    await asyncio.sleep(0)  # the calls are on the thread's queue
    await thread.close()

    await asyncio.gather(*queued)
    assert ran == [0, 1, 2, 3, 4]
    with pytest.raises(RuntimeError, match="closed"):
        await thread.run(ran.append, 5)
