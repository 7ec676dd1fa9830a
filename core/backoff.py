"""Waits between tries of something that failed: doubling from `first` up to `ceiling`."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Backoff"]


@dataclass(slots=True)
class Backoff:
    """The wait before each next try; `reset()` after a success starts again from `first`."""

    first: float = 0.1
    ceiling: float = 5.0
    _next: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        if not 0 < self.first <= self.ceiling:
            raise ValueError("a backoff needs 0 < first <= ceiling")
        self._next = self.first

    def next(self) -> float:
        wait = self._next
        self._next = min(wait * 2, self.ceiling)
        return wait

    def reset(self) -> None:
        self._next = self.first
