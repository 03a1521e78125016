"""One survey's sync, as plain steps: what the `mirror-survey` flow orchestrates.

The flow (`flows/ingest.py`) runs these steps as Prefect tasks; the function's plain entry
(`flows/runtime/plain.py`, a stack without a Prefect API) runs the same steps directly. Everything
that keeps the store safe lives here once, whichever runs it: one sync per survey (the lease),
leftovers of killed syncs removed, the delete guard, nothing deleted after a failed transfer, and
the lease checked again before any delete.

Retries are our own loop (`flows.io.http.call_with_retries`): exponential backoff with jitter,
`Retry-After` honoured for 429/503, other 4xx failing at once. Prefect's task retries cannot take
the wait from the failing response, and a loop inside the task keeps one task run per file in the
UI with each retry logged to it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, Field

from flows.core.errors import IncompleteBody, TransferFailed, UpstreamUnavailable
from flows.core.humanize import human_bytes
from flows.core.listing import Listing
from flows.core.markdown import md_code, md_text
from flows.core.names import bls_key, bls_survey_prefix
from flows.core.objects import META_SOURCE_URL, META_UPSTREAM_LAST_MODIFIED, META_UPSTREAM_SIZE
from flows.core.plan import Action, PlanItem, StoredFile, SyncPlan, check_delete_guard, plan_sync
from flows.core.problems import summarise
from flows.io.fetch import fetch_listing
from flows.io.http import (
    DEADLINE_EXTENSION,
    RetryPolicy,
    call_with_retries,
    check_status,
    guarded_transport,
    make_client,
    request_deadline,
)
from flows.io.store import Lease, ObjectStore, store_from_settings
from flows.progress import current_sink
from flows.settings import Settings

CHUNK_BYTES = 1024 * 1024
T = TypeVar("T")
# Why a run aborts its transfers in flight at its hard stop: they are "not done yet", not failed.
CONTINUATION_REASON = "the run's time is nearly up; the file is left for the follow-up run"
# Prefect's run logger is a LoggerAdapter; the plain entry passes a module logger.
Logger = logging.Logger | logging.LoggerAdapter[Any]


class MirrorSummary(BaseModel):
    """What one survey mirror did (JSON-able: flows return it, the CLI and Lambda print it)."""

    survey: str
    source_url: str
    store_url: str
    dry_run: bool = False
    added: list[str] = Field(default_factory=list)
    updated: list[str] = Field(default_factory=list)
    deleted: list[str] = Field(default_factory=list)
    kept: list[str] = Field(default_factory=list)
    bytes_transferred: int = 0
    skipped_hrefs: list[str] = Field(default_factory=list)
    # A run that stopped before its time was up (issue 12): what it left for its follow-up run.
    not_done: list[str] = Field(default_factory=list)
    continues_in: str | None = None
    # A run that ended its continuation chain with files left (issue 27): its one-line final message.
    stopped: str | None = None

    @property
    def partial(self) -> bool:
        return bool(self.not_done)

    def counts(self) -> dict[str, int]:
        return {
            "added": len(self.added),
            "updated": len(self.updated),
            "deleted": len(self.deleted),
            "kept": len(self.kept),
        }

    def counts_text(self) -> str:
        """`3 added, 0 updated, 1 deleted, 8 kept, 4.0 KiB`: the one wording of the counts."""
        c = self.counts()
        text = (
            f"{c['added']} added, {c['updated']} updated, {c['deleted']} deleted, {c['kept']} kept, "
            f"{human_bytes(self.bytes_transferred)}"
        )
        return text + (f", {len(self.not_done)} not done yet" if self.not_done else "")

    def changes_text(self) -> str:
        """The artifact's description: `pr: 2 updated, 4.0 KiB` or `pr: no change (12 kept)`."""
        c = self.counts()
        changed = [f"{c[k]} {k}" for k in ("added", "updated", "deleted") if c[k]]
        if self.dry_run:
            return f"{self.survey} (dry run): would change {', '.join(changed) or 'nothing'}"
        if not changed and not self.not_done:
            return f"{self.survey}: no change ({c['kept']} kept)"
        text = f"{self.survey}: {', '.join(changed) or 'nothing yet'}, {human_bytes(self.bytes_transferred)}"
        left = "the next daily ingest" if self.stopped else "the follow-up run"
        return text + (f"; {len(self.not_done)} files left for {left}" if self.not_done else "")

    def describe(self) -> str:
        """A few lines for the terminal; a dry run lists every planned change."""
        route = f"[{self.source_url} -> {self.store_url}]"
        if not self.dry_run:
            return f"{self.survey}: {self.counts_text()}  {route}"
        c = self.counts()
        lines = [
            f"{self.survey} (dry run, nothing changed): would add {c['added']}, update {c['updated']}, "
            f"delete {c['deleted']}, keep {c['kept']}  {route}"
        ]
        for verb, names in (("add", self.added), ("update", self.updated), ("delete", self.deleted)):
            lines += [f"  {verb:<7}{name}" for name in names]
        return "\n".join(lines)

    def markdown(self, plan: SyncPlan) -> str:
        """The run's artifact: the counts, then every change with its reason."""
        c = self.counts()
        head = "Dry run (nothing changed)" if self.dry_run else "Mirror"
        lines = [
            f"# {head}: BLS {md_code(self.survey)}",
            f"{md_code(self.source_url)} → {md_code(self.store_url)}",
            "",
            "| added | updated | deleted | kept | transferred |",
            "|---:|---:|---:|---:|---:|",
            f"| {c['added']:,} | {c['updated']:,} | {c['deleted']:,} | {c['kept']:,} "
            f"| {human_bytes(self.bytes_transferred)} |",
        ]
        if self.stopped:  # our own words and counts only: no upstream text
            lines += ["", f"**Stopped:** {self.stopped.removeprefix('stopped: ')}"]
        elif self.not_done:
            lines += [
                "",
                f"**Partial:** {len(self.not_done):,} files left for the follow-up run "
                f"{md_text(self.continues_in or '')}",
            ]
        changes = [i for i in plan.items if i.action != Action.KEEP]
        if changes:
            lines += ["", "| action | file | size | why |", "|---|---|---:|---|"]
            lines += [
                f"| {i.action.value} | {md_code(i.name)} | {human_bytes(i.size)} | {md_text(i.reason)} |"
                for i in changes
            ]
        return "\n".join(lines) + "\n"


def artifact_key(prefix: str, name: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return f"{prefix}-" + "".join(ch if ch.isalnum() else "-" for ch in name.lower())


# --------------------------------------------------------------------------- retries


def retried(fn: Callable[[], T], settings: Settings, what: str, logger: Logger, client: Any = None) -> T:
    """`call_with_retries` with each retry logged; a transport failure that outlasts them is expected.

    No retry starts once the client's transport was aborted (the run is stopping).
    """
    guard = guarded_transport(client) if client is not None else None
    stopped = (lambda: guard.aborted is not None) if guard is not None else (lambda: False)

    def on_retry(attempt: int, exc: BaseException, wait: float) -> None:
        logger.warning("%s: attempt %d failed (%s); retrying in %.2fs", what, attempt, exc, wait)

    try:
        return call_with_retries(fn, RetryPolicy.from_settings(settings), on_retry, stopped=stopped)
    except httpx.HTTPError as exc:
        raise UpstreamUnavailable(f"{what}: {type(exc).__name__}: {exc}") from exc


# --------------------------------------------------------------------------- the steps (each one task)


def list_survey(url: str, client: httpx.Client, settings: Settings, logger: Logger) -> Listing:
    """GET + parse the survey directory, retried."""
    listing = retried(
        lambda: fetch_listing(client, url, settings.listing_max_bytes),
        settings,
        f"listing {url}",
        logger,
        client,
    )
    # One line each, however many rows the page holds (a count and the first few).
    if listing.skipped:
        hrefs = (repr(href) for href in listing.skipped)
        logger.warning("listing %s: ignored hrefs outside the survey directory: %s", url, summarise(hrefs))
    if listing.problems:
        problems = summarise(listing.problems)
        logger.warning("listing %s: unreadable %s; their stored copies are kept as is", url, problems)
    return listing


def read_mirror_state(store: ObjectStore, survey: str, workers: int = 8) -> dict[str, StoredFile]:
    """Stored files directly under `bls/<survey>/`, with the listing facts recorded at mirror time."""
    prefix = bls_survey_prefix(survey)
    state = {}
    for key, obj in store.stat_prefix(prefix, workers).items():
        name = key[len(prefix) :]
        if "/" not in name:
            state[name] = StoredFile.from_object(name, obj)
    return state


def _counted(chunks: Iterator[bytes], name: str, expected: int) -> Iterator[bytes]:
    """Pass chunks on, reporting progress; fail if more bytes arrive than expected."""
    sink = current_sink()
    if sink is not None:
        sink.start(name, expected)
    seen = 0
    for chunk in chunks:
        seen += len(chunk)
        if seen > expected:
            raise IncompleteBody(f"{name}: more than the {expected} bytes announced")
        if sink is not None:
            sink.advance(name, len(chunk))
        yield chunk
    if sink is not None and seen == expected:
        sink.finish(name)


def transfer_once(
    client: httpx.Client, store: ObjectStore, survey: str, item: PlanItem, settings: Settings
) -> int:
    """Stream one file from upstream into the store; the old object stays until the new one is whole."""
    assert item.url is not None
    deadline = request_deadline(
        settings.http_deadline_floor_seconds, settings.http_min_rate_bytes_per_second, item.size
    )
    with client.stream("GET", item.url, extensions={DEADLINE_EXTENSION: deadline}) as response:
        check_status(response, item.url)
        announced = response.headers.get("content-length")
        if announced is not None and int(announced) != item.size:
            raise IncompleteBody(
                f"{item.url}: Content-Length {announced} differs from the listed size {item.size}"
            )
        metadata = {
            META_SOURCE_URL: str(response.url),  # the URL actually read (after same-site redirects)
            META_UPSTREAM_LAST_MODIFIED: item.last_modified or "",
            META_UPSTREAM_SIZE: str(item.size),
        }
        stored = store.put_stream(
            bls_key(survey, item.name),
            _counted(response.iter_bytes(CHUNK_BYTES), item.name, item.size),
            metadata=metadata,
            content_type="text/plain",
            expected_size=item.size,
        )
    return stored.size


def stopped_for_continuation(client: httpx.Client) -> bool:
    """True when `client`'s transfers were aborted at the run's hard stop (not done yet, not failed)."""
    guard = guarded_transport(client)
    return guard is not None and guard.aborted == CONTINUATION_REASON


def transfer_file(
    client: httpx.Client, store: ObjectStore, survey: str, item: PlanItem, settings: Settings, logger: Logger
) -> int:
    """One file, retried as a whole (a half-streamed body is never kept)."""
    what = item.url or item.name
    size = retried(
        lambda: transfer_once(client, store, survey, item, settings), settings, what, logger, client
    )
    verb = "added" if item.action == Action.ADD else "updated"
    logger.info("%s %s (%s)", verb, item.name, human_bytes(size))
    return size


def delete_files(store: ObjectStore, survey: str, names: list[str], logger: Logger) -> list[str]:
    for name in names:
        store.delete(bls_key(survey, name))
        logger.info("deleted %s (no longer listed)", name)
    return names


# --------------------------------------------------------------------------- one sync's frame


@dataclass
class SurveySync:
    """The frame around one survey's steps: its URL, store, client and lease, and the rules between
    the steps. Opened by `SurveySync.open`; both entries (flow and plain) go through it."""

    settings: Settings
    survey: str
    url: str
    store: ObjectStore
    client: httpx.Client
    lease: Lease
    dry_run: bool
    logger: Logger

    @classmethod
    @contextmanager
    def open(cls, settings: Settings, survey: str, dry_run: bool, logger: Logger) -> Iterator[SurveySync]:
        """Client and lease for one sync (a dry run writes nothing, so it holds none); what a killed
        sync left behind goes first, past the grace period."""
        survey = survey.strip().lower()
        settings.check_contacts([survey])  # fail at once, with the fix, when BLS would refuse us
        url = settings.survey_url(survey)
        store = store_from_settings(settings, read_only=dry_run)  # a dry run (and a check) writes nothing
        prefix = bls_survey_prefix(survey)
        lease = store.lease(prefix, settings.lease_seconds, hold=not dry_run)
        with make_client(settings, url) as client, lease:
            if not dry_run:
                for leftover in store.cleanup_stale(prefix, settings.stale_upload_grace_seconds):
                    logger.info("removed a leftover of an interrupted sync: %s", leftover)
            yield cls(settings, survey, url, store, client, lease, dry_run, logger)
            if not dry_run:  # the next plan of this survey then costs a LIST and a GET, not a HEAD a file
                store.refresh_stat_cache(prefix)

    def plan(
        self, listing: Listing, stored: dict[str, StoredFile], allow_mass_delete: bool
    ) -> tuple[SyncPlan, MirrorSummary]:
        """The plan (rows the listing could not read are held, never deleted) and the delete guard."""
        plan = plan_sync(self.survey, listing.entries, stored, held=listing.unreadable)
        counts = plan.counts()
        self.logger.info(
            "plan for %s: %s", self.survey, ", ".join(f"{n:,} to {action}" for action, n in counts.items())
        )
        check_delete_guard(plan, self.settings.max_delete_fraction, allow_mass_delete)
        summary = MirrorSummary(
            survey=self.survey,
            source_url=self.url,
            store_url=self.store.location(bls_survey_prefix(self.survey) + "_")[:-1],  # the exact prefix
            dry_run=self.dry_run,
            kept=[i.name for i in plan.of(Action.KEEP)],
            skipped_hrefs=list(listing.skipped),
        )
        if self.dry_run:
            summary.added = [i.name for i in plan.of(Action.ADD)]
            summary.updated = [i.name for i in plan.of(Action.UPDATE)]
            summary.deleted = [i.name for i in plan.of(Action.DELETE)]
        return plan, summary

    def transfer_args(self, item: PlanItem) -> dict[str, Any]:
        """The arguments of one `transfer_file` (less the logger, which each entry supplies)."""
        return {
            "client": self.client,
            "store": self.store,
            "survey": self.survey,
            "item": item,
            "settings": self.settings,
        }

    @contextmanager
    def abort_on_exit(self) -> Iterator[None]:
        """Abort the client's transfers when the run stops while they are in flight.

        Ctrl-C, SIGTERM (Prefect raises TerminationSignal) or a crash arrive in the thread waiting on
        the transfers. Aborting the transport ends every open download at once, so each store write
        aborts (nothing half-published, multipart uploads aborted) and the executor's shutdown, which
        waits for its threads, returns in seconds instead of after every transfer.
        """
        try:
            yield
        except BaseException as exc:
            guard = guarded_transport(self.client)
            if guard is not None:
                guard.abort(f"the run is stopping ({type(exc).__name__})")
            raise

    def stop_for_continuation(self) -> None:
        """The hard stop: abort the transfers in flight (the store keeps the old objects)."""
        guard = guarded_transport(self.client)
        if guard is not None:
            guard.abort(CONTINUATION_REASON)

    def stopped_for_continuation(self) -> bool:
        return stopped_for_continuation(self.client)

    def deletions(
        self,
        plan: SyncPlan,
        summary: MirrorSummary,
        outcomes: Iterable[tuple[PlanItem, int, str | None]],
        not_done: Iterable[PlanItem] = (),
    ) -> list[str]:
        """Tally the transfers (item, bytes, error or None) into the summary; what may be deleted now.

        Nothing is deleted after a failed transfer, and only while this sync still holds the survey's
        lease (another sync may have taken over otherwise): deleting is irreversible. A partial run
        (`not_done`: transfers left for a follow-up run) deletes nothing either: the run that
        completes the plan does.
        """
        failures: list[str] = []
        for item, size, error in outcomes:
            if error is None:
                summary.bytes_transferred += size
                (summary.added if item.action == Action.ADD else summary.updated).append(item.name)
            else:
                failures.append(f"{item.name}: {error}")
        if failures:
            raise TransferFailed(
                f"{self.survey}: {len(failures)} of {len(plan.transfers)} transfers failed, nothing deleted: "
                + "; ".join(failures)
            )
        summary.not_done = [item.name for item in not_done]
        if summary.not_done:
            return []
        deletes = [i.name for i in plan.of(Action.DELETE)]
        if deletes:
            self.lease.check()
        return deletes
