"""Markdown replies rendered for each platform, and split to fit its message length limit.

The core answers in (CommonMark-ish) Markdown, because that is what LLMs write. Each platform
formats differently: Slack's mrkdwn, Telegram's HTML subset, WhatsApp's own markers, plain text
for SMS. The renderers here understand the common subset (headings, bold, italic, strikethrough,
inline code, fenced code blocks, links, lists, quotes) and escape everything else, so a reply
never fails to parse on the platform.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable

from core.channel import MarkdownDialect

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_BULLET = re.compile(r"^(\s*)[-*+]\s+(.*)$")
_QUOTE = re.compile(r"^>\s?(.*)$")
# Inline code first, so nothing inside it is treated as markup.
_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
_LINK = re.compile(r"\[([^\]\n]+)\]\((https?://[^)\s]+|mailto:[^)\s]+)\)")
_BOLD = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1", re.S)
_ITALIC = re.compile(r"(?<![\w*])([*_])(?=\S)(.+?)(?<=\S)\1(?![\w*])", re.S)
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~", re.S)
_PLACEHOLDER = re.compile(r"\x00(\d+)\x00")


# --- splitting -------------------------------------------------------------------------------


def split_text(text: str, limit: int) -> list[str]:
    """Split `text` into parts of at most `limit` characters, in order.

    Prefers paragraph breaks, then line breaks, then sentence ends, then spaces; cuts a word only
    when one is longer than the limit. A fenced code block cut in two is closed at the end of one
    part and reopened at the start of the next, so each part renders on its own.
    """
    if limit < 20:
        raise ValueError("limit must be at least 20 characters")
    text = text.strip("\n")
    parts: list[str] = []
    while len(text) > limit:
        cut = _cut_point(text, limit - 4)  # room to close a code fence
        head, text = text[:cut].rstrip(), text[cut:].lstrip("\n").lstrip(" ")
        fence = _open_fence(head)
        if fence is not None:
            head += "\n```"
            text = fence + "\n" + text
        if head.strip():
            parts.append(head)
    if text.strip():
        parts.append(text)
    return parts or [""]


def _cut_point(text: str, limit: int) -> int:
    window = text[: limit + 1]
    floor = limit // 3  # never make a tiny part just to cut at a nicer place
    for separator in ("\n\n", "\n", ". ", "! ", "? ", "; ", ", ", " "):
        index = window.rfind(separator)
        if index >= floor:
            return index + len(separator.rstrip(" ")) if separator.strip() else index
    return limit


def _open_fence(text: str) -> str | None:
    """The opening line of a code fence left open at the end of `text`, if any."""
    opening: str | None = None
    for line in text.split("\n"):
        if _FENCE.match(line):
            opening = None if opening is not None else line.strip()
    return opening


# --- rendering -------------------------------------------------------------------------------


def render(markdown: str, dialect: MarkdownDialect) -> str:
    """Render a Markdown reply for a platform dialect."""
    if dialect == "commonmark":
        return markdown
    return _RENDERERS[dialect](markdown)


def render_parts(markdown: str, dialect: MarkdownDialect, limit: int) -> list[str]:
    """Split then render, so that every rendered part fits in `limit` characters.

    Rendering can lengthen text (HTML escaping, link syntax), so a part that grows past the limit
    is split again, smaller, from its Markdown.
    """
    rendered: list[str] = []
    for chunk in split_text(markdown, limit):
        rendered.extend(_fit(chunk, dialect, limit))
    return rendered


def _fit(chunk: str, dialect: MarkdownDialect, limit: int) -> list[str]:
    out = render(chunk, dialect)
    if len(out) <= limit:
        return [out]
    smaller = max(20, int(len(chunk) * limit / len(out) * 0.9))
    if smaller >= len(chunk):
        smaller = len(chunk) - 1
    parts: list[str] = []
    for piece in split_text(chunk, smaller):
        parts.extend(_fit(piece, dialect, limit))
    return parts


def _blocks(markdown: str) -> list[tuple[bool, str]]:
    """(is_code, text) runs: fenced code blocks apart from the prose around them."""
    blocks: list[tuple[bool, str]] = []
    prose: list[str] = []
    code: list[str] | None = None
    for line in markdown.split("\n"):
        if _FENCE.match(line):
            if code is None:
                if prose:
                    blocks.append((False, "\n".join(prose)))
                    prose = []
                code = []
            else:
                blocks.append((True, "\n".join(code)))
                code = None
            continue
        (code if code is not None else prose).append(line)
    if code is not None:  # an unclosed fence: still code
        blocks.append((True, "\n".join(code)))
    if prose:
        blocks.append((False, "\n".join(prose)))
    return blocks


def _inline(text: str, code: Callable[[str], str], other: Callable[[str], str]) -> str:
    """Apply `code` to inline code spans and `other` to the text between them."""
    out: list[str] = []
    last = 0
    for match in _CODE_SPAN.finditer(text):
        out.append(other(text[last : match.start()]))
        out.append(code(match.group(2)))
        last = match.end()
    out.append(other(text[last:]))
    return "".join(out)


def _lines(prose: str, line: Callable[[str], str]) -> str:
    return "\n".join(line(raw) for raw in prose.split("\n"))


def _structure(raw: str, *, heading: Callable[[str], str], bullet: str, quote: str) -> tuple[str, bool]:
    """Rewrite a line's block marker; returns (line, is_heading) so headings are not styled twice."""
    match = _HEADING.match(raw)
    if match:
        return heading(match.group(2)), True
    match = _BULLET.match(raw)
    if match:
        return f"{match.group(1)}{bullet}{match.group(2)}", False
    match = _QUOTE.match(raw)
    if match:
        return f"{quote}{match.group(1)}", False
    return raw, False


# Each pattern runs only on text holding the characters every match of it needs: most lines of a
# reply have no markup, and four regex passes per line cost about 50 us of a Slack reply.

Substitute = Callable[[re.Match[str]], str]


def _links(text: str, replace: Substitute) -> str:
    return _LINK.sub(replace, text) if "](" in text else text


def _emphasis(text: str, bold: Substitute, italic: Substitute, strike: Substitute) -> str:
    if "*" in text or "_" in text:
        text = _ITALIC.sub(italic, _BOLD.sub(bold, text))
    return _STRIKE.sub(strike, text) if "~~" in text else text


def _restore_links(text: str, links: list[str]) -> str:
    """Put back the links `keep_link` took out (as NUL-numbered placeholders) before escaping."""
    return _PLACEHOLDER.sub(lambda m: links[int(m.group(1))], text) if links else text


def _link_as_text(match: re.Match[str]) -> str:
    return match.group(1) if match.group(1) == match.group(2) else f"{match.group(1)} ({match.group(2)})"


# Slack mrkdwn: *bold*, _italic_, ~strike~, `code`, ```block```, <url|text>; &, <, > escaped.


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _slack_span(text: str) -> str:
    links: list[str] = []

    def keep_link(match: re.Match[str]) -> str:
        links.append(f"<{match.group(2)}|{_slack_escape(match.group(1)).replace('|', '¦')}>")
        return f"\x00{len(links) - 1}\x00"

    text = _links(text, keep_link)
    text = _slack_escape(text)
    text = _emphasis(
        text, lambda m: f"\x01{m.group(2)}\x01", lambda m: f"_{m.group(2)}_", lambda m: f"~{m.group(1)}~"
    ).replace("\x01", "*")
    return _restore_links(text, links)


def to_mrkdwn(markdown: str) -> str:
    def line(raw: str) -> str:
        raw, heading = _structure(raw, heading=lambda t: f"\x02{t}\x02", bullet="• ", quote="\x03")
        body = _inline(raw, lambda c: f"`{_slack_escape(c)}`", _slack_span)
        body = body.replace("\x03", "> ", 1)
        if heading:
            body = "*" + body.replace("\x02", "").replace("*", "") + "*"
        return body

    return _join(_blocks(markdown), lambda c: f"```\n{_slack_escape(c)}\n```", lambda p: _lines(p, line))


# Telegram HTML: <b>, <i>, <s>, <code>, <pre>, <a href>, <blockquote>; everything else escaped.


def _telegram_span(text: str) -> str:
    links: list[str] = []

    def keep_link(match: re.Match[str]) -> str:
        href = html.escape(match.group(2), quote=True)
        links.append(f'<a href="{href}">{html.escape(match.group(1), quote=False)}</a>')
        return f"\x00{len(links) - 1}\x00"

    text = _links(text, keep_link)
    text = html.escape(text, quote=False)
    text = _emphasis(
        text, lambda m: f"<b>{m.group(2)}</b>", lambda m: f"<i>{m.group(2)}</i>", lambda m: f"<s>{m.group(1)}</s>"
    )
    return _restore_links(text, links)


def to_telegram_html(markdown: str) -> str:
    def line(raw: str) -> str:
        raw, heading = _structure(raw, heading=lambda t: t, bullet="• ", quote="\x03")
        body = _inline(raw, lambda c: f"<code>{html.escape(c, quote=False)}</code>", _telegram_span)
        if body.startswith("\x03"):
            body = f"<blockquote>{body[1:]}</blockquote>"
        return f"<b>{body}</b>" if heading else body

    return _join(_blocks(markdown), lambda c: f"<pre>{html.escape(c, quote=False)}</pre>", lambda p: _lines(p, line))


# WhatsApp: *bold*, _italic_, ~strike~, `code`, ```block```; links as "text (url)".


def _whatsapp_span(text: str) -> str:
    text = _links(text, _link_as_text)
    text = _emphasis(text, lambda m: f"\x01{m.group(2)}\x01", lambda m: f"_{m.group(2)}_", lambda m: f"~{m.group(1)}~")
    return text.replace("\x01", "*")


def to_whatsapp(markdown: str) -> str:
    def line(raw: str) -> str:
        raw, heading = _structure(raw, heading=lambda t: t, bullet="• ", quote="> ")
        body = _inline(raw, lambda c: f"`{c}`", _whatsapp_span)
        return "*" + body.replace("*", "") + "*" if heading else body

    return _join(_blocks(markdown), lambda c: f"```{c}```", lambda p: _lines(p, line))


# Plain text (SMS): markers removed, links as "text (url)", lists kept as "- ".


def _plain_span(text: str) -> str:
    text = _links(text, _link_as_text)
    return _emphasis(text, lambda m: m.group(2), lambda m: m.group(2), lambda m: m.group(1))


def to_plain(markdown: str) -> str:
    def line(raw: str) -> str:
        raw, _ = _structure(raw, heading=lambda t: t, bullet="- ", quote="")
        return _inline(raw, lambda c: c, _plain_span)

    return _join(_blocks(markdown), lambda c: c, lambda p: _lines(p, line))


def _join(blocks: list[tuple[bool, str]], code: Callable[[str], str], prose: Callable[[str], str]) -> str:
    return "\n".join(code(text) if is_code else prose(text) for is_code, text in blocks).strip("\n")


_RENDERERS: dict[str, Callable[[str], str]] = {
    "mrkdwn": to_mrkdwn,
    "telegram-html": to_telegram_html,
    "whatsapp": to_whatsapp,
    "plain": to_plain,
}
