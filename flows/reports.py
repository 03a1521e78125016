"""The reports flow: read the BLS file and one population snapshot, compute, write, log, publish.

The maths is pure and lives in `flows/core/report_maths.py` (re-exported here); this module is the thin
Prefect shell around it: store reads are tasks with retries (a missing object is not retried: it
will not appear by waiting), outputs go to `reports/<ts>/`, each report is logged as a table and
published as a Prefect artifact so a flow run in the UI shows its results.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from flows.core import names
from flows.core.charts import Panel, data_uri, line_chart
from flows.core.errors import (
    BlsFormatError,
    MissingInput,
    PopulationDataError,
    PopulationFormatError,
    QuestError,
    StoreError,
)
from flows.core.markdown import md_text
from flows.core.names import parse_population_key
from flows.core.population import normalise_population
from flows.core.report_format import (
    THOUSANDS,
    cell,
    headline,
    report_sections,
    summary_markdown,
    text_table,
    top_rows,
)
from flows.core.report_maths import (
    DEFAULT_PERIOD,
    DEFAULT_SERIES_ID,
    BlsData,
    Reports,
    compute_reports,
    population_by_year,
    read_bls,
)
from flows.expected import ends_failed_on_expected
from flows.io.store import ObjectStore, store_from_settings
from flows.mirror import Logger
from flows.settings import current_settings

POPULATION_STATS_FILE = "population_stats.json"
BEST_YEAR_FILE = "best_year_by_series.csv"
SUMMARY_FILE = "summary.md"
POPULATION_CHART_FILE = "population_by_year.svg"


def prefix_location(store: ObjectStore, prefix: str) -> str:
    """Where a folder-like prefix is, for people (stores locate objects, not folders)."""
    return store.location(prefix + "_")[:-1]


def reports_location(store: ObjectStore, ts: str) -> str:
    return prefix_location(store, names.reports_prefix(ts))


def series_file_name(series_id: str, period: str) -> str:
    return f"series_{series_id}_{period}.csv"


def series_chart_file_name(series_id: str, period: str) -> str:
    return f"series_{series_id}_{period}.svg"


def check_code(value: str, what: str) -> str:
    """series_id / period come from the UI or CLI and end up in an object key: letters and digits only."""
    value = value.strip()
    if not value or not value.isalnum():
        raise QuestError(f"{what} must be letters and digits, got {value!r}")
    return value


def newest_population_keys(keys: list[str], n: int) -> list[str]:
    """The `n` newest snapshots, newest first; keys not of the form
    `population/<YYYYMMDDTHHMMSSZ>.json` (`population/manual-note.json`, `population/latest.json`)
    are not snapshots and never chosen."""
    stamped = sorted(((ts, k) for k in keys if (ts := parse_population_key(k)) is not None), reverse=True)
    return [k for _, k in stamped[:n]]


def newest_population_key(keys: list[str]) -> str | None:
    """The snapshot with the latest timestamp, if any."""
    newest = newest_population_keys(keys, 1)
    return newest[0] if newest else None


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


@task(
    name="read-object",
    task_run_name="read {key}",
    cache_policy=NO_CACHE,
    retry_condition_fn=_retry_unless_expected,
)
def read_object(store: ObjectStore, key: str, hint: str) -> bytes:
    try:
        return store.read_bytes(key)
    except StoreError as exc:
        if store.head(key) is None:
            raise MissingInput(f"{store.location(key)} is not in the store: {hint}") from exc
        raise


@task(
    name="find-newest-population",
    task_run_name="find the newest population snapshot",
    cache_policy=NO_CACHE,
    retry_condition_fn=_retry_unless_expected,
)
def find_population_key(store: ObjectStore) -> str:
    key = newest_population_key(store.list_keys(names.POPULATION_PREFIX))
    if key is None:
        raise MissingInput(
            f"no population snapshot under {prefix_location(store, names.POPULATION_PREFIX)}: "
            "run `quest population` (or `quest run`) first"
        )
    return key


@task(name="write-reports", task_run_name="write {prefix}", cache_policy=NO_CACHE)
def write_outputs(store: ObjectStore, prefix: str, files: dict[str, tuple[bytes, str]]) -> list[str]:
    written = []
    for name, (body, content_type) in files.items():
        store.put_bytes(prefix + name, body, content_type=content_type)
        written.append(prefix + name)
    return written


def output_files(
    reports_: Reports,
    result: dict[str, Any],
    series_id: str,
    period: str,
    location: str,
    quarters_only: bool,
    population: dict[int, int],
) -> dict[str, tuple[bytes, str]]:
    """The report files: JSON + CSV for machines, Markdown and two SVG charts for people."""
    stats = json.dumps(result["population_stats"], indent=2).encode() + b"\n"
    best = reports_.best_year.to_csv(index=False, lineterminator="\n").encode()
    series = reports_.series_with_population.to_csv(index=False, lineterminator="\n").encode()
    charts = report_charts(result, population, series_id, period)
    titles = [title for title, _, _ in report_sections(result, series_id, period, quarters_only)]
    files = dict(
        zip(titles, (POPULATION_STATS_FILE, BEST_YEAR_FILE, series_file_name(series_id, period)), strict=True)
    )
    summary = summary_markdown(
        result,
        series_id,
        period,
        location,
        quarters_only,
        sorted(population),
        files,
        [(alt, name) for name, (alt, _) in charts.items()],
    ).encode()
    return {
        POPULATION_STATS_FILE: (stats, "application/json"),
        BEST_YEAR_FILE: (best, "text/csv"),
        series_file_name(series_id, period): (series, "text/csv"),
        SUMMARY_FILE: (summary, "text/markdown"),
        **{name: (svg.encode(), "image/svg+xml") for name, (_, svg) in charts.items()},
    }


def report_charts(
    result: dict[str, Any], population: dict[int, int], series_id: str, period: str
) -> dict[str, tuple[str, str]]:
    """file name -> (alt text, SVG): population by year (the mean's window shaded), and the
    series' value per year above the population of the same years."""
    stats = result["population_stats"]
    window = (stats["start_year"], stats["end_year"])
    people = sorted((year, float(n)) for year, n in population.items())
    series = [
        (r["year"], float(r["value"])) for r in result["series_with_population"] if r["value"] is not None
    ]
    return {
        POPULATION_CHART_FILE: (
            "US population by year",
            line_chart(
                [Panel("US population by year", people, window, f"mean window {window[0]}–{window[1]}")]
            ),
        ),
        series_chart_file_name(series_id, period): (
            f"{series_id} {period} value per year beside the US population",
            line_chart(
                [
                    Panel(f"{series_id} {period}: value per year", series),
                    Panel(
                        "US population, same years",
                        [(y, n) for y, n in people if y in {s for s, _ in series}],
                    ),
                ]
            ),
        ),
    }


def artifact_rows(records: list[dict[str, Any]], columns: Any) -> list[dict[str, Any]]:
    """Table artifact rows: lists (years) and people counts shown as text cells, the rest as is.

    The UI renders a text cell as Markdown: text goes through `md_text` (a series id is read from
    the BLS file)."""
    return [{c: _artifact_cell(r.get(c), c) for c in columns} for r in records]


def _artifact_cell(value: Any, column: str) -> Any:
    if isinstance(value, list) or column in THOUSANDS:
        value = cell(value, column)
    return md_text(value) if isinstance(value, str) else value


_folder: ContextVar[str | None] = ContextVar("quest_reports_folder", default=None)


@contextmanager
def reports_folder(ts: str) -> Iterator[None]:
    """The reports runs started inside write to `reports/<ts>/` (and are named for it).

    The S3-event path names the folder after the event, so a redelivered event rewrites the same
    folder. Not a flow parameter: it would sit in the run form, where it means nothing to a person.
    """
    token = _folder.set(check_timestamp(ts))
    try:
        yield
    finally:
        _folder.reset(token)


def _run_timestamp() -> str:
    """The run's folder: as set by `reports_folder`, else the run's scheduled start."""
    from prefect.runtime import flow_run

    return _folder.get() or names.timestamp(flow_run.scheduled_start_time)


def check_timestamp(value: str) -> str:
    """reports_ts names a folder: the same strict YYYYMMDDTHHMMSSZ form as snapshot keys."""
    if parse_population_key(names.population_key(value)) is None:
        raise QuestError(f"reports_ts must look like 20250101T000000Z, got {value!r}")
    return value


@dataclass(frozen=True)
class ReportRequest:
    """A reports run's inputs, checked: they come from the UI, the CLI or an S3 event."""

    population_key: str | None = None
    quarters_only: bool = False
    series_id: str = DEFAULT_SERIES_ID
    period: str = DEFAULT_PERIOD
    reports_ts: str = ""

    @classmethod
    def checked(
        cls,
        population_key: str | None = None,
        quarters_only: bool = False,
        series_id: str = DEFAULT_SERIES_ID,
        period: str = DEFAULT_PERIOD,
        reports_ts: str | None = None,
    ) -> ReportRequest:
        return cls(
            population_key=check_population_key(population_key) if population_key else None,
            quarters_only=quarters_only,
            series_id=check_code(series_id, "series_id"),
            period=check_code(period, "period"),
            reports_ts=check_timestamp(reports_ts) if reports_ts else names.timestamp(),
        )

    @property
    def prefix(self) -> str:
        return names.reports_prefix(self.reports_ts)

    @property
    def artifact_keys(self) -> tuple[str, str, str]:
        return ("population-stats", "best-year-by-series", f"series-{self.series_id}-{self.period}".lower())


@dataclass(frozen=True)
class BuiltReports:
    """The computed reports, ready to write and show."""

    result: dict[str, Any]  # the contract object (`quest reports --json`)
    files: dict[str, tuple[bytes, str]]  # name -> (body, content type)
    warnings: tuple[str, ...]  # what a person should know (dropped rows, missing years, no series rows)
    location: str
    population: dict[int, int]  # year -> population, all the snapshot has (the headline's gaps)


class ReportRun(BaseModel):
    """What a reports run produced: the contract object, and where its files are."""

    result: dict[str, Any]
    location: str
    object_keys: list[str]  # not `keys`: Prefect reads a model with a `keys` attribute as a mapping


BLS_KEY = names.bls_key(names.REPORT_SURVEY, names.REPORT_BLS_FILE)
BLS_HINT = "run `quest sync` (or `quest run`) first"
POPULATION_HINT = "list population/ for the snapshots"


def build_reports(
    request: ReportRequest, bls_bytes: bytes, population_key: str, body: bytes, location: str
) -> BuiltReports:
    """Compute the three reports and their files from the two inputs' bytes (no I/O)."""
    try:
        bls: BlsData = read_bls(bls_bytes)
    except BlsFormatError as exc:
        raise BlsFormatError(f"{BLS_KEY}: {exc}") from exc
    try:
        population = population_by_year(normalise_population(body))
        computed = compute_reports(
            bls,
            population,
            quarters_only=request.quarters_only,
            series_id=request.series_id,
            period=request.period,
            inputs={"bls_key": BLS_KEY, "population_key": population_key},
        )
    except (PopulationFormatError, PopulationDataError) as exc:  # name the snapshot that is at fault
        raise type(exc)(f"{population_key}: {exc}") from exc
    result = computed.to_json()
    warnings = []
    if bls.dropped_rows:
        reasons = dropped_summary(dict(bls.dropped_reasons))
        warnings.append(f"{BLS_KEY}: dropped {bls.dropped_rows} row(s) that cannot be read ({reasons})")
    missing = result["population_stats"]["missing_years"]
    if missing:
        warnings.append(f"{population_key} has no population for {', '.join(map(str, missing))}")
    if not result["series_with_population"]:
        warnings.append(f"{BLS_KEY} has no rows for series {request.series_id} period {request.period}")
    files = output_files(
        computed, result, request.series_id, request.period, location, request.quarters_only, population
    )
    return BuiltReports(
        result=result, files=files, warnings=tuple(warnings), location=location, population=population
    )


def log_reports(built: BuiltReports, request: ReportRequest, logger: Logger) -> None:
    """Warnings, the headline, then each report's first rows and where the rest is."""
    for warning in built.warnings:
        logger.warning("%s", warning)
    logger.info(
        "%s", "\n".join(line.replace("**", "") for line in headline(built.result, sorted(built.population)))
    )
    for (title, records, columns), key in zip(
        report_sections(built.result, request.series_id, request.period, request.quarters_only),
        request.artifact_keys,
        strict=True,
    ):
        shown, note = top_rows(records, f"the `{key}` artifact and {built.location}")
        logger.info("%s\n%s\n(%s)", title, text_table(shown, columns), note)


def publish_artifacts(built: BuiltReports, request: ReportRequest, population_key: str) -> None:
    """The headline first, the charts, the three tables and the Markdown summary: the run's page."""
    stats = built.result["population_stats"]
    window = f"{stats['start_year']}–{stats['end_year']}"
    create_markdown_artifact(
        markdown="# Headline\n\n" + "\n".join(headline(built.result, sorted(built.population))) + "\n",
        key="reports-headline",
        description=md_text(f"US population {window}: mean {cell(stats['mean'], 'mean')}"),
    )
    charts = [(name, body.decode()) for name, (body, kind) in built.files.items() if kind == "image/svg+xml"]
    create_markdown_artifact(
        markdown="# Charts\n\n"
        + "\n\n".join(f"![{md_text(alt)}]({data_uri(svg)})" for alt, svg in charts)
        + "\n",
        key="reports-charts",
        description=md_text(f"{len(charts)} charts (also in {built.location})"),
    )
    sections = report_sections(built.result, request.series_id, request.period, request.quarters_only)
    for (title, records, columns), key in zip(sections, request.artifact_keys, strict=True):
        create_table_artifact(
            table=artifact_rows(records, columns),
            key=key,
            description=md_text(f"{title}: {len(records):,} rows"),
        )
    create_markdown_artifact(
        markdown=built.files[SUMMARY_FILE][0].decode(),
        key="reports-summary",
        description=md_text(f"Reports from {population_key}, written to {built.location}"),
    )


@flow(name="reports", flow_run_name=lambda: f"reports {_run_timestamp()}")
@ends_failed_on_expected
def reports(
    population_key: str = "",
    quarters_only: bool = False,
    series_id: str = DEFAULT_SERIES_ID,
    period: str = DEFAULT_PERIOD,
) -> ReportRun:
    """Compute the three reports from the store, write them to `reports/<ts>/`, show them here.

    Returns the contract object (`result`, what `quest reports --json` prints) and where the
    files are. The folder's timestamp is the run's start, or the snapshot event's (`reports_folder`).

    Args:
        population_key: The population snapshot to use, e.g. `population/20250101T000000Z.json`.
            Empty: the newest snapshot in the store.
        quarters_only: Best year per series over Q01–Q04 only (default: every period, Q05 too).
        series_id: The BLS series shown beside the population, e.g. PRS30006032.
        period: That series' period, e.g. Q01.
    """
    settings = current_settings()
    logger = get_run_logger()
    request = ReportRequest.checked(population_key, quarters_only, series_id, period, _run_timestamp())
    store = store_from_settings(settings)
    retries, delay = settings.retries, settings.retry_delay_seconds
    find = find_population_key.with_options(retries=retries, retry_delay_seconds=delay)
    read = read_object.with_options(retries=retries, retry_delay_seconds=delay)

    key = request.population_key or find(store)
    bls_bytes = read(store, BLS_KEY, BLS_HINT)
    try:
        body = read(store, key, POPULATION_HINT)
    except MissingInput as exc:  # name what exists: the user picked a key that is not there
        newest = newest_population_keys(store.list_keys(names.POPULATION_PREFIX), 3)
        raise MissingInput(
            f"{store.location(key)} is not in the store; the newest snapshots: {', '.join(newest) or 'none'}"
        ) from exc
    built = build_reports(request, bls_bytes, key, body, reports_location(store, request.reports_ts))
    log_reports(built, request, logger)
    keys = write_outputs(store, request.prefix, built.files)
    publish_artifacts(built, request, key)
    logger.info("reports written to %s (%s)", built.location, ", ".join(k.rsplit("/", 1)[-1] for k in keys))
    return ReportRun(result=built.result, location=built.location, object_keys=keys)
