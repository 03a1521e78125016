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
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import unquote, urljoin, urlsplit

from flows.core.errors import IncompleteListing, ListingError

# Every anchor of the listing, with the text since the previous anchor (where IIS puts the date,
# time and size). Rows are read strictly afterwards, so a malformed row is seen, not passed over.
_ANCHOR = re.compile(r"<A\s+HREF\s*=\s*\"(?P<href>[^\"]*)\"\s*>(?P<text>.*?)</A>", re.IGNORECASE | re.DOTALL)
_ROW_HEAD = re.compile(
    r"(?P<month>\d{1,2})/(?P<day>\d{1,2})/(?P<year>\d{4})\s+"
    r"(?P<hour>\d{1,2}):(?P<minute>\d{2})\s*(?P<ampm>[AP]M)\s+"
    r"(?P<size>\d{1,15}|&lt;dir&gt;|<dir>)\s*$",
    re.IGNORECASE,
)
_PARENT = re.compile(r"\[To Parent Directory\]", re.IGNORECASE)
_PRE_OPEN = re.compile(r"<pre\b[^>]*>", re.IGNORECASE)
_PRE_CLOSE = re.compile(r"</pre\s*>", re.IGNORECASE)
_HTML_CLOSE = re.compile(r"</html\s*>\s*$", re.IGNORECASE)


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
    opened = _PRE_OPEN.search(page)
    if opened is None:
        snippet = " ".join(re.sub(r"<[^>]+>", " ", page).split())[:80]
        if _ANCHOR.search(page) or _PARENT.search(page):
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


def listing_block(page: str, directory_url: str) -> str:
    """The rows of a complete IIS listing; ListingError / IncompleteListing as `parse_listing`."""
    return _row_block(page, directory_url if directory_url.endswith("/") else directory_url + "/")


def listing_rows(block: str) -> list[ListingRow]:
    """Every anchor of a `<pre>` block, with its row read strictly (a malformed row is seen)."""
    rows = []
    previous_end = 0
    for anchor in _ANCHOR.finditer(block):
        head = block[previous_end : anchor.start()]
        previous_end = anchor.end()
        head = re.sub(r"<br\s*/?>", " ", head, flags=re.IGNORECASE).strip()
        text = html.unescape(anchor["text"]).strip()
        rows.append(ListingRow(html.unescape(anchor["href"]), text, head, _ROW_HEAD.search(head)))
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
