"""Split a document into chunks that follow its headings and paragraphs, with a size limit and an overlap.

Each chunk keeps the heading it sits under, so a retrieved chunk can be cited as "file (heading)" and the
heading words help it match questions phrased like the heading.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")

DEFAULT_MAX_CHARS = 1000
DEFAULT_OVERLAP_CHARS = 150


@dataclass(frozen=True, slots=True)
class Chunk:
    text: str
    heading: str
    index: int


@dataclass(frozen=True, slots=True)
class _Section:
    heading: str
    paragraphs: list[str]


def title_of(text: str, fallback: str) -> str:
    """The document's first heading, or `fallback` (the file name)."""
    for line in text.splitlines():
        match = _HEADING.match(line.strip())
        if match:
            return match.group(2).strip()
    return fallback


def _sections(text: str) -> list[_Section]:
    sections: list[_Section] = []
    heading = ""
    paragraphs: list[str] = []
    current: list[str] = []

    def end_paragraph() -> None:
        if current:
            paragraph = "\n".join(current).strip()
            if paragraph:
                paragraphs.append(paragraph)
            current.clear()

    for line in text.splitlines():
        match = _HEADING.match(line.strip())
        if match:
            end_paragraph()
            if paragraphs:
                sections.append(_Section(heading, list(paragraphs)))
            paragraphs.clear()
            heading = match.group(2).strip()
        elif not line.strip():
            end_paragraph()
        else:
            current.append(line.rstrip())
    end_paragraph()
    if paragraphs:
        sections.append(_Section(heading, list(paragraphs)))
    return sections


def _pieces(paragraph: str, limit: int) -> list[str]:
    """A paragraph longer than the limit, cut at sentence ends (or hard, for one giant sentence)."""
    if len(paragraph) <= limit:
        return [paragraph]
    out: list[str] = []
    current = ""
    for sentence in _SENTENCE_END.split(paragraph):
        while len(sentence) > limit:
            if current:
                out.append(current)
                current = ""
            out.append(sentence[:limit])
            sentence = sentence[limit:]
        if current and len(current) + 1 + len(sentence) > limit:
            out.append(current)
            current = sentence
        else:
            current = f"{current} {sentence}".strip()
    if current:
        out.append(current)
    return out


def _tail(text: str, overlap: int) -> str:
    """The last `overlap` characters, starting at a word boundary."""
    if overlap <= 0 or len(text) <= overlap:
        return text if overlap > 0 else ""
    cut = text[-overlap:]
    space = cut.find(" ")
    return cut[space + 1 :] if 0 <= space < len(cut) - 1 else cut


def chunk_text(
    text: str, *, max_chars: int = DEFAULT_MAX_CHARS, overlap_chars: int = DEFAULT_OVERLAP_CHARS
) -> list[Chunk]:
    """Chunks of at most about `max_chars`, never crossing a heading; consecutive chunks of one section
    share `overlap_chars` of text so a sentence cut between them is still found whole in one."""
    if max_chars < 100:
        raise ValueError("max_chars must be at least 100")
    overlap_chars = min(overlap_chars, max_chars // 2)
    chunks: list[Chunk] = []
    for section in _sections(text):
        budget = max_chars - overlap_chars
        current = ""
        for paragraph in section.paragraphs:
            for piece in _pieces(paragraph, budget):
                if current and len(current) + 2 + len(piece) > max_chars:
                    chunks.append(Chunk(current, section.heading, len(chunks)))
                    carried = _tail(current, overlap_chars)
                    current = f"{carried}\n\n{piece}" if carried else piece
                else:
                    current = f"{current}\n\n{piece}" if current else piece
        if current:
            chunks.append(Chunk(current, section.heading, len(chunks)))
    return chunks
