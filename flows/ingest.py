"""Prefect flows for the ingest: mirror BLS surveys, snapshot the DataUSA population, or both.

Orchestration only: every I/O step is a task visible at its call site, and the steps themselves
are plain functions in `flows/mirror.py` and `flows/snapshot.py` (which the function's plain entry,
`flows/runtime/plain.py`, runs without Prefect). Flows take only JSON-able parameters (deployments
and the Prefect UI can run them) and get the settings the edge built (`current_settings`).
"""

from __future__ import annotations

from typing import Any

import httpx
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel

from flows import mirror, snapshot
from flows.core.errors import QuestError
from flows.core.listing import Listing
from flows.core.names import population_key, timestamp
from flows.core.plan import PlanItem, StoredFile
from flows.core.population import normalise_population
from flows.io.store import ObjectStore, store_from_settings
from flows.mirror import MirrorSummary, SurveySync, artifact_key
from flows.settings import Settings, current_settings, parse_surveys, use_settings
from flows.snapshot import PopulationSummary

__all__ = [
    "IngestSummary",
    "MirrorSummary",
    "PopulationSummary",
    "ingest",
    "mirror_survey",
    "population_snapshot",
]


class IngestSummary(BaseModel):
    surveys: list[MirrorSummary]
    population: PopulationSummary


# --------------------------------------------------------------------------- tasks (I/O only)


@task(name="list-survey", cache_policy=NO_CACHE)
def list_survey(url: str, client: httpx.Client, settings: Settings) -> Listing:
    return mirror.list_survey(url, client, settings, get_run_logger())


@task(name="read-mirror-state", cache_policy=NO_CACHE)
def read_mirror_state(store: ObjectStore, survey: str, workers: int = 8) -> dict[str, StoredFile]:
    return mirror.read_mirror_state(store, survey, workers)


@task(name="transfer-file", task_run_name="transfer-{item.name}", cache_policy=NO_CACHE)
def transfer_file(
    client: httpx.Client, store: ObjectStore, survey: str, item: PlanItem, settings: Settings
) -> int:
    return mirror.transfer_file(client, store, survey, item, settings, get_run_logger())


@task(name="delete-files", cache_policy=NO_CACHE)
def delete_files(store: ObjectStore, survey: str, names: list[str]) -> list[str]:
    return mirror.delete_files(store, survey, names, get_run_logger())


@task(name="fetch-population", cache_policy=NO_CACHE)
def fetch_population_body(url: str, settings: Settings) -> bytes:
    return snapshot.fetch_population_body(url, settings, get_run_logger())


@task(name="store-population", cache_policy=NO_CACHE)
def store_population(store: ObjectStore, key: str, body: bytes, url: str) -> str:
    return snapshot.store_population(store, key, body, url)


# --------------------------------------------------------------------------- flows


@flow(name="mirror-survey", log_prints=False)
def mirror_survey(survey: str, dry_run: bool = False, allow_mass_delete: bool = False) -> MirrorSummary:
    """Mirror one BLS survey directory into `bls/<survey>/`: add, update, delete, keep."""
    settings = current_settings()
    logger = get_run_logger()
    with SurveySync.open(settings, survey, dry_run, logger) as sync:
        listing = list_survey(sync.url, sync.client, settings)
        stored = read_mirror_state(sync.store, sync.survey, settings.concurrency * 2)
        plan, summary = sync.plan(listing, stored, allow_mass_delete)
        if not dry_run:
            with ThreadPoolTaskRunner[int](max_workers=settings.concurrency) as runner, sync.abort_on_exit():
                futures = [
                    (item, runner.submit(transfer_file, sync.transfer_args(item))) for item in plan.transfers
                ]
                deletes = sync.deletions(plan, summary, (_outcome(item, future) for item, future in futures))
            if deletes:
                summary.deleted = delete_files(sync.store, sync.survey, deletes)
    create_markdown_artifact(
        markdown=summary.markdown(plan),
        key=artifact_key("mirror", summary.survey),
        description=f"BLS {summary.survey} mirror",
    )
    logger.info("mirror %s done: %s", summary.survey, summary.counts_text())
    return summary


def _outcome(item: PlanItem, future: PrefectFuture[int]) -> tuple[PlanItem, int, str | None]:
    """(item, bytes, None) for a transfer that succeeded, (item, 0, why) for one that did not."""
    future.wait()
    if future.state.is_completed():
        return item, future.result(), None
    try:
        future.result(raise_on_failure=True)
    except Exception as exc:
        return item, 0, str(exc)
    return item, 0, str(future.state.message)


@flow(name="population-snapshot")
def population_snapshot() -> PopulationSummary:
    """Fetch the DataUSA population and store the body as returned under `population/<ts>.json`."""
    settings = current_settings()
    url = settings.population_url
    store = store_from_settings(settings)
    body = fetch_population_body(url, settings)
    rows = normalise_population(body)  # refuse junk BEFORE storing anything
    key = population_key(timestamp())
    location = store_population(store, key, body, url)
    create_markdown_artifact(
        markdown=snapshot.snapshot_markdown(url, location, rows),
        key="population-snapshot",
        description="DataUSA population snapshot",
    )
    return snapshot.summarise(key, location, url, body, rows, get_run_logger())


@flow(name="ingest")
def ingest(surveys: list[str] | None = None, allow_mass_delete: bool = False) -> IngestSummary:
    """Every survey (default: QUEST_BLS_SURVEYS), then the population snapshot."""
    with use_settings(current_settings()) as settings:  # one Settings for the subflows too
        mirrors = [
            mirror_survey(s, allow_mass_delete=allow_mass_delete) for s in (surveys or settings.bls_surveys)
        ]
        return IngestSummary(surveys=mirrors, population=population_snapshot())


def ingest_payload(payload: dict[str, Any], settings: Settings) -> tuple[list[str], bool]:
    """The Lambda's scheduled event: `{"surveys": [...], "allow_mass_delete": false}` (both optional)."""
    surveys = payload.get("surveys") or settings.bls_surveys
    if not isinstance(surveys, str | list) or not all(isinstance(s, str) for s in surveys):
        raise QuestError(f"ingest payload: `surveys` must be a list of names, got {surveys!r}")
    return parse_surveys(surveys, "ingest payload `surveys`"), bool(payload.get("allow_mass_delete", False))
