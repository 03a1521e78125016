"""BLS survey directories: parse the IIS listing (pure) and fetch listings and files (httpx).

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

from flows.errors import QuestError

_ROW = re.compile(
    r"(?P<month>\d{1,2})/(?P<day>\d{1,2})/(?P<year>\d{4})\s+"
    r"(?P<hour>\d{1,2}):(?P<minute>\d{2})\s*(?P<ampm>[AP]M)\s+"
    r"(?P<size>\d+|&lt;dir&gt;|<dir>)\s+"
    r"<A\s+HREF\s*=\s*\"(?P<href>[^\"]*)\"\s*>(?P<text>.*?)</A>",
    re.IGNORECASE | re.DOTALL,
)
_PARENT = re.compile(r"\[To Parent Directory\]", re.IGNORECASE)


class ListingError(QuestError):
    """The survey directory could not be read as a listing; nothing may be deleted."""


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

    def by_name(self) -> dict[str, ListingEntry]:
        return {e.name: e for e in self.entries}


def _listed_time(m: re.Match[str]) -> str:
    hour = int(m["hour"]) % 12 + (12 if m["ampm"].upper() == "PM" else 0)
    when = datetime(int(m["year"]), int(m["month"]), int(m["day"]), hour, int(m["minute"]))
    return when.isoformat(timespec="minutes")


def _safe_name(directory_url: str, href: str) -> str | None:
    """The file name an href points to, or None if it leaves the directory / host or is odd."""
    if ".." in href or any(ord(c) < 32 or ord(c) == 127 for c in href):
        return None
    base = urlsplit(directory_url)
    target = urlsplit(urljoin(directory_url, href))
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


def parse_listing(page: str, directory_url: str) -> Listing:
    """Files (name, URL, size, listed time) of an IIS listing of `directory_url`.

    Skips the parent link and folders; refuses hrefs naming another host, leaving the directory,
    or whose name holds `..`, `/` or control characters. Raises ListingError for a page that is
    not a listing or lists no files.
    """
    if not directory_url.endswith("/"):
        directory_url += "/"
    entries: dict[str, ListingEntry] = {}
    folders: list[str] = []
    skipped: list[str] = []
    rows = list(_ROW.finditer(page))
    for m in rows:
        href = html.unescape(m["href"])
        if m["size"].isdigit():
            name = _safe_name(directory_url, href)
            if name is None:
                skipped.append(href)
                continue
            entries[name] = ListingEntry(
                name, directory_url + _quote_name(name), int(m["size"]), _listed_time(m)
            )
        else:
            folders.append(html.unescape(m["text"]).strip())
    if not rows and not _PARENT.search(page):
        snippet = " ".join(re.sub(r"<[^>]+>", " ", page).split())[:80]
        raise ListingError(f"{directory_url}: the response is not a directory listing (starts: {snippet!r})")
    if not entries:
        raise ListingError(
            f"{directory_url}: the listing names no files; refusing to treat that as 'all deleted'"
        )
    return Listing(
        directory_url, tuple(sorted(entries.values(), key=lambda e: e.name)), tuple(folders), tuple(skipped)
    )


def _quote_name(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="!$&'()*+,;=:@-._~")


# --------------------------------------------------------------------------- I/O (httpx)


def fetch_listing(client: object, directory_url: str) -> Listing:
    """GET and parse a survey directory. HTTP errors raise HttpStatusError (retry policy decides)."""
    from flows.http import check_status

    response = client.get(directory_url)  # type: ignore[attr-defined]
    check_status(response, directory_url)
    content_type = response.headers.get("content-type", "")
    if content_type and "html" not in content_type.lower():
        raise ListingError(f"{directory_url}: expected an HTML listing, got {content_type!r}")
    return parse_listing(response.text, directory_url)
