"""A document's front matter: the `title` and `url` people see in a reply's sources.

A Markdown or text file may open with a YAML block between two `---` lines:

    ---
    title: Plans and pricing
    url: https://help.example.com/plans
    ---

`title` replaces the document's first heading as its name in sources; `url` makes that name a link. Other
keys are allowed and ignored (front matter is often shared with a static-site generator). The block is not
part of the text that is chunked, embedded or quoted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

import yaml

from core.knowledge.loaders import UnusableFile

__all__ = ["FrontMatter", "split_front_matter"]

_BLOCK = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.DOTALL)


@dataclass(frozen=True, slots=True)
class FrontMatter:
    title: str = ""
    url: str = ""


def split_front_matter(text: str) -> tuple[FrontMatter, str]:
    """The front matter (empty when there is none) and the text after it. Raises `UnusableFile` when the
    block is there but is not a YAML mapping, or its `title` or `url` cannot be used: the operator fixes the
    file rather than finding a broken link in a reply."""
    match = _BLOCK.match(text)
    if match is None:
        return FrontMatter(), text
    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError as exc:
        raise UnusableFile(f"front matter is not valid YAML ({str(exc).splitlines()[0]})") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UnusableFile("front matter must be `key: value` lines (title, url) between two --- lines")
    title, url = data.get("title", ""), data.get("url", "")
    if not isinstance(title, str | int | float) or not isinstance(url, str):
        raise UnusableFile("front matter title and url must be plain text")
    url = url.strip()
    if url:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc or any(c.isspace() for c in url):
            raise UnusableFile(f"front matter url {url!r} must be an absolute http(s) URL")
    return FrontMatter(title=" ".join(str(title).split()), url=url), text[match.end() :]
