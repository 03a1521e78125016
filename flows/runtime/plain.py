"""The function's one alternative entry: the ingest and the reports without a Prefect API.

A stack without `prefectApiUrl` still runs its daily ingest (EventBridge) and its reports (SQS).
The function ships prefect-client, which has no local server, so there a flow or task call would
fail for want of an API. These entries run the same steps the flows orchestrate (`flows/mirror.py`,
`flows/snapshot.py`, `flows/reports.py`) directly, logging through `logging` (CloudWatch) instead
of a run log, with no artifacts. The choice is made once, at the entry (`run_ingest`,
`run_reports`), never per step.

In Lambda both entries keep the flow-run path's deadline rule (flows/runtime/plain_deadline.py):
they stop DEADLINE_MARGIN_SECONDS before Lambda's deadline with one error naming the limit, and no
survey, transfer or write starts once the time is spent.

What the plain path does not have: Prefect's task retries for the store reads of the reports
(boto3's own retries still apply) and anything the UI would show.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from flows import mirror, snapshot
from flows.budget import Budget, current_budget
from flows.core.names import REPORT_SURVEY, population_key, timestamp
from flows.core.plan import PlanItem
from flows.core.population import normalise_population
from flows.discovery import mirror_each, resolve_surveys, retire_surveys, surveys_failed
from flows.ingest import IngestSummary, ingest, ingest_payload
from flows.io.http import make_client
from flows.io.store import ObjectStore, store_from_settings
from flows.mirror import MirrorSummary, SurveySync
from flows.reports import (
    BLS_HINT,
    BLS_KEY,
    POPULATION_HINT,
    ReportRequest,
    ReportRun,
    build_reports,
    find_population_key,
    log_reports,
    read_object,
    reports,
    reports_folder,
    reports_location,
    write_outputs,
)
from flows.runtime.plain_deadline import check_time, lambda_deadline
from flows.settings import Settings, use_settings
from flows.snapshot import PopulationSummary

log = logging.getLogger(__name__)


def prefect_api_available() -> bool:
    """True when flows can report to a Prefect API: PREFECT_API_URL, or a local ephemeral server."""
    from prefect.settings import get_current_settings

    if get_current_settings().api.url:
        return True
    try:
        import prefect.server.api.server  # noqa: F401  (absent from prefect-client)
    except ImportError:
        return False
    return True


def _orchestrated(what: str) -> bool:
    if prefect_api_available():
        return True
    log.warning("no Prefect API configured (PREFECT_API_URL unset): running %s without orchestration", what)
    return False


# --------------------------------------------------------------------------- the entries


def run_ingest(payload: dict[str, Any], settings: Settings, context: Any = None) -> dict[str, Any]:
    """The scheduled event: the `ingest` flow, or its steps here when there is no Prefect API
    (within Lambda's deadline, read from its `context`)."""
    surveys, allow_mass_delete = ingest_payload(payload, settings)
    if _orchestrated("ingest"):
        with use_settings(settings):
            summary = ingest(surveys=surveys, allow_mass_delete=allow_mass_delete)
    else:
        with lambda_deadline(context, "ingest"):
            summary = plain_ingest(settings, surveys, allow_mass_delete)
    return summary.model_dump(mode="json")


def run_reports(settings: Settings, population_key: str, reports_ts: str, context: Any = None) -> ReportRun:
    """One snapshot's reports: the `reports` flow, or its steps here when there is no Prefect API
    (within Lambda's deadline, read from its `context`)."""
    if _orchestrated("reports"):
        with use_settings(settings), reports_folder(reports_ts):
            return reports(population_key=population_key)
    with lambda_deadline(context, "reports"):
        return plain_reports(settings, population_key=population_key, reports_ts=reports_ts)


# --------------------------------------------------------------------------- the steps, unorchestrated


def plain_ingest(settings: Settings, surveys: list[str], allow_mass_delete: bool = False) -> IngestSummary:
    """`surveys` as given, or `["all"]`: those the root listing names (gone ones reported, and
    removed only with `allow_mass_delete`).

    With discovered surveys one failing survey does not stop the others; the population snapshot
    (which triggers the reports, read from `pr`) is still taken unless `pr` itself failed, and the
    failures are raised at the end.
    """
    with make_client(settings, settings.bls_base_url) as client:
        selection = resolve_surveys(settings, surveys, client, log)
    mirrors, failures = mirror_each(
        selection, lambda s: plain_mirror_survey(settings, s, allow_mass_delete), log
    )
    if selection.gone:
        selection.retired = retire_surveys(settings, selection.gone, allow_mass_delete, log)
        log.warning("%s", selection.describe())
    if REPORT_SURVEY in failures:
        raise surveys_failed(failures, len(selection.surveys))
    check_time()  # the snapshot triggers the reports: not taken once the time is spent
    summary = IngestSummary(
        surveys=mirrors, population=plain_population_snapshot(settings), selection=selection
    )
    if failures:
        raise surveys_failed(failures, len(selection.surveys))
    return summary


def plain_mirror_survey(settings: Settings, survey: str, allow_mass_delete: bool = False) -> MirrorSummary:
    check_time()
    budget = current_budget()  # the transfer threads do not inherit the context
    with SurveySync.open(settings, survey, False, log) as sync:
        listing = mirror.list_survey(sync.url, sync.client, settings, log)
        stored = mirror.read_mirror_state(sync.store, sync.survey, settings.concurrency * 2)
        plan, summary = sync.plan(listing, stored, allow_mass_delete)
        with ThreadPoolExecutor(max_workers=settings.concurrency) as pool, sync.abort_on_exit():
            futures = [
                (
                    item,
                    pool.submit(
                        _in_time, budget, mirror.transfer_file, **sync.transfer_args(item), logger=log
                    ),
                )
                for item in plan.transfers
            ]
            deletes = sync.deletions(plan, summary, (_outcome(item, future) for item, future in futures))
        if deletes:
            check_time()
            summary.deleted = mirror.delete_files(sync.store, sync.survey, deletes, log)
    log.info("mirror %s done: %s", summary.survey, summary.counts_text())
    return summary


def _in_time(budget: Budget | None, transfer: Callable[..., int], **kwargs: Any) -> int:
    """A transfer that does not start once the invocation's time is spent."""
    check_time(budget)
    return transfer(**kwargs)


def _outcome(item: PlanItem, future: Future[int]) -> tuple[PlanItem, int, str | None]:
    try:
        return item, future.result(), None
    except Exception as exc:
        return item, 0, str(exc)


def plain_population_snapshot(settings: Settings) -> PopulationSummary:
    url = settings.population_url
    store = store_from_settings(settings)
    body = snapshot.fetch_population_body(url, settings, log)
    rows = normalise_population(body)  # refuse junk BEFORE storing anything
    key = population_key(timestamp())
    location = snapshot.store_population(store, key, body, url)
    return snapshot.summarise(key, location, url, body, rows, log)


def plain_reports(
    settings: Settings,
    population_key: str | None = None,
    reports_ts: str | None = None,
    store: ObjectStore | None = None,
    **options: Any,
) -> ReportRun:
    """`options`: the flow's other parameters (quarters_only, series_id, period)."""
    request = ReportRequest.checked(population_key, reports_ts=reports_ts, **options)
    store = store or store_from_settings(settings)
    key = request.population_key or find_population_key.fn(store)
    bls_bytes = read_object.fn(store, BLS_KEY, BLS_HINT)
    body = read_object.fn(store, key, POPULATION_HINT)
    built = build_reports(request, bls_bytes, key, body, reports_location(store, request.reports_ts))
    log_reports(built, request, log)
    check_time()
    keys = write_outputs.fn(store, request.prefix, built.files)
    log.info("reports written to %s", built.location)
    return ReportRun(result=built.result, location=built.location, object_keys=keys)
