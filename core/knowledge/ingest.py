"""Ingestion: files and folders become chunks in a bot's knowledge set, idempotently.

A file's chunks carry a hash of its bytes (and of the chunking options): an unchanged file is skipped, a
changed one replaces all its old chunks, and with `prune` a source that is no longer on disk is removed.
A file that cannot be used is reported and skipped; it never aborts the run.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from core.knowledge.chunking import DEFAULT_MAX_CHARS, DEFAULT_OVERLAP_CHARS, chunk_text, title_of
from core.knowledge.frontmatter import split_front_matter
from core.knowledge.loaders import SUPPORTED_SUFFIXES, UnusableFile, load_text
from core.knowledge.store import PUBLIC, KnowledgeCollection, StoredChunk

#: called after each file: (files done, files total, the file's source name)
Progress = Callable[[int, int, str], None]


@dataclass(slots=True)
class IngestSummary:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    #: (source, reason) for files reported and skipped
    skipped: list[tuple[str, str]] = field(default_factory=list)
    chunks_written: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.pruned)

    def describe(self) -> str:
        lines = [
            f"{len(self.added)} added, {len(self.updated)} updated, {len(self.unchanged)} unchanged, "
            f"{len(self.pruned)} pruned, {len(self.skipped)} skipped; {self.chunks_written} chunks written"
        ]
        lines += [f"  skipped {source}: {reason}" for source, reason in self.skipped]
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class SourceFile:
    """A file to ingest and the name it is stored (and cited) under: its path relative to the folder given."""

    path: Path
    source: str


def discover(paths: Iterable[Path]) -> tuple[list[SourceFile], list[tuple[str, str]]]:
    """The supported files under `paths` (files or folders), and the paths that could not be used."""
    found: dict[str, SourceFile] = {}
    problems: list[tuple[str, str]] = []
    for root in paths:
        if root.is_dir():
            for path in sorted(root.rglob("*")):
                hidden = any(part.startswith(".") for part in path.relative_to(root).parts)
                if path.is_file() and not hidden and path.suffix.lower() in SUPPORTED_SUFFIXES:
                    source = path.relative_to(root).as_posix()
                    found[source] = SourceFile(path, source)
        elif root.is_file():
            if root.suffix.lower() in SUPPORTED_SUFFIXES:
                found[root.name] = SourceFile(root, root.name)
            else:
                problems.append((root.name, f"unsupported file type {root.suffix or '(none)'}"))
        else:
            problems.append((str(root), "no such file or folder"))
    return list(found.values()), problems


class Ingestor:
    """Brings one knowledge collection in line with a set of files."""

    def __init__(
        self,
        collection: KnowledgeCollection,
        *,
        max_chars: int = DEFAULT_MAX_CHARS,
        overlap_chars: int = DEFAULT_OVERLAP_CHARS,
        audience: str = PUBLIC,
    ) -> None:
        self._collection = collection
        self._max_chars = max_chars
        self._overlap = overlap_chars
        self._audience = audience

    async def ingest(
        self, paths: Sequence[Path], *, prune: bool = False, progress: Progress | None = None
    ) -> IngestSummary:
        files, problems = await asyncio.to_thread(discover, paths)
        summary = IngestSummary(skipped=list(problems))
        stored = await self._collection.source_hashes()
        for done, file in enumerate(files, start=1):
            await self._ingest_file(file, stored, summary)
            if progress is not None:
                progress(done, len(files), file.source)
        if prune:
            present = {f.source for f in files}
            for source in sorted(set(stored) - present):
                await self._collection.delete_source(source)
                summary.pruned.append(source)
        # The BM25 index follows the collection's revision: built (and saved) here, once per ingest that
        # changed something, rather than on the first question; a no-op run finds it in step and loads it.
        await self._collection.lexical_index()
        return summary

    async def _ingest_file(self, file: SourceFile, stored: dict[str, str], summary: IngestSummary) -> None:
        try:
            data = await asyncio.to_thread(file.path.read_bytes)
        except OSError as exc:
            summary.skipped.append((file.source, f"unreadable ({exc.strerror or exc})"))
            return
        digest = hashlib.sha256(data)
        # Chunking options and audience are part of the hash: changing them re-ingests the file.
        digest.update(f"|{self._max_chars}|{self._overlap}|{self._audience}".encode())
        content_hash = digest.hexdigest()
        if stored.get(file.source) == content_hash:
            summary.unchanged.append(file.source)
            return
        try:
            text = await asyncio.to_thread(load_text, file.path, data)
            front, text = split_front_matter(text)
        except UnusableFile as exc:
            summary.skipped.append((file.source, exc.reason))
            return
        # What people see in a reply's sources: the front matter's title, else the first heading, else the
        # file's name made readable ("getting-started" -> "Getting started").
        title = front.title or title_of(text, fallback=_readable(file.path.stem))
        pieces = chunk_text(text, max_chars=self._max_chars, overlap_chars=self._overlap)
        if not pieces:
            summary.skipped.append((file.source, "empty (no text)"))
            return
        source_id = hashlib.sha1(file.source.encode(), usedforsecurity=False).hexdigest()[:16]
        chunks = [
            StoredChunk(
                id=f"{source_id}-{content_hash[:12]}-{piece.index}",
                text=piece.text,
                source=file.source,
                title=title,
                heading=piece.heading,
                index=piece.index,
                content_hash=content_hash,
                audience=self._audience,
                url=front.url,
            )
            for piece in pieces
        ]
        await self._collection.replace_source(file.source, chunks)
        summary.chunks_written += len(chunks)
        (summary.updated if file.source in stored else summary.added).append(file.source)


def _readable(stem: str) -> str:
    words = " ".join(stem.replace("-", " ").replace("_", " ").split())
    return words[:1].upper() + words[1:] if words else stem
