"""The clock of a test run: each conversation's own time, set by the runner, read by the whole runtime.

One runtime serves every conversation of a run, so the time lives in a context variable, like the
model script (`TestChains`): the pipeline's stages, and the memory stages after the reply (tasks copied
from the conversation's), read the conversation's time. It stands still within a turn and moves only
when a turn says so (`wait`, `at`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import datetime

from core.convtests.spec import DEFAULT_NOW

__all__ = ["TestClock"]


class TestClock:
    """A `core.clock.Clock` on the conversation's time (`DEFAULT_NOW` outside any conversation)."""

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(self) -> None:
        self._now: ContextVar[datetime] = ContextVar("convtest_now", default=DEFAULT_NOW)

    def now(self) -> datetime:
        return self._now.get()

    @contextlib.contextmanager
    def starting_at(self, start: datetime) -> Iterator[None]:
        """Within this block (and tasks started in it), the time is `start` until `set` moves it."""
        token = self._now.set(start)
        try:
            yield
        finally:
            self._now.reset(token)

    def set(self, at: datetime) -> bool:
        """Move the time to `at` (never back); whether it moved."""
        if at <= self._now.get():
            return False
        self._now.set(at)
        return True
