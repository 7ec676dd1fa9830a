"""Markdown rendered per platform dialect, and split to the platform's length limit."""

from __future__ import annotations

import html.parser
from typing import ClassVar

import pytest

from channels.formatting import render, render_parts, split_text

REPLY = """# Plans & pricing
Tasklane has **three plans**: *Free*, _Pro_ and ~~Gold~~ Enterprise.
See [pricing](https://tasklane.example/p?a=1&b=2) <now>.

- item with `a<b` code
* item two

> quoted **bold**

```python
if a < b and c > d:
    print("**not bold**")
```"""


def test_slack_mrkdwn() -> None:
    out = render(REPLY, "mrkdwn")
    assert out.startswith("*Plans &amp; pricing*\n")
    assert "*three plans*: _Free_, _Pro_ and ~Gold~" in out
    assert "See <https://tasklane.example/p?a=1&b=2|pricing> &lt;now&gt;" in out
    assert "• item with `a&lt;b` code\n• item two" in out
    assert "> quoted *bold*" in out
    assert 'print("**not bold**")' in out  # code is left alone


class _TagChecker(html.parser.HTMLParser):
    ALLOWED: ClassVar[set[str]] = {"b", "i", "s", "code", "pre", "a", "blockquote"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        assert tag in self.ALLOWED, tag
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack.pop() == tag, f"unbalanced </{tag}>"


def test_telegram_html_is_balanced_and_escaped() -> None:
    out = render(REPLY, "telegram-html")
    checker = _TagChecker()
    checker.feed(out)
    assert checker.stack == []
    assert "<b>three plans</b>" in out and "<i>Free</i>" in out and "<s>Gold</s>" in out
    assert '<a href="https://tasklane.example/p?a=1&amp;b=2">pricing</a> &lt;now&gt;' in out
    assert "<pre>if a &lt; b and c &gt; d:" in out
    assert "<code>a&lt;b</code>" in out


@pytest.mark.parametrize("text", ["1 < 2 & 3 > 2", "a * b * c", "snake_case_name and 2*3*4", "**unclosed", "[x](y)"])
def test_telegram_html_never_leaves_markup_unbalanced(text: str) -> None:
    checker = _TagChecker()
    checker.feed(render(text, "telegram-html"))
    checker.close()
    assert checker.stack == []


def test_whatsapp_and_plain() -> None:
    whatsapp = render(REPLY, "whatsapp")
    assert "*three plans*: _Free_, _Pro_ and ~Gold~" in whatsapp
    assert "pricing (https://tasklane.example/p?a=1&b=2) <now>" in whatsapp
    plain = render(REPLY, "plain")
    assert plain.startswith("Plans & pricing\n")
    assert "three plans: Free, Pro and Gold Enterprise" in plain
    assert "- item with a<b code" in plain
    assert "*" not in plain.replace('"**not bold**"', "")


def test_split_keeps_order_and_limit_and_prefers_paragraphs() -> None:
    paragraphs = [f"Paragraph {i}. " + "word " * 60 for i in range(40)]
    text = "\n\n".join(p.strip() for p in paragraphs)
    parts = split_text(text, 3500)
    assert len(parts) > 1
    assert all(len(p) <= 3500 for p in parts)
    assert all(p.startswith("Paragraph ") for p in parts)  # cuts fall between paragraphs
    assert " ".join(" ".join(parts).split()) == " ".join(text.split())


def test_split_reopens_a_cut_code_fence() -> None:
    text = "Intro\n\n```\n" + "".join(f"line {i}\n" for i in range(300)) + "```\nAfter"
    parts = split_text(text, 500)
    for part in parts:
        assert part.count("```") % 2 == 0, part
    assert all(len(p) <= 500 for p in parts)


def test_split_cuts_an_overlong_word() -> None:
    parts = split_text("x" * 1000, 300)
    assert "".join(parts) == "x" * 1000 and all(len(p) <= 300 for p in parts)


def test_render_parts_fit_after_escaping() -> None:
    parts = render_parts("<&>" * 3000, "telegram-html", 4096)
    assert all(len(p) <= 4096 for p in parts)
    assert html.unescape("".join(parts)) == "<&>" * 3000
