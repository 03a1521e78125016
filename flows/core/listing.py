"""BLS survey directories: read an IIS directory listing (pure; `flows.io.fetch` does the GET).

download.bls.gov serves IIS listings, not Apache ones: uppercase tags, absolute hrefs, a
`[To Parent Directory]` link, `&lt;dir&gt;` for folders, rows like
`  6/6/2024  8:30 AM      1504795 <A HREF="/pub/time.series/pr/pr.data.0.Current">...</A><br>`,
often all on one line. A page that is not such a listing, or lists nothing, is an error: the
mirror must never read "no files" into "delete everything".
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import unquote, urljoin, urlsplit

from flows.core.errors import IncompleteListing, ListingError

# Every anchor of the listing, with the text since the previous anchor (where IIS puts the date,
# time and size). Rows are read strictly afterwards, so a malformed row is seen, not passed over.
# Upstream bytes must parse in linear time (a parse holds the GIL: the lease renewal, heartbeats and
# cancel watcher wait for it). A pattern that scans to a terminator is quadratic when the terminator
# is missing and the scan is retried from every later start (`.*?</A>` after each of thousands of
# unclosed anchors, `[^>]*>` after each `<pre`): such patterns are only searched up to the last
# terminator in the text (`endpos`), where every scan finds one. See `_anchors`, `_row_block`.
_ANCHOR = re.compile(r"<A\s+HREF\s*=\s*\"(?P<href>[^\"]*)\"\s*>(?P<text>.*?)</A>", re.IGNORECASE | re.DOTALL)
_ROW_HEAD = re.compile(
    r"(?P<month>\d{1,2})/(?P<day>\d{1,2})/(?P<year>\d{4})\s+"
    r"(?P<hour>\d{1,2}):(?P<minute>\d{2})\s*(?P<ampm>[AP]M)\s+"
    r"(?P<size>\d{1,15}|&lt;dir&gt;|<dir>)\s*$",
    re.IGNORECASE,
)
# A row is three or four words at the end of its head (`6/6/2024 8:30 AM 1504795`; `8:30AM` is one
# word), its date at most 10 characters at the end of its word: a match starts in the last 10
# characters of the fourth- or third-last word of the head, nowhere else (`_read_row_head`).
_ROW_WORDS = 4
_DATE_CHARS = 10
# A survey or root listing is read whole: past this many decoded bytes it is refused
# (QUEST_LISTING_MAX_BYTES; BLS's `pr` listing is about 3 KB, the root about 10 KB).
DEFAULT_MAX_LISTING_BYTES = 8 * 1024 * 1024
_PARENT = re.compile(r"\[To Parent Directory\]", re.IGNORECASE)
_PRE_OPEN = re.compile(r"<pre\b[^>]*>", re.IGNORECASE)
_PRE_CLOSE = re.compile(r"</pre\s*>", re.IGNORECASE)
_HTML_CLOSE = re.compile(r"</html\s*>\s*$", re.IGNORECASE)
_TAG = re.compile(r"<[^>]+>")
_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)


@dataclass(frozen=True)
class ListingEntry:
    """A file as the listing shows it. `last_modified` is the listed local time, minute resolution."""

    name: str
    url: str
    size: int
    last_modified: str  # ISO `YYYY-MM-DDTHH:MM`, exactly what the listing says (no timezone given)


@dataclass(frozen=True)
class Listing:
    url: str
    entries: tuple[ListingEntry, ...]
    folders: tuple[str, ...] = ()
    skipped: tuple[str, ...] = field(default=())  # hrefs refused (other host, outside the directory, ...)
    # Files the listing names in a row that cannot be read (impossible date, garbled size, listed
    # twice with different facts): their stored copies are neither replaced nor deleted.
    unreadable: tuple[str, ...] = field(default=())
    problems: tuple[str, ...] = field(default=())  # one line per unreadable row, for the run log

    def by_name(self) -> dict[str, ListingEntry]:
        return {e.name: e for e in self.entries}


def _listed_time(m: re.Match[str]) -> str:
    """ISO minutes of a row's date; ValueError for an impossible date or time (13/45/2024, 25:70)."""
    hour12, minute = int(m["hour"]), int(m["minute"])
    if not 1 <= hour12 <= 12 or minute > 59:
        raise ValueError(f"impossible time {m['hour']}:{m['minute']} {m['ampm']}")
    hour = hour12 % 12 + (12 if m["ampm"].upper() == "PM" else 0)
    when = datetime(int(m["year"]), int(m["month"]), int(m["day"]), hour, minute)
    return when.isoformat(timespec="minutes")


def _safe_name(directory_url: str, href: str) -> str | None:
    """The file name an href points to, or None if it leaves the directory / host or is odd."""
    if ".." in href or any(ord(c) < 32 or ord(c) == 127 for c in href):
        return None
    base = urlsplit(directory_url)
    try:
        target = urlsplit(urljoin(directory_url, href))
    except ValueError:  # e.g. an invalid IPv6 literal in the href's host
        return None
    if (target.scheme, target.netloc.lower()) != (base.scheme, base.netloc.lower()):
        return None
    if target.query or target.fragment or not target.path.startswith(base.path):
        return None
    name = unquote(target.path[len(base.path) :])
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        return None
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return None
    return name


def _row_block(page: str, directory_url: str) -> str:
    """The `<pre>` block of a whole listing; refuses a page cut before its closing markup.

    IIS ends every listing with `</pre><hr></body></html>`. A page that stops earlier was cut in
    transit (a dropped connection with no Content-Length looks like a normal end): rows after the
    cut are missing and must not be read as deleted upstream.
    """
    tags_end = _after_last(page, ">")  # every `[^>]*>` scan before it ends there at the latest
    opened = _PRE_OPEN.search(page, 0, tags_end)
    if opened is None:
        snippet = " ".join((_TAG.sub(" ", page[:tags_end]) + page[tags_end:]).split())[:80]
        if next(_anchors(page), None) or _PARENT.search(page):
            raise IncompleteListing(f"{directory_url}: the listing has no opening <pre>; not read")
        raise ListingError(f"{directory_url}: the response is not a directory listing (starts: {snippet!r})")
    closed = _PRE_CLOSE.search(page, opened.end())
    if closed is None or not _HTML_CLOSE.search(page, closed.end()):
        raise IncompleteListing(
            f"{directory_url}: the listing was cut off before its closing </pre>...</html> "
            f"({len(page)} characters read); nothing is deleted or replaced"
        )
    return page[opened.end() : closed.start()]


@dataclass(frozen=True)
class ListingRow:
    """One anchor of a listing's `<pre>` block and the text before it (where IIS puts date and size)."""

    href: str  # HTML-unescaped, as written (not yet checked: see `safe_name` / `folder_name`)
    text: str  # the link text, unescaped and stripped
    head: str  # the text between the previous anchor and this one, `<br>`s as spaces
    row: re.Match[str] | None  # the date/time/size read from `head`, or None when it cannot be read

    @property
    def parent(self) -> bool:
        return bool(_PARENT.search(self.text))

    @property
    def dated_folder(self) -> bool:
        """A readable row whose size column is `<dir>`."""
        return self.row is not None and not (self.row["size"].isascii() and self.row["size"].isdigit())


def _after_last(text: str, *terminators: str) -> int:
    """Where the last of `terminators` in `text` ends (0 if none): the `endpos` for a terminated scan."""
    return max((at + len(t) for t in terminators if (at := text.rfind(t)) >= 0), default=0)


def _anchors(text: str) -> Iterator[re.Match[str]]:
    """`_ANCHOR.finditer(text)` in linear time: no anchor closes after the last `</A>` (`a` folds only
    to `A`), and before it every lazy `.*?` finds its `</A>`, so no scan is retried to the end."""
    return _ANCHOR.finditer(text, 0, _after_last(text, "</A>", "</a>"))


def _read_row_head(head: str) -> re.Match[str] | None:
    """`_ROW_HEAD.search(head)`, tried only where a match can start (see `_ROW_WORDS`): a search from
    every position of a long head is one call of about 0.4 s per MiB, holding the GIL."""
    words = head.rsplit(None, _ROW_WORDS)  # the whitespace `\s` matches
    at = len(words.pop(0)) if len(words) > _ROW_WORDS else 0  # head[:at] is the text before them
    spans = []
    for word in words:
        start = head.find(word, at)  # only whitespace lies between two words
        at = start + len(word)
        spans.append((start, at))
    for start, end in spans[-_ROW_WORDS : len(spans) - 2]:  # the fourth- and third-last words
        for i in range(max(start, end - _DATE_CHARS), end):
            if (row := _ROW_HEAD.match(head, i)) is not None:
                return row
    return None


def listing_block(page: str, directory_url: str) -> str:
    """The rows of a complete IIS listing; ListingError / IncompleteListing as `parse_listing`."""
    return _row_block(page, directory_url if directory_url.endswith("/") else directory_url + "/")


def listing_rows(block: str) -> list[ListingRow]:
    """Every anchor of a `<pre>` block, with its row read strictly (a malformed row is seen)."""
    rows = []
    previous_end = 0
    for anchor in _anchors(block):
        head = block[previous_end : anchor.start()]
        previous_end = anchor.end()
        head = _BR.sub(" ", head).strip()
        text = html.unescape(anchor["text"]).strip()
        rows.append(ListingRow(html.unescape(anchor["href"]), text, head, _read_row_head(head)))
    return rows


def has_parent_link(block: str) -> bool:
    return bool(_PARENT.search(block))


def folder_name(directory_url: str, href: str) -> str | None:
    """The sub-folder an href (`/pub/time.series/ap/`) names directly under `directory_url`, or None."""
    if not href.endswith("/") or href.endswith("//"):
        return None
    return _safe_name(directory_url, href[:-1])


def parse_listing(page: str, directory_url: str) -> Listing:
    """Files (name, URL, size, listed time) of a complete IIS listing of `directory_url`.

    Skips the parent link and folders; refuses hrefs naming another host, leaving the directory,
    or whose name holds `..`, `/` or control characters. A row whose date or size cannot be read
    is reported in `unreadable`, never dropped silently. Raises ListingError for a page that is not
    a listing or lists no files, IncompleteListing for one cut before its end.
    """
    if not directory_url.endswith("/"):
        directory_url += "/"
    block = _row_block(page, directory_url)
    entries: dict[str, ListingEntry] = {}
    conflicting: set[str] = set()
    unreadable: dict[str, str] = {}
    folders: list[str] = []
    skipped: list[str] = []
    for anchor in listing_rows(block):
        if anchor.parent:
            continue
        text, href, row, head = anchor.text, anchor.href, anchor.row, anchor.head
        if anchor.dated_folder:
            folders.append(text)
            continue
        if href.endswith("/") and row is None:
            continue  # a folder row we cannot date: folders are never mirrored
        name = _safe_name(directory_url, href)
        if name is None:
            skipped.append(href)
            continue
        try:
            if row is None:
                raise ValueError(f"no date/time/size before the link (got {head[-60:]!r})")
            entry = ListingEntry(name, directory_url + _quote_name(name), int(row["size"]), _listed_time(row))
        except ValueError as exc:
            unreadable[name] = f"{name}: unreadable listing row ({exc})"
            continue
        if name in entries and entries[name] != entry:
            conflicting.add(name)
        entries[name] = entry
    for name in conflicting:
        del entries[name]
        unreadable[name] = f"{name}: listed twice with different size or date"
    for name in unreadable:
        entries.pop(name, None)
    if not entries and not unreadable:
        if not folders and not skipped and not has_parent_link(block):
            raise ListingError(f"{directory_url}: the response is not a directory listing (no rows)")
        raise ListingError(
            f"{directory_url}: the listing names no files; refusing to treat that as 'all deleted'"
        )
    return Listing(
        directory_url,
        tuple(sorted(entries.values(), key=lambda e: e.name)),
        tuple(folders),
        tuple(skipped),
        tuple(sorted(unreadable)),
        tuple(unreadable[n] for n in sorted(unreadable)),
    )


def _quote_name(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="!$&'()*+,;=:@-._~")


def trailing_text(block: str) -> str:
    """What follows the block's last anchor: a row the anchor pattern cannot read lands here (or in
    the next row's `head`), and a reader that must not miss a name (the root's survey folders)
    looks at it too."""
    end = 0
    for anchor in _anchors(block):
        end = anchor.end()
    return block[end:]
