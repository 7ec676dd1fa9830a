"""Read a knowledge file into Markdown-ish text: Markdown and text as they are, HTML and PDF converted.

A file that cannot be used (unreadable, binary, empty, a broken PDF) raises `UnusableFile` with the reason;
ingestion reports it and goes on with the next file.
"""

from __future__ import annotations

import io
from html.parser import HTMLParser
from pathlib import Path

SUPPORTED_SUFFIXES = frozenset({".md", ".markdown", ".txt", ".text", ".html", ".htm", ".pdf"})


class UnusableFile(Exception):
    """This file cannot be ingested; `reason` says why (shown to the operator)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def load_text(path: Path, data: bytes) -> str:
    """The file's text (`data` is its content, read by the caller once for hashing too)."""
    suffix = path.suffix.lower()
    if suffix == ".pdf":
        text = _pdf_text(data)
    else:
        if b"\x00" in data[:8192]:
            raise UnusableFile("binary file (contains NUL bytes)")
        try:
            raw = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise UnusableFile(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
        text = _html_text(raw) if suffix in (".html", ".htm") else raw
    if not text.strip():
        raise UnusableFile("empty (no text)")
    return text


def _pdf_text(data: bytes) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as exc:
        raise UnusableFile(f"unreadable PDF ({type(exc).__name__}: {exc})") from exc
    # Pages become paragraphs: the chunker keeps them apart where it can.
    return "\n\n".join(p.strip() for p in pages if p.strip())


class _HtmlToMarkdown(HTMLParser):
    """Headings become Markdown headings (so chunks follow them); block elements end paragraphs."""

    _BLOCKS = frozenset({"p", "div", "li", "ul", "ol", "br", "tr", "table", "section", "article", "pre", "blockquote"})
    _SKIP = frozenset({"script", "style", "noscript", "template", "head"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skip += 1
        elif tag == "title":
            self._in_title = True
        elif len(tag) == 2 and tag[0] == "h" and tag[1] in "123456":
            self.parts.append("\n\n" + "#" * int(tag[1]) + " ")
        elif tag in self._BLOCKS:
            self.parts.append("\n\n" if tag != "li" else "\n\n- ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag == "title":
            self._in_title = False
        elif (len(tag) == 2 and tag[0] == "h" and tag[1] in "123456") or tag in self._BLOCKS:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        elif not self._skip:
            self.parts.append(" ".join(data.split()) if data.strip() else " ")


def _html_text(raw: str) -> str:
    parser = _HtmlToMarkdown()
    parser.feed(raw)
    parser.close()
    lines = [" ".join(line.split()) for line in "".join(parser.parts).splitlines()]
    body = "\n".join(lines).strip()
    if parser.title.strip() and not body.lstrip().startswith("# "):
        body = f"# {' '.join(parser.title.split())}\n\n{body}"
    return body
