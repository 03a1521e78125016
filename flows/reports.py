"""The reports flow: read the BLS file and one population snapshot, compute, write, log, publish.

The maths is pure and lives in `flows/core/report_maths.py` (re-exported here); this module is the thin
Prefect shell around it: store reads are tasks with retries (a missing object is not retried: it
will not appear by waiting), outputs go to `reports/<ts>/`, each report is logged as a table and
published as a Prefect artifact so a flow run in the UI shows its results.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.core import names
from flows.core.errors import BlsFormatError, MissingInput, PopulationDataError, QuestError, StoreError
from flows.core.names import parse_population_key
from flows.core.report_format import cell, report_sections, summary_markdown, text_table
from flows.core.report_maths import (
    DEFAULT_PERIOD,
    DEFAULT_SERIES_ID,
    BlsData,
    Reports,
    compute_reports,
    population_by_year,
    read_bls,
)
from flows.io.store import ObjectStore, store_from_settings
from flows.orchestration import call, markdown_artifact, run_logger, table_artifact
from flows.settings import Settings

POPULATION_STATS_FILE = "population_stats.json"
BEST_YEAR_FILE = "best_year_by_series.csv"
SUMMARY_FILE = "summary.md"


def prefix_location(store: ObjectStore, prefix: str) -> str:
    """Where a folder-like prefix is, for people (stores locate objects, not folders)."""
    return store.location(prefix + "_")[:-1]


def reports_location(store: ObjectStore, ts: str) -> str:
    return prefix_location(store, names.reports_prefix(ts))


def series_file_name(series_id: str, period: str) -> str:
    return f"series_{series_id}_{period}.csv"


def check_code(value: str, what: str) -> str:
    """series_id / period come from the UI or CLI and end up in an object key: letters and digits only."""
    value = value.strip()
    if not value or not value.isalnum():
        raise QuestError(f"{what} must be letters and digits, got {value!r}")
    return value


def newest_population_key(keys: list[str]) -> str | None:
    """The snapshot with the latest timestamp; keys not of the form `population/<YYYYMMDDTHHMMSSZ>.json`
    (`population/manual-note.json`, `population/latest.json`) are not snapshots and never chosen."""
    stamped = [(ts, k) for k in keys if (ts := parse_population_key(k)) is not None]
    return max(stamped)[1] if stamped else None


def check_population_key(key: str) -> str:
    """A caller-given snapshot key must name a snapshot, not any object under population/."""
    if parse_population_key(key) is None:
        raise QuestError(
            f"population key {key!r} is not population/<timestamp>.json "
            "(a snapshot key such as population/20250101T000000Z.json)"
        )
    return key


def dropped_summary(reasons: dict[str, int]) -> str:
    """`bad value: 3, bad year: 1` for logs and the summary."""
    return ", ".join(f"{reason}: {count}" for reason, count in reasons.items())


def _retry_unless_expected(task: Any, task_run: Any, state: Any) -> bool:
    """Retry transient store errors; a QuestError (e.g. no such object) will not go away by waiting."""
    return not isinstance(getattr(state, "data", None), QuestError)


@task(name="read-object", cache_policy=NO_CACHE, retry_condition_fn=_retry_unless_expected)
def read_object(store: ObjectStore, key: str, hint: str) -> bytes:
    try:
        return store.read_bytes(key)
    except StoreError as exc:
        if store.head(key) is None:
            raise MissingInput(f"{store.location(key)} is not in the store: {hint}") from exc
        raise


@task(name="find-newest-population", cache_policy=NO_CACHE, retry_condition_fn=_retry_unless_expected)
def find_population_key(store: ObjectStore) -> str:
    key = newest_population_key(store.list_keys(names.POPULATION_PREFIX))
    if key is None:
        raise MissingInput(
            f"no population snapshot under {prefix_location(store, names.POPULATION_PREFIX)}: "
            "run `quest population` (or `quest run`) first"
        )
    return key


@task(name="write-reports", cache_policy=NO_CACHE)
def write_outputs(store: ObjectStore, prefix: str, files: dict[str, tuple[bytes, str]]) -> list[str]:
    written = []
    for name, (body, content_type) in files.items():
        store.put_bytes(prefix + name, body, content_type=content_type)
        written.append(prefix + name)
    return written


@dataclass(frozen=True)
class ReportRun:
    result: dict[str, Any]  # the contract object (`quest reports --json`)
    location: str  # where the report files are
    keys: tuple[str, ...]


def output_files(
    reports_: Reports, result: dict[str, Any], series_id: str, period: str, location: str, quarters_only: bool
) -> dict[str, tuple[bytes, str]]:
    """The four report files: JSON + CSV for machines, Markdown for people."""
    stats = json.dumps(result["population_stats"], indent=2).encode() + b"\n"
    best = reports_.best_year.to_csv(index=False, lineterminator="\n").encode()
    series = reports_.series_with_population.to_csv(index=False, lineterminator="\n").encode()
    summary = summary_markdown(result, series_id, period, location, quarters_only).encode()
    return {
        POPULATION_STATS_FILE: (stats, "application/json"),
        BEST_YEAR_FILE: (best, "text/csv"),
        series_file_name(series_id, period): (series, "text/csv"),
        SUMMARY_FILE: (summary, "text/markdown"),
    }


def artifact_rows(records: list[dict[str, Any]], columns: Any) -> list[dict[str, Any]]:
    """Table artifact rows: the contract values, lists (years) shown as text cells."""
    return [{c: cell(r.get(c)) if isinstance(r.get(c), list) else r.get(c) for c in columns} for r in records]


def check_timestamp(value: str) -> str:
    """reports_ts names a folder: the same strict YYYYMMDDTHHMMSSZ form as snapshot keys."""
    if parse_population_key(names.population_key(value)) is None:
        raise QuestError(f"reports_ts must look like 20250101T000000Z, got {value!r}")
    return value


def run_reports(
    settings: Settings,
    population_key: str | None = None,
    quarters_only: bool = False,
    series_id: str = DEFAULT_SERIES_ID,
    period: str = DEFAULT_PERIOD,
    reports_ts: str | None = None,
    store: ObjectStore | None = None,
) -> ReportRun:
    """The body of the reports flow: orchestrated inside a flow run, plain Python outside one."""
    logger = run_logger(__name__)
    series_id, period = check_code(series_id, "series_id"), check_code(period, "period")
    reports_ts = check_timestamp(reports_ts) if reports_ts else None
    store = store or store_from_settings(settings)
    retrying = {"retries": settings.retries, "retry_delay_seconds": settings.retry_delay_seconds}

    bls_key = names.bls_key(names.REPORT_SURVEY, names.REPORT_BLS_FILE)
    if population_key is None:
        population_key = call(find_population_key.with_options(**retrying), store)
    else:
        population_key = check_population_key(population_key)
    bls_bytes = call(
        read_object.with_options(**retrying), store, bls_key, "run `quest sync` (or `quest run`) first"
    )
    body = call(
        read_object.with_options(**retrying), store, population_key, "list population/ for the snapshots"
    )

    from flows.core.errors import PopulationFormatError
    from flows.core.population import normalise_population

    try:
        bls: BlsData = read_bls(bls_bytes)
    except BlsFormatError as exc:
        raise BlsFormatError(f"{bls_key}: {exc}") from exc
    try:
        population = population_by_year(normalise_population(body))
        computed = compute_reports(
            bls,
            population,
            quarters_only=quarters_only,
            series_id=series_id,
            period=period,
            inputs={"bls_key": bls_key, "population_key": population_key},
        )
    except (PopulationFormatError, PopulationDataError) as exc:  # name the snapshot that is at fault
        raise type(exc)(f"{population_key}: {exc}") from exc
    result = computed.to_json()
    if bls.dropped_rows:
        logger.warning(
            "%s: dropped %d row(s) that cannot be read (%s)",
            bls_key,
            bls.dropped_rows,
            dropped_summary(dict(bls.dropped_reasons)),
        )
    missing = result["population_stats"]["missing_years"]
    if missing:
        logger.warning("%s has no population for %s", population_key, ", ".join(map(str, missing)))
    if not result["series_with_population"]:
        logger.warning("%s has no rows for series %s period %s", bls_key, series_id, period)

    reports_ts = reports_ts or names.timestamp()
    prefix = names.reports_prefix(reports_ts)
    location = reports_location(store, reports_ts)
    files = output_files(computed, result, series_id, period, location, quarters_only)
    keys = call(write_outputs, store, prefix, files)

    for (title, records, columns), key in zip(
        report_sections(result, series_id, period, quarters_only),
        ("population-stats", "best-year-by-series", f"series-{series_id}-{period}".lower()),
        strict=True,
    ):
        logger.info("%s\n%s", title, text_table(records, columns))
        table_artifact(artifact_rows(records, columns), key=key, description=title)
    markdown_artifact(
        markdown=files[SUMMARY_FILE][0].decode(),
        key="reports-summary",
        description=f"Reports from {population_key}, written to {location}",
    )
    logger.info("reports written to %s (%s)", location, ", ".join(k.rsplit("/", 1)[-1] for k in keys))
    return ReportRun(result=result, location=location, keys=tuple(keys))


@flow(name="reports")
def reports(
    population_key: str | None = None,
    quarters_only: bool = False,
    series_id: str = DEFAULT_SERIES_ID,
    period: str = DEFAULT_PERIOD,
    reports_ts: str | None = None,
) -> dict[str, Any]:
    """Compute the three reports from the store (default: the newest population snapshot).

    `reports_ts` names the output folder `reports/<reports_ts>/` (default: now), so a caller
    knows where the files land. Returns the JSON object `quest reports --json` prints.
    """
    return run_reports(Settings(), population_key, quarters_only, series_id, period, reports_ts).result
