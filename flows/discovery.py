"""Which surveys a run mirrors, as plain steps: `QUEST_BLS_SURVEYS=all` reads the `time.series/` root.

An explicit list is used as given (no request). Discovery makes one GET of the root listing
(retried like every listing), parses it strictly (`flows.core.discovery`: a cut, junk or empty
root is an error, never "every survey is gone") and compares it with the survey folders in the
store, read by one delimiter listing of `bls/`. A survey gone upstream is reported and kept; its
mirror is removed only with `--allow-mass-delete`, under that survey's lease, by `retire_surveys`,
and never more than QUEST_MAX_RETIRE_FRACTION of the stored surveys at once. A stored survey that a
root row which is no clean folder may name is held: neither mirrored nor retired. What the root
skipped is logged as one line (a count and the first few), however many rows a page holds.

The `ingest` flow runs these as tasks; the CLI and the plain entry (`flows/runtime/plain.py`) call
them directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import httpx
from pydantic import BaseModel, Field

from flows.core.discovery import (
    RootListing,
    check_retire_guard,
    compare_surveys,
    describe_discovery,
    is_survey_name,
    parse_root_listing,
)
from flows.core.errors import ListingError, MirrorError, QuestError, one_line
from flows.core.humanize import counted
from flows.core.names import ALL_SURVEYS, BLS_PREFIX, bls_survey_prefix
from flows.core.problems import FIRST_FEW, summarise
from flows.io.fetch import fetch_listing_page
from flows.io.store import ObjectStore, store_from_settings
from flows.mirror import Logger, retried
from flows.settings import MAX_SURVEYS, Settings, parse_surveys

T = TypeVar("T")
KEEP_GONE = "kept: pass --allow-mass-delete to remove"


class SurveySelection(BaseModel):
    """The surveys a run mirrors and how they were chosen (JSON-able: flows return it, logs print it)."""

    surveys: list[str]
    discovered: bool = False
    root_url: str | None = None
    new: list[str] = Field(default_factory=list)
    gone: list[str] = Field(default_factory=list)  # stored, no longer listed: not mirrored, kept
    # Stored, not listed as a clean folder, but a root row may name them: neither mirrored nor retired.
    held: list[str] = Field(default_factory=list)
    skipped: list[str] = Field(default_factory=list)  # the first few root folders that are no survey names
    skipped_count: int = 0  # all of them (a page may hold 50,000)
    problems: list[str] = Field(default_factory=list)  # the first few problems of the root page
    problem_count: int = 0
    retired: list[str] = Field(default_factory=list)  # gone surveys whose mirror was removed

    def describe(self) -> str:
        """One line: `discovered 62 surveys at <url>: 1 new (xx), 1 gone (yy; kept: ...)`."""
        if not self.discovered:
            return f"{counted(len(self.surveys), 'survey')} (as configured): {', '.join(self.surveys)}"
        if self.retired:
            kept = [s for s in self.gone if s not in self.retired]
            removal = "removed (--allow-mass-delete)" + (f"; kept: {', '.join(kept)}" if kept else "")
        else:
            removal = KEEP_GONE
        return describe_discovery(
            self.root_url or "",
            self.surveys,
            self.new,
            self.gone,
            skipped=self.skipped,
            skipped_count=self.skipped_count,
            held=self.held,
            removal=removal,
        )


def mirror_each(
    selection: SurveySelection, mirror_one: Callable[[str], T], logger: Logger
) -> tuple[list[T], dict[str, str]]:
    """Run `mirror_one` for every selected survey: (results, failed survey -> why).

    Discovered surveys are independent (one odd folder upstream must not hold back the other 60):
    a failure is logged and the next survey runs; the caller raises `surveys_failed` at the end. An
    explicit list stops at its first failure, as it always did.
    """
    results: list[T] = []
    failures: dict[str, str] = {}
    for survey in selection.surveys:
        try:
            results.append(mirror_one(survey))
        except QuestError as exc:
            if not selection.discovered:
                raise
            logger.error("survey %s failed: %s", survey, one_line(str(exc)))
            failures[survey] = one_line(str(exc))
    return results, failures


def surveys_failed(failures: dict[str, str], total: int) -> MirrorError:
    """One error naming every failed survey and why (the others were mirrored)."""
    why = "; ".join(f"{survey}: {reason}" for survey, reason in failures.items())
    return MirrorError(f"{len(failures)} of {total} surveys failed: {why}")


def wants_discovery(settings: Settings, requested: list[str] | None) -> bool:
    """`["all"]`, or nothing requested and QUEST_BLS_SURVEYS=all."""
    if requested:
        return [s.strip().lower() for s in requested] == [ALL_SURVEYS]
    return settings.discover_surveys


def fetch_root_listing(client: httpx.Client, root_url: str, max_bytes: int) -> RootListing:
    """GET and parse the root listing, with the same refusals (and size cap) as a survey's listing."""
    return parse_root_listing(*fetch_listing_page(client, root_url, max_bytes))


def stored_surveys(store: ObjectStore) -> list[str]:
    """The survey folders under `bls/`, from one delimiter listing (not every key of the mirror).

    A folder counts while it holds any object, the store's own lease record too: `gone` candidates
    are confirmed with a listing of their own keys (see `resolve_surveys`).
    """
    names = (p[len(BLS_PREFIX) :].rstrip("/") for p in store.list_prefixes(BLS_PREFIX))
    return sorted(n for n in names if is_survey_name(n))


def resolve_surveys(
    settings: Settings,
    requested: list[str] | None,
    client: httpx.Client,
    logger: Logger,
    *,
    store: ObjectStore | None = None,
) -> SurveySelection:
    """The surveys to mirror: `requested` (or QUEST_BLS_SURVEYS) as given, or discovered at the root.

    Discovery makes exactly one root GET (more only when retried) and raises ListingError (nothing
    chosen, nothing deleted) when the root is not a complete listing naming survey folders.
    """
    if not wants_discovery(settings, requested):
        return SurveySelection(surveys=parse_surveys(requested or settings.bls_surveys))
    url = settings.bls_base_url
    root = retried(
        lambda: fetch_root_listing(client, url, settings.listing_max_bytes),
        settings,
        f"listing {url}",
        logger,
        client,
    )
    if root.problems:  # one line, however many rows the page holds
        logger.warning("root listing %s: skipped %s", url, summarise(root.problems))
    if len(root.surveys) > MAX_SURVEYS:  # a run (and a bill) per survey: never from a page alone
        raise ListingError(
            f"{url}: the root lists {len(root.surveys)} survey folders, more than {MAX_SURVEYS} "
            "(BLS publishes about 60); refusing to mirror them all: name the surveys in QUEST_BLS_SURVEYS"
        )
    store = store or store_from_settings(settings)
    changes = compare_surveys(root.surveys, stored_surveys(store), root.held)
    # A folder left with only the store's own records (a lease) is no mirror any more.
    gone = [s for s in changes.gone if store.list_keys(bls_survey_prefix(s))]
    selection = SurveySelection(
        surveys=list(root.surveys),
        discovered=True,
        root_url=root.url,
        new=list(changes.new),
        gone=gone,
        held=list(changes.held),
        skipped=list(root.skipped[:FIRST_FEW]),
        skipped_count=len(root.skipped),
        problems=list(root.problems[:FIRST_FEW]),
        problem_count=len(root.problems),
    )
    if changes.held:
        logger.warning(
            "root listing %s: stored surveys not listed as a clean folder but maybe named by a row "
            "there, held (neither mirrored nor removed): %s",
            url,
            summarise(f"{s}: {root.held[s]}" for s in changes.held),
        )
    for survey in gone:
        logger.warning(
            "survey %s is no longer listed at %s: its mirror %s is not updated (%s)",
            survey,
            root.url,
            bls_survey_prefix(survey),
            KEEP_GONE,
        )
    logger.info("%s", selection.describe())
    return selection


def retire_surveys(
    settings: Settings,
    gone: list[str],
    allow_mass_delete: bool,
    logger: Logger,
    *,
    store: ObjectStore | None = None,
) -> list[str]:
    """Remove the mirrors of surveys gone upstream, only with `allow_mass_delete`; the surveys removed.

    Each survey is removed under its lease (a sync of it elsewhere is never interleaved with), and
    the lease is checked again before the first delete. Without the flag each is a warning, no more.
    More than QUEST_MAX_RETIRE_FRACTION of the stored surveys at once raises MassDeleteError before
    anything is removed: `allow_mass_delete` alone does not lift that share.
    """
    if not gone:
        return []
    if not allow_mass_delete:
        for survey in gone:
            logger.warning("survey %s is gone upstream; its mirror is %s", survey, KEEP_GONE)
        return []
    store = store or store_from_settings(settings)
    for survey in gone:
        if not is_survey_name(survey):
            raise MirrorError(f"refusing to remove {survey!r}: not a survey name")
    check_retire_guard(len(gone), len(stored_surveys(store)), settings.max_retire_fraction)
    retired = []
    for survey in gone:
        prefix = bls_survey_prefix(survey)
        with store.lease(prefix, settings.lease_seconds) as lease:
            keys = store.list_keys(prefix)
            lease.check()
            for key in keys:
                store.delete(key)
        logger.warning(
            "survey %s is gone upstream: removed its mirror (%d objects, --allow-mass-delete)",
            survey,
            len(keys),
        )
        retired.append(survey)
    return retired
