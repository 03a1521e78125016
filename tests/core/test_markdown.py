"""Upstream text in Markdown: rendered (CommonMark + GFM + linkify), it is the same text and nothing a
reader can click or load, wherever it is placed (issue 27, class 5)."""

from __future__ import annotations

import time

from hypothesis import example, given, settings
from hypothesis import strategies as st
from markdown_check import active, text, text_of, tokens

from flows.core.markdown import ZERO_WIDTH, md_code, md_text

# The pieces a hostile page or file name can carry: links, images, HTML, autolinks of every kind,
# reference definitions, table and line breaks, escapes, entities, block starts.
HOSTILE = [
    "[a](javascript:alert(1))",
    "![t](https:beacon.example/t.png)",
    "![t][r]",
    "[r]: https://evil.example",
    "[r]",
    "<img src=x onerror=alert(1)>",
    "<a href='x'>",
    "<https://x.example>",
    "<user@evil.example>",
    "javascript:",
    "http://",
    "https://evil.example/a?b=c",
    "ftp://x.example",
    "//evil.example",
    "www.",
    "WWW.Evil.Com",
    "evil.com",
    "user@evil.example",
    "mailto:a@b.example",
    "xmpp:a@b.example",
    "\n",
    "\r\n",
    "\r",
    "\u2028",
    "\x00",
    "\t",
    "|",
    "\\",
    "\\|",
    "`",
    "``",
    "```",
    "*",
    "**",
    "_",
    "~~",
    "&amp;",
    "&#106;",
    "&lt;img&gt;",
    "#",
    "# ",
    "- ",
    "+ ",
    "1. ",
    "1) ",
    "> ",
    "---",
    "===",
    "    ",
    " ",
    "\u00a0",
    ".",
    ":",
    "/",
    "@",
    "!",
    "(",
    ")",
    "[",
    "]",
    "$x$",
    "{#id}",
    "^",
    "a",
    "0",
]
hostile_text = st.lists(st.sampled_from(HOSTILE) | st.text(max_size=4), max_size=12).map("".join)

# Where our artifacts place upstream text: inline after our words, alone on a line after a paragraph
# line, at the start of a block, in a heading, a list item, a table cell, an image's alt text.
CONTEXTS = {
    "inline": ("Surveys: {}", "Surveys: "),
    "after a line": ("para\n{}", "para\n"),
    "block": ("{}", ""),
    "heading": ("# BLS {}", "BLS "),
    "list item": ("- inputs: {}", "inputs: "),
    "table cell": ("| a | b |\n|---|---|\n| x | {} |\n", ""),
}


def _flat(s: str) -> str:
    """What the text reads as once rendered: each line break or control character a space."""
    return "".join(
        " " if c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029" or ord(c) < 32 or 127 <= ord(c) < 160 else c
        for c in s
    )


def _check(escaped: str, original: str) -> None:
    for name, (frame, before) in CONTEXTS.items():
        markdown = frame.format(escaped)
        assert active(markdown) == [], (name, markdown)
        rendered = text(markdown).rstrip("\n")
        if name == "table cell":
            found = list(tokens(markdown))
            assert sum(t.type == "td_open" for t in found) == 2, markdown  # one row, two cells
            last = max(i for i, t in enumerate(found) if t.type == "td_open")
            rendered = text_of(found[last + 1].children or [])
        expected = (
            (before + _flat(original) if original else before.rstrip()).replace(ZERO_WIDTH, "").rstrip("\n")
        )
        assert rendered == expected, (name, markdown, rendered)


@settings(max_examples=400, deadline=None)
@given(hostile_text)
@example("[a](javascript:alert(1)) ![t](https:beacon.example/t.png) <img src=x>")
@example("[r]: http://x\n[a][r]")
@example("www.evil.com user@evil.example http://evil.example <https://x>")
@example("  leading and trailing  ")
@example("a\\")
@example("```")
@example("1. not a list")
def test_md_text_renders_as_itself_and_nothing_active(s):
    _check(md_text(s), s)


@settings(max_examples=400, deadline=None)
@given(hostile_text)
@example("pr.`x`")
@example("`")
@example(" ` ")
@example("a|b")
@example("   ")
def test_md_code_renders_as_itself_and_nothing_active(s):
    _check(md_code(s), s)


def test_a_plain_name_is_a_code_span_and_plain_words_stay_as_written():
    assert md_code("pr.data.0.Current") == "`pr.data.0.Current`"
    assert md_code("a ``b`` c") == "```a ``b`` c```"
    assert md_text("2 surveys: 2 changed, 3 kept (pr's run)") == "2 surveys: 2 changed, 3 kept (pr's run)"
    assert md_text("") == md_code("") == ""


def test_escaping_takes_linear_time():
    worst = "[![`<&\\|www.a@b://" * 5_000  # every character escaped or broken, 90 KB
    started = time.perf_counter()
    md_text(worst)
    md_code(worst)
    assert time.perf_counter() - started < 5  # about 0.2 s; a quadratic escape would take hours
