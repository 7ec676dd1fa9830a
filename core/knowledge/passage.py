"""A retrieved piece of knowledge, as the pipeline and the LLM request carry it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class Passage:
    """One chunk found for a message: its text, where it came from, and how close it was (cosine, 0..1).

    `source` is the file it was ingested from (what labelled sets and logs name); `title` the document's
    name for people (front matter `title`, else its first heading); `url` its address, if its front matter
    gives one."""

    text: str
    source: str
    title: str = ""
    heading: str = ""
    url: str = ""
    score: float = 0.0

    @property
    def section(self) -> str:
        """The section it is from, when that is not the whole document ("" otherwise)."""
        return self.heading if self.heading and self.heading != self.title else ""

    @property
    def label(self) -> str:
        """How people see it cited: "Billing and invoices (Refunds)"; the file name when it has no title."""
        name = self.title or self.source
        return f"{name} ({self.section})" if self.section else name

    @property
    def markdown_label(self) -> str:
        """`label` with the title as a Markdown link when the document has a URL."""
        if not self.url:
            return self.label
        name = (self.title or self.source).replace("[", "\\[").replace("]", "\\]")
        href = self.url.replace("(", "%28").replace(")", "%29")
        return f"[{name}]({href}) ({self.section})" if self.section else f"[{name}]({href})"
