"""Text from upstream, placed in Markdown as text: never a link, an image, HTML or a table break (pure).

File names, root hrefs and error messages quote pages we do not control, and the Prefect UI renders
artifact bodies, descriptions and table cells as Markdown (GitHub-flavoured, with autolinks). Every
piece of such text goes through `md_text` (inline text: paragraphs, headings, table cells) or
`md_code` (a code span); our own markup is written around it.

- Every character that can open or close markup anywhere in a line is backslash-escaped (CommonMark
  makes any escaped ASCII punctuation literal): `[`, `]`, `!`, `<`, `>`, `&`, `` ` ``, `*`, `_`,
  `~`, `|`, `\\`, `#`, `=`, `+`, `$`, `^`, `{`, `}`, `@`; and a `-`, `1.` or `1)` that would
  start a list where the text starts.
- A `.`, `:` or `/` joined to the next character is escaped too: a linkifier (markdown-it's) then
  sees `evil`, `.`, `com` apart, never a bare domain, scheme or `//host`.
- A renderer that linkifies the text after parsing (remark-gfm, cmark-gfm) sees the unescaped text,
  so a zero-width space breaks the patterns it looks for: `www\u200b.`, `:\u200b//`, `@\u200b`.
- Line breaks and other control characters become spaces (a newline ends a table row); leading and
  trailing white space is written as character references (else trimmed, or an indented code block).

The rendered text is the original, less those zero-width spaces and with line breaks as spaces.
"""

from __future__ import annotations

import re
import unicodedata

ZERO_WIDTH = "\u200b"
# Always escaped: each can open or close markup wherever it stands (inline, tables, extensions).
_ALWAYS = frozenset("\\`*_~[]!<>&|#=+$^{}@")
# Escaped when another character follows at once: the joints of domains, schemes and paths.
_JOINTS = frozenset(".:/")
# Where autolinkers that run on the parsed text would start a link: broken by a zero-width space.
_AUTOLINK_STARTS = re.compile(r"(?i)(?<=www)(?=\.)|(?<=:)(?=//)|(?<=@)")
_LIST_START = re.compile(r"(\d{1,9})([.)])")


def _one_line(text: str) -> str:
    """Line breaks and other control characters (NUL, tab, U+2028, ...) as spaces."""
    return "".join(" " if _breaks_lines(c) else c for c in text)


def _breaks_lines(c: str) -> bool:
    return unicodedata.category(c) in ("Cc", "Zl", "Zp")


def md_text(text: str) -> str:
    """`text` as literal inline Markdown: it renders as itself, with no link, image, HTML or markup."""
    plain = _AUTOLINK_STARTS.sub(ZERO_WIDTH, _one_line(text))
    out: list[str] = []
    last = len(plain) - 1
    for i, c in enumerate(plain):
        joint = c in _JOINTS and i < last and not plain[i + 1].isspace()
        out.append("\\" + c if c in _ALWAYS or joint else c)
    if plain[:1] == "-":
        out[0] = "\\" + plain[0]
    elif (start := _LIST_START.match(plain)) is not None:
        at = start.end(1)
        out[at] = "\\" + plain[at]
    return _keep_edge_spaces(out, plain)


def _keep_edge_spaces(out: list[str], plain: str) -> str:
    """Leading and trailing white space as `&#N;` (Markdown trims it from paragraphs and cells)."""
    lead = len(plain) - len(plain.lstrip())
    if lead == len(plain):
        return "".join(f"&#{ord(c)};" for c in plain)
    trail = len(plain) - len(plain.rstrip())
    for i in [*range(lead), *range(len(plain) - trail, len(plain))]:
        out[i] = f"&#{ord(plain[i])};"
    return "".join(out)


def md_code(text: str) -> str:
    """`text` as a code span (for names and paths): a fence longer than any run of backticks in it.

    Text with a `|` is written with `md_text` instead: inside a table a `|` ends the cell even in a
    code span, and its escape `\\|` would show as is outside one. Empty text is written as nothing.
    """
    plain = _one_line(text)
    if not plain or "|" in plain:
        return md_text(plain)
    fence = "`" * (max((len(run) for run in re.findall("`+", plain)), default=0) + 1)
    # CommonMark strips one space from each end of a span that has one at both ends (and is not all
    # spaces): pad a span that starts or ends so, or with a backtick, and the padding is what goes.
    pad = plain.strip(" ") and (plain[0] in " `" or plain[-1] in " `")
    return f"{fence} {plain} {fence}" if pad else f"{fence}{plain}{fence}"
