"""Prefect flows for the ingest: mirror BLS surveys, snapshot the DataUSA population, or both.

Flows take only JSON-able parameters (deployments and the Prefect UI can run them) and build
`Settings()` at entry. Decisions live in pure modules (`sources.bls.parse_listing`,
`sync.plan_sync`, `sources.datausa.normalise_population`); the tasks here only do I/O.

Retries are our own loop (`flows.io.http.call_with_retries`) inside each task: exponential backoff
with jitter, `Retry-After` honoured for 429/503, 4xx other than 408/429 failing at once. Prefect
cannot take the wait from the failing response, and a loop inside the task keeps one task run
per file in the UI with each retry logged to it.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, Field

from flows.core.errors import IncompleteBody, QuestError, TransferFailed, UpstreamUnavailable
from flows.core.listing import Listing
from flows.core.names import bls_key, bls_survey_prefix, population_key, timestamp
from flows.core.objects import META_SOURCE_URL, META_UPSTREAM_LAST_MODIFIED, META_UPSTREAM_SIZE
from flows.core.plan import Action, PlanItem, StoredFile, SyncPlan, check_delete_guard, plan_sync
from flows.core.population import normalise_population
from flows.io.fetch import fetch_listing, fetch_population
from flows.io.http import (
    DEADLINE_EXTENSION,
    RetryPolicy,
    call_with_retries,
    check_status,
    guarded_transport,
    make_client,
    request_deadline,
)
from flows.io.store import Lease, ObjectStore, stat_prefix, store_from_settings
from flows.orchestration import call, in_flow_run, markdown_artifact, run_flow, run_logger
from flows.progress import current_sink
from flows.settings import Settings, parse_surveys

CHUNK_BYTES = 1024 * 1024


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

    def counts(self) -> dict[str, int]:
        return {
            "added": len(self.added),
            "updated": len(self.updated),
            "deleted": len(self.deleted),
            "kept": len(self.kept),
        }

    def describe(self) -> str:
        """A few lines for the terminal; a dry run lists every planned change."""
        c = self.counts()
        if self.dry_run:
            lines = [
                f"{self.survey} (dry run, nothing changed): would add {c['added']}, update {c['updated']}, "
                f"delete {c['deleted']}, keep {c['kept']}  [{self.source_url} -> {self.store_url}]"
            ]
            for verb, names in (("add", self.added), ("update", self.updated), ("delete", self.deleted)):
                lines += [f"  {verb:<7}{name}" for name in names]
            return "\n".join(lines)
        return (
            f"{self.survey}: {c['added']} added, {c['updated']} updated, {c['deleted']} deleted, "
            f"{c['kept']} kept, {self.bytes_transferred} bytes  [{self.source_url} -> {self.store_url}]"
        )


class PopulationSummary(BaseModel):
    """What one population snapshot stored (the flow returns it, so no caller re-reads the body)."""

    key: str
    location: str  # where the snapshot is, for people (s3://... or a path)
    source_url: str
    bytes: int
    years: list[int]


class IngestSummary(BaseModel):
    surveys: list[MirrorSummary]
    population: PopulationSummary


def _retried(fn: Any, settings: Settings, what: str, client: Any = None) -> Any:
    """`call_with_retries` with each retry logged; a transport failure that outlasts them is expected.

    No retry starts once the client's transport was aborted (the run is stopping).
    """
    import httpx

    guard = guarded_transport(client) if client is not None else None
    stopped = (lambda: guard.aborted is not None) if guard is not None else (lambda: False)
    try:
        return call_with_retries(
            fn, RetryPolicy.from_settings(settings), _retry_logger(what), stopped=stopped
        )
    except httpx.HTTPError as exc:
        raise UpstreamUnavailable(f"{what}: {type(exc).__name__}: {exc}") from exc


def _retry_logger(what: str) -> Any:
    logger = run_logger(__name__)

    def on_retry(attempt: int, exc: BaseException, wait: float) -> None:
        logger.warning("%s: attempt %d failed (%s); retrying in %.2fs", what, attempt, exc, wait)

    return on_retry


# --------------------------------------------------------------------------- tasks (I/O only)


@task(name="list-survey", cache_policy=NO_CACHE)
def list_survey(url: str, client: Any, settings: Settings) -> Listing:
    """GET + parse the survey directory, retried."""
    listing = _retried(lambda: fetch_listing(client, url), settings, f"listing {url}", client)
    logger = run_logger(__name__)
    for href in listing.skipped:
        logger.warning("listing %s: ignored href %r (outside the survey directory)", url, href)
    for problem in listing.problems:
        logger.warning("listing %s: %s; its stored copy is kept as is", url, problem)
    return listing


@task(name="read-mirror-state", cache_policy=NO_CACHE)
def read_mirror_state(store: ObjectStore, survey: str, workers: int = 8) -> dict[str, StoredFile]:
    """Stored files directly under `bls/<survey>/`, with the listing facts recorded at mirror time."""
    prefix = bls_survey_prefix(survey)
    state = {}
    for key, obj in stat_prefix(store, prefix, workers).items():
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


def transfer_once(client: Any, store: ObjectStore, survey: str, item: PlanItem, settings: Settings) -> int:
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


@task(name="transfer-file", task_run_name="transfer-{item.name}", cache_policy=NO_CACHE)
def transfer_file(client: Any, store: ObjectStore, survey: str, item: PlanItem, settings: Settings) -> int:
    size = _retried(
        lambda: transfer_once(client, store, survey, item, settings), settings, item.url or item.name, client
    )
    run_logger(__name__).info(
        "%s %s (%d bytes)", "added" if item.action == Action.ADD else "updated", item.name, size
    )
    return size


@task(name="delete-files", cache_policy=NO_CACHE)
def delete_files(store: ObjectStore, survey: str, names: list[str]) -> list[str]:
    for name in names:
        store.delete(bls_key(survey, name))
        run_logger(__name__).info("deleted %s (no longer listed)", name)
    return names


@task(name="fetch-population", cache_policy=NO_CACHE)
def fetch_population_body(url: str, settings: Settings) -> bytes:
    with make_client(settings, url) as client:
        return _retried(
            lambda: fetch_population(client, url, settings.population_max_bytes),
            settings,
            f"population {url}",
        )


@task(name="store-population", cache_policy=NO_CACHE)
def store_population(store: ObjectStore, key: str, body: bytes, url: str) -> str:
    store.put_bytes(key, body, {META_SOURCE_URL: url}, content_type="application/json")
    return store.location(key)


# --------------------------------------------------------------------------- flows


def _mirror_markdown(summary: MirrorSummary, plan: SyncPlan) -> str:
    c = summary.counts()
    head = "Dry run (nothing changed)" if summary.dry_run else "Mirror"
    lines = [
        f"# {head}: BLS `{summary.survey}`",
        f"`{summary.source_url}` → `{summary.store_url}`",
        "",
        "| added | updated | deleted | kept | bytes transferred |",
        "|---:|---:|---:|---:|---:|",
        f"| {c['added']} | {c['updated']} | {c['deleted']} | {c['kept']} | {summary.bytes_transferred} |",
    ]
    changes = [i for i in plan.items if i.action != Action.KEEP]
    if changes:
        lines += ["", "| action | file | size | why |", "|---|---|---:|---|"]
        lines += [f"| {i.action.value} | `{i.name}` | {i.size} | {i.reason} |" for i in changes]
    return "\n".join(lines) + "\n"


def _artifact_key(prefix: str, name: str) -> str:
    return f"{prefix}-" + "".join(ch if ch.isalnum() else "-" for ch in name.lower())


@flow(name="mirror-survey", log_prints=False)
def mirror_survey(survey: str, dry_run: bool = False, allow_mass_delete: bool = False) -> MirrorSummary:
    """Mirror one BLS survey directory into `bls/<survey>/`: add, update, delete, keep."""
    settings = Settings()
    logger = run_logger(__name__)
    survey = survey.strip().lower()
    url = settings.survey_url(survey)
    settings.contact_for(url)  # fail at once, with the fix, when BLS would refuse us
    store = store_from_settings(settings)
    # Issue 9 (store integrity): one sync of a survey at a time, through a lease in the store (a dry
    # run writes nothing, so it holds none); what a killed sync left behind goes first, past the grace.
    prefix = bls_survey_prefix(survey)
    lease = store.lease(prefix, settings.lease_seconds, hold=not dry_run)
    with make_client(settings, url) as client, lease:
        if not dry_run:
            for leftover in store.cleanup_stale(prefix, settings.stale_upload_grace_seconds):
                logger.info("removed a leftover of an interrupted sync: %s", leftover)
        # (end of the issue 9 edit)
        listing = call(list_survey, url, client, settings)
        stored = call(read_mirror_state, store, survey, settings.concurrency * 2)
        plan = plan_sync(survey, listing.entries, stored, held=listing.unreadable)
        logger.info("plan for %s: %s", survey, plan.counts())
        check_delete_guard(plan, settings.max_delete_fraction, allow_mass_delete)
        summary = MirrorSummary(
            survey=survey,
            source_url=url,
            store_url=store.url,
            dry_run=dry_run,
            kept=[i.name for i in plan.of(Action.KEEP)],
            skipped_hrefs=list(listing.skipped),
        )
        if dry_run:
            summary.added = [i.name for i in plan.of(Action.ADD)]
            summary.updated = [i.name for i in plan.of(Action.UPDATE)]
            summary.deleted = [i.name for i in plan.of(Action.DELETE)]
        else:
            _apply(plan, client, store, survey, settings, summary, lease)
    markdown_artifact(
        _mirror_markdown(summary, plan),
        key=_artifact_key("mirror", survey),
        description=f"BLS {survey} mirror",
    )
    logger.info("mirror %s done: %s, %d bytes", survey, summary.counts(), summary.bytes_transferred)
    return summary


def _apply(
    plan: SyncPlan,
    client: Any,
    store: ObjectStore,
    survey: str,
    settings: Settings,
    summary: MirrorSummary,
    lease: Lease,
) -> None:
    """Transfers with bounded concurrency; deletions only after every transfer succeeded, and only
    while this sync still holds the survey's lease (another sync may have taken over otherwise)."""
    failures: list[str] = []
    for item, size, error in _run_transfers(plan, client, store, survey, settings):
        if error is None:
            summary.bytes_transferred += size
            (summary.added if item.action == Action.ADD else summary.updated).append(item.name)
        else:
            failures.append(f"{item.name}: {error}")
    if failures:
        raise TransferFailed(
            f"{survey}: {len(failures)} of {len(plan.transfers)} transfers failed, nothing deleted: "
            + "; ".join(failures)
        )
    deletes = [i.name for i in plan.of(Action.DELETE)]
    if deletes:
        lease.check()  # deleting is irreversible: never on a lease that may have passed to another sync
        summary.deleted = call(delete_files, store, survey, deletes)


def _run_transfers(
    plan: SyncPlan, client: Any, store: ObjectStore, survey: str, settings: Settings
) -> Iterator[tuple[PlanItem, int, str | None]]:
    """(item, bytes, error or None) per transfer, at most `settings.concurrency` at a time."""
    if in_flow_run():
        with ThreadPoolTaskRunner(max_workers=settings.concurrency) as runner, _abort_on_exit(client):
            params = {"client": client, "store": store, "survey": survey, "settings": settings}
            futures = [
                (item, runner.submit(transfer_file, {**params, "item": item})) for item in plan.transfers
            ]
            for item, future in futures:
                future.wait()
                if future.state.is_completed():
                    yield item, future.result(), None
                else:
                    yield item, 0, _state_message(future)
        return
    with ThreadPoolExecutor(max_workers=settings.concurrency) as pool, _abort_on_exit(client):
        plain = [
            (item, pool.submit(transfer_file.fn, client, store, survey, item, settings))
            for item in plan.transfers
        ]
        for item, fut in plain:
            try:
                yield item, fut.result(), None
            except Exception as exc:
                yield item, 0, str(exc)


@contextmanager
def _abort_on_exit(client: Any) -> Iterator[None]:
    """Abort the client's transfers when the run stops while they are in flight.

    Ctrl-C, SIGTERM (Prefect raises TerminationSignal) or a crash arrive in the thread waiting on
    the transfers. Aborting the transport ends every open download at once, so each store write
    aborts (nothing half-published, multipart uploads aborted) and the executor's shutdown, which
    waits for its threads, returns in seconds instead of after every transfer.
    """
    try:
        yield
    except BaseException as exc:
        guard = guarded_transport(client)
        if guard is not None:
            guard.abort(f"the run is stopping ({type(exc).__name__})")
        raise


def _state_message(future: Any) -> str:
    try:
        future.result(raise_on_failure=True)
    except Exception as exc:
        return str(exc)
    return str(future.state.message)


@flow(name="population-snapshot")
def population_snapshot() -> PopulationSummary:
    """Fetch the DataUSA population and store the body as returned under `population/<ts>.json`."""
    settings = Settings()
    logger = run_logger(__name__)
    url = settings.population_url
    store = store_from_settings(settings)
    body = call(fetch_population_body, url, settings)
    rows = normalise_population(body)  # refuse junk BEFORE storing anything
    key = population_key(timestamp())
    location = call(store_population, store, key, body, url)
    years = [y for y, _ in rows]
    logger.info(
        "population snapshot %s: %d years (%d-%d), %d bytes",
        location,
        len(rows),
        years[0],
        years[-1],
        len(body),
    )
    markdown_artifact(
        f"# Population snapshot\n`{url}` → `{location}`\n\n| year | population |\n|---:|---:|\n"
        + "".join(f"| {y} | {p:,} |\n" for y, p in rows),
        key="population-snapshot",
        description="DataUSA population snapshot",
    )
    return PopulationSummary(key=key, location=location, source_url=url, bytes=len(body), years=years)


@flow(name="ingest")
def ingest(surveys: list[str] | None = None, allow_mass_delete: bool = False) -> IngestSummary:
    """Every survey (default: QUEST_BLS_SURVEYS), then the population snapshot."""
    settings = Settings()
    mirrors = [
        call(mirror_survey, s, allow_mass_delete=allow_mass_delete) for s in (surveys or settings.bls_surveys)
    ]
    return IngestSummary(surveys=mirrors, population=call(population_snapshot))


def run_ingest_from_event(payload: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The Lambda's scheduled path: `{"surveys": [...], "allow_mass_delete": false}` (both optional)."""
    surveys = payload.get("surveys") or settings.bls_surveys
    if not isinstance(surveys, str | list) or not all(isinstance(s, str) for s in surveys):
        raise QuestError(f"ingest payload: `surveys` must be a list of names, got {surveys!r}")
    surveys = parse_surveys(surveys, "ingest payload `surveys`")  # the settings' own rule
    allow = bool(payload.get("allow_mass_delete", False))
    summary = run_flow(ingest, surveys=surveys, allow_mass_delete=allow)
    return summary.model_dump(mode="json")
