"""Which BLS surveys exist: read the `time.series/` root listing, compare it with the mirror (pure).

The root is an IIS listing of folders, one per survey:
`  3/18/2025  9:10 AM        &lt;dir&gt; <A HREF="/pub/time.series/ap/">ap</A><br>`.
It is read as strictly as a survey's listing (`flows.core.listing`): a page cut
before its end, a page that is no listing, or a root naming no survey folder is an error, never
"every survey is gone" (which, with `--allow-mass-delete`, would empty the mirror). Folders whose
names are not survey names are skipped and reported, as are hrefs leaving the root.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from flows.core.errors import ListingError
from flows.core.listing import folder_name, has_parent_link, listing_block, listing_rows

# The rule `flows.settings.parse_surveys` applies to names a user writes.
SURVEY_NAME = re.compile(r"[a-z0-9]+")
MAX_SURVEY_CHARS = 32


def is_survey_name(name: str) -> bool:
    """Lowercase ASCII letters and digits, at most MAX_SURVEY_CHARS: safe in a URL and a store key."""
    return len(name) <= MAX_SURVEY_CHARS and SURVEY_NAME.fullmatch(name) is not None


@dataclass(frozen=True)
class RootListing:
    """The survey folders a root listing names (sorted, lowercase, unique) and what was passed over."""

    url: str
    surveys: tuple[str, ...]
    skipped: tuple[str, ...] = ()  # folder names / hrefs not taken as surveys
    problems: tuple[str, ...] = ()  # one line per skipped entry, for the run log
    files: tuple[str, ...] = ()  # files listed at the root (never surveys)


def parse_root_listing(page: str, root_url: str) -> RootListing:
    """The surveys of a complete IIS listing of the `time.series/` root.

    Raises IncompleteListing for a page cut before `</pre>...</html>`, ListingError for a page
    that is not a listing or names no survey folder.
    """
    if not root_url.endswith("/"):
        root_url += "/"
    block = listing_block(page, root_url)
    surveys: set[str] = set()
    skipped: list[str] = []
    problems: list[str] = []
    files: list[str] = []
    rows = listing_rows(block)
    for row in rows:
        if row.parent:
            continue
        if not (row.dated_folder or (row.row is None and row.href.endswith("/"))):
            files.append(row.text)  # a file at the root: not a survey
            continue
        name = folder_name(root_url, row.href)
        if name is None:
            skipped.append(row.href)
            problems.append(f"folder href {row.href!r} is not a folder directly under the root")
            continue
        survey = name.lower()
        if not is_survey_name(survey):
            skipped.append(name)
            problems.append(
                f"folder {name!r} is not a survey name (ASCII letters and digits, at most {MAX_SURVEY_CHARS})"
            )
            continue
        surveys.add(survey)
    if not surveys:
        if not rows or (not skipped and not files and not has_parent_link(block)):
            raise ListingError(f"{root_url}: the response is not a directory listing (no rows)")
        raise ListingError(
            f"{root_url}: the root listing names no survey folders; refusing to treat that as "
            "'every survey is gone'"
        )
    return RootListing(root_url, tuple(sorted(surveys)), tuple(skipped), tuple(problems), tuple(files))


@dataclass(frozen=True)
class SurveyChanges:
    """Discovered surveys against the stored ones, each sorted."""

    new: tuple[str, ...]  # listed upstream, nothing stored yet
    gone: tuple[str, ...]  # stored, no longer listed upstream
    kept: tuple[str, ...]  # both


def compare_surveys(discovered: Iterable[str], stored: Iterable[str]) -> SurveyChanges:
    upstream, mirrored = set(discovered), set(stored)
    return SurveyChanges(
        new=tuple(sorted(upstream - mirrored)),
        gone=tuple(sorted(mirrored - upstream)),
        kept=tuple(sorted(upstream & mirrored)),
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
    removal: str = "kept: pass --allow-mass-delete to remove",
) -> str:
    """One line: `discovered 62 surveys at <url>: 1 new (xx), 1 gone (yy; kept: ...)`."""
    surveys, new, gone, skipped = list(surveys), list(new), list(gone), list(skipped)
    text = f"discovered {len(surveys)} surveys at {root_url}: {len(new)} new"
    if new:
        text += f" ({_names(new)})"
    text += f", {len(gone)} gone"
    if gone:
        text += f" ({_names(gone)}; {removal})"
    if skipped:
        text += f"; {len(skipped)} folders skipped ({_names(skipped)}: not survey folders)"
    return text
