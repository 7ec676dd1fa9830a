"""A retrieved piece of knowledge, as the pipeline and the LLM request carry it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class Passage:
    """One chunk found for a message: its text, where it came from, and how close it was (cosine, 0..1)."""

    text: str
    source: str
    title: str = ""
    heading: str = ""
    score: float = 0.0

    @property
    def label(self) -> str:
        """How a reply cites it: "billing.md (Refunds)"."""
        return f"{self.source} ({self.heading})" if self.heading and self.heading != self.title else self.source
