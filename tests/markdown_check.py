"""Render Markdown as the Prefect UI would (CommonMark + GFM tables, strikethrough, raw HTML and
linkify) and list what a reader could click or load: links, images, autolinks, raw HTML."""

from __future__ import annotations

import re
from collections.abc import Iterator

from markdown_it import MarkdownIt
from markdown_it.token import Token

_MD = MarkdownIt("gfm-like", {"html": True, "linkify": True}).enable(["linkify", "table", "strikethrough"])
ZERO_WIDTH = "\u200b"  # what `flows.core.markdown` puts into URL-like text; not part of it
ACTIVE = ("link_open", "image", "html_inline", "html_block")
# What a linkifier that runs on the parsed text finds (GFM's autolink literals: remark-gfm, cmark-gfm).
# (`mailto:` and `xmpp:` links are an email address after the scheme.)
TEXT_AUTOLINK = re.compile(r"(?i)\b(?:https?|ftp)://|\bwww\.|[-.\w+]+@[-\w]+(?:\.[-\w]+)+")


def tokens(markdown: str) -> Iterator[Token]:
    def walk(items: list[Token]) -> Iterator[Token]:
        for token in items:
            yield token
            yield from walk(token.children or [])

    yield from walk(_MD.parse(markdown))


def active(markdown: str) -> list[str]:
    """Every link, image, autolink and raw HTML the rendering holds, with its target."""
    found = []
    for t in tokens(markdown):
        if t.type in ACTIVE:
            found.append(f"{t.type} {t.markup} {t.attrs or t.content!r}")
        elif t.type == "text" and TEXT_AUTOLINK.search(t.content):
            found.append(f"text autolink {t.content!r}")
    return found


def text(markdown: str) -> str:
    """The rendered text, less the zero-width spaces `md_text` puts into URL-like text."""
    return text_of(list(tokens(markdown)))


def text_of(items: list[Token]) -> str:
    parts = [
        t.content if t.type in ("text", "code_inline") else "\n"
        for t in items
        if t.type in ("text", "code_inline", "softbreak", "hardbreak", "paragraph_close")
    ]
    return "".join(parts).replace(ZERO_WIDTH, "")
