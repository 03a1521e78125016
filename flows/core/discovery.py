"""Which BLS surveys exist: read the `time.series/` root listing, compare it with the mirror (pure).

The root is an IIS listing of folders, one per survey:
`  3/18/2025  9:10 AM        &lt;dir&gt; <A HREF="/pub/time.series/ap/">ap</A><br>`.
It is read as strictly as a survey's listing (`flows.core.listing`): a page cut
before its end, a page that is no listing, or a root naming no survey folder is an error, never
"every survey is gone" (which, with `--allow-mass-delete`, would empty the mirror). Folders whose
names are not survey names are skipped and reported, as are hrefs leaving the root.

A survey is gone only when nothing on the page could name it. Every row that is not a clean
survey folder (no trailing slash, a query, a size instead of `<dir>`, an href elsewhere whose
text names the survey, an anchor the pattern cannot read, stray text) HOLDS every survey name
its href, text or stray text could spell: a held survey is neither new nor gone, as an
unreadable row of a survey's listing holds its file. Retiring surveys has a guard of its own
(`check_retire_guard`), like the file delete guard.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import unquote

from flows.core.errors import ListingError, MassDeleteError
from flows.core.listing import folder_name, has_parent_link, listing_block, listing_rows, trailing_text
from flows.core.problems import FIRST_FEW, MAX_PROBLEM_CHARS

# The rule `flows.settings.parse_surveys` applies to names a user writes.
SURVEY_NAME = re.compile(r"[a-z0-9]+")
MAX_SURVEY_CHARS = 32
_TOKEN = re.compile(r"[a-z0-9]+")
# Characters a renderer shows as nothing: `p\u200br` must still spell `pr`.
_INVISIBLE = re.compile("[\u00ad\u034f\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufe00-\ufe0f\ufeff]")
_PARENT_TEXT = re.compile(r"\[To Parent Directory\]", re.IGNORECASE)
_URL_DECODES = 4  # `%2570r` is `pr` encoded twice; more layers than this are not read


def is_survey_name(name: str) -> bool:
    """Lowercase ASCII letters and digits, at most MAX_SURVEY_CHARS: safe in a URL and a store key."""
    return len(name) <= MAX_SURVEY_CHARS and SURVEY_NAME.fullmatch(name) is not None


def spelled_names(text: str) -> set[str]:
    """Every survey name `text` could spell: decoded (HTML, percent, up to 4 times), NFKC, case-folded,
    invisible characters dropped, split at anything that is not a letter or digit.

    Generous on purpose: a name it finds in a row that is not a clean folder keeps that survey's
    mirror (held), and holding too much only delays a retirement until the page is clean.
    """
    text = html.unescape(text)
    for _ in range(_URL_DECODES):
        decoded = unquote(text)
        if decoded == text:
            break
        text = decoded
    text = unicodedata.normalize("NFKC", _INVISIBLE.sub("", text)).casefold()
    return {t for t in _TOKEN.findall(_INVISIBLE.sub("", text)) if len(t) <= MAX_SURVEY_CHARS}


def _clip(text: str) -> str:
    return text if len(text) <= MAX_PROBLEM_CHARS // 2 else text[: MAX_PROBLEM_CHARS // 2 - 1] + "…"


@dataclass(frozen=True)
class RootListing:
    """The survey folders a root listing names (sorted, lowercase, unique) and what was passed over."""

    url: str
    surveys: tuple[str, ...]
    skipped: tuple[str, ...] = ()  # folder names / hrefs not taken as surveys
    problems: tuple[str, ...] = ()  # one line per skipped entry, for the run log (summarised there)
    files: tuple[str, ...] = ()  # files listed at the root (never surveys)
    # Names a row that is no clean survey folder could spell -> that row, quoted: neither new nor
    # gone (see `compare_surveys`). Most are noise (`overview`, `txt`); only stored ones matter.
    held: dict[str, str] = field(default_factory=dict)


def parse_root_listing(page: str, root_url: str) -> RootListing:
    """The surveys of a complete IIS listing of the `time.series/` root.

    Raises IncompleteListing for a page cut before `</pre>...</html>`, ListingError for a page
    that is not a listing or names no survey folder.
    """
    if not root_url.endswith("/"):
        root_url += "/"
    root_path = "/" + root_url.split("://", 1)[-1].split("/", 1)[-1]
    block = listing_block(page, root_url)
    surveys: set[str] = set()
    skipped: list[str] = []
    problems: list[str] = []
    files: list[str] = []
    held: dict[str, str] = {}

    def hold(text: str, why: str) -> None:
        for name in spelled_names(text):
            held.setdefault(name, why)

    def hold_href(href: str, why: str) -> None:
        for prefix in (root_url, root_path):  # `pub`, `time`, `series` are no survey's row
            if href.startswith(prefix):
                href = href[len(prefix) :]
                break
        hold(href, why)

    rows = listing_rows(block)
    for row in rows:
        why = f"row {_clip(row.href)!r} ({_clip(row.text)!r})"
        stray = row.head[: row.row.start()] if row.row is not None else row.head
        if stray.strip():
            problems.append(f"text outside any readable row: {_clip(stray)!r}")
            hold(stray, f"text {_clip(stray)!r}")
        if row.parent:
            hold(_PARENT_TEXT.sub(" ", row.text), why)
            if not root_path.startswith(row.href):
                hold_href(row.href, why)
            continue
        hold(row.text, why)  # a clean row's text is its own name; any other text holds what it spells
        if not (row.dated_folder or (row.row is None and row.href.endswith("/"))):
            files.append(row.text)  # a file at the root: not a survey (but `pr` as a file holds pr)
            hold_href(row.href, why)
            continue
        name = folder_name(root_url, row.href)
        if name is None:
            skipped.append(row.href)
            problems.append(f"folder href {row.href!r} is not a folder directly under the root")
            hold_href(row.href, why)
            continue
        survey = name.lower()
        if not is_survey_name(survey):
            skipped.append(name)
            problems.append(
                f"folder {name!r} is not a survey name (ASCII letters and digits, at most {MAX_SURVEY_CHARS})"
            )
            hold_href(row.href, why)
            continue
        surveys.add(survey)
    tail = re.sub(r"<br\s*/?>", " ", trailing_text(block), flags=re.IGNORECASE)
    if tail.strip():
        problems.append(f"text outside any readable row: {_clip(tail.strip())!r}")
        hold(tail, f"text {_clip(tail.strip())!r}")
    if not surveys:
        if not rows or (not skipped and not files and not has_parent_link(block)):
            raise ListingError(f"{root_url}: the response is not a directory listing (no rows)")
        raise ListingError(
            f"{root_url}: the root listing names no survey folders; refusing to treat that as "
            "'every survey is gone'"
        )
    for survey in surveys:
        held.pop(survey, None)
    return RootListing(root_url, tuple(sorted(surveys)), tuple(skipped), tuple(problems), tuple(files), held)


@dataclass(frozen=True)
class SurveyChanges:
    """Discovered surveys against the stored ones, each sorted."""

    new: tuple[str, ...]  # listed upstream, nothing stored yet
    gone: tuple[str, ...]  # stored, no longer listed upstream, and no unreadable row names them
    kept: tuple[str, ...]  # both
    held: tuple[str, ...] = ()  # stored, not listed cleanly, but a row may name them: left alone


def compare_surveys(
    discovered: Iterable[str], stored: Iterable[str], held: Iterable[str] = ()
) -> SurveyChanges:
    """`held` (names an unreadable root row may spell) are never gone: their mirrors are left alone."""
    upstream, mirrored = set(discovered), set(stored)
    kept_back = (mirrored - upstream) & set(held)
    return SurveyChanges(
        new=tuple(sorted(upstream - mirrored)),
        gone=tuple(sorted(mirrored - upstream - kept_back)),
        kept=tuple(sorted(upstream & mirrored)),
        held=tuple(sorted(kept_back)),
    )


def check_retire_guard(retiring: int, stored: int, max_fraction: float) -> None:
    """Refuse to retire more than `max_fraction` of the stored surveys at once.

    `allow_mass_delete` is what lets a run retire at all; it does not lift this share (a root
    page dropping half of BLS is far likelier a broken page than BLS): that takes a raised
    QUEST_MAX_RETIRE_FRACTION for the run, a second deliberate decision.
    """
    if retiring == 0:
        return
    stored = max(stored, retiring)
    if retiring / stored > max_fraction:
        raise MassDeleteError(
            f"refusing to retire {retiring} of {stored} stored surveys at once "
            f"(> {max_fraction:.0%}, QUEST_MAX_RETIRE_FRACTION); nothing was removed. If BLS really "
            "dropped them, run again with --allow-mass-delete and QUEST_MAX_RETIRE_FRACTION=1"
        )


def _names(names: Iterable[str], limit: int = 10) -> str:
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (f", ... {len(names) - limit} more" if len(names) > limit else "")


def describe_discovery(
    root_url: str,
    surveys: Iterable[str],
    new: Iterable[str],
    gone: Iterable[str],
    *,
    skipped: Iterable[str] = (),
    skipped_count: int | None = None,
    held: Iterable[str] = (),
    removal: str = "kept: pass --allow-mass-delete to remove",
) -> str:
    """One line: `discovered 62 surveys at <url>: 1 new (xx), 1 gone (yy; kept: ...)`.

    `skipped` may be the first few of `skipped_count` skipped folders (the page can hold 50,000).
    """
    surveys, new, gone, skipped, held = list(surveys), list(new), list(gone), list(skipped), list(held)
    text = f"discovered {len(surveys)} surveys at {root_url}: {len(new)} new"
    if new:
        text += f" ({_names(new)})"
    text += f", {len(gone)} gone"
    if gone:
        text += f" ({_names(gone)}; {removal})"
    if held:
        text += f", {len(held)} held ({_names(held)}: a root row that is no clean folder may name them)"
    count = len(skipped) if skipped_count is None else max(skipped_count, len(skipped))
    if count:
        shown = [_clip(s) for s in skipped[:FIRST_FEW]]
        more = f", ... {count - len(shown):,} more" if count > len(shown) else ""
        text += f"; {count:,} folders skipped ({', '.join(shown)}{more}: not survey folders)"
    return text
