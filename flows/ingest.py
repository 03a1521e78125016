"""Prefect flows for the ingest: mirror BLS surveys, snapshot the DataUSA population, or both.

Orchestration only: every I/O step is a task visible at its call site, and the steps themselves
are plain functions in `flows/mirror.py` and `flows/snapshot.py` (which the function's plain entry,
`flows/runtime/plain.py`, runs without Prefect). Flows take only JSON-able parameters (deployments
and the Prefect UI can run them) and get the settings the edge built (`current_settings`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future
from concurrent.futures import wait as wait_any
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from uuid import UUID

import httpx
from prefect import flow, get_run_logger, task
from prefect import tags as run_tags
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import FlowRun
from prefect.context import FlowRunContext
from prefect.futures import PrefectFuture, PrefectWrappedFuture
from prefect.states import Cancelled, Completed, Failed
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote
from pydantic import BaseModel

from flows import discovery, mirror, snapshot
from flows.budget import Budget, TransferMeter, current_budget
from flows.checking import ConcurrentChecks, not_checked
from flows.core import continuation as rules
from flows.core.errors import MassDeleteError, QuestError, TransferFailed, one_line
from flows.core.humanize import human_bytes
from flows.core.listing import Listing
from flows.core.markdown import md_text
from flows.core.names import (
    INGEST_CONTINUATION_TAG,
    MIRROR_DEPLOYMENT,
    REPORT_SURVEY,
    population_key,
    timestamp,
)
from flows.core.plan import Action, PlanItem, StoredFile, SyncPlan, plan_sync, transfer_units
from flows.core.population import normalise_population
from flows.discovery import SurveySelection
from flows.expected import ends_failed_on_expected
from flows.ingest_summary import IngestFanOut, IngestSummary
from flows.io.http import guarded_transport, make_client
from flows.io.store import ObjectStore, store_from_settings
from flows.mirror import MirrorSummary, SurveySync, artifact_key
from flows.settings import Settings, current_settings, parse_surveys, use_settings
from flows.snapshot import PopulationSummary

__all__ = [
    "IngestFanOut",
    "IngestSummary",
    "MirrorSummary",
    "PopulationSummary",
    "ingest",
    "mirror_survey",
    "population_snapshot",
]


# --------------------------------------------------------------------------- tasks (I/O only)

Outcome = tuple[PlanItem, int, str | None]  # a transfer's item, bytes moved, error (None: done)


@task(name="list-survey", task_run_name="list {url}", cache_policy=NO_CACHE)
def list_survey(url: str, client: httpx.Client, settings: Settings) -> Listing:
    return mirror.list_survey(url, client, settings, get_run_logger())


@task(name="read-mirror-state", task_run_name="read stored bls/{survey}/", cache_policy=NO_CACHE)
def read_mirror_state(store: ObjectStore, survey: str, workers: int = 8) -> dict[str, StoredFile]:
    return mirror.read_mirror_state(store, survey, workers)


@task(name="transfer-file", task_run_name="transfer {item.name}", cache_policy=NO_CACHE)
def transfer_file(
    client: httpx.Client, store: ObjectStore, survey: str, item: PlanItem, settings: Settings
) -> int:
    """One file; aborted at the run's hard stop, it ends Cancelled ("not done yet"), not Failed."""
    try:
        return mirror.transfer_file(client, store, survey, item, settings, get_run_logger())
    except Exception:
        if not mirror.stopped_for_continuation(client):
            raise
    # A returned state is the task run's final state (Prefect's return_value_to_state).
    return cast(int, Cancelled(message=f"{item.name}: not done yet ({mirror.CONTINUATION_REASON})"))


@task(name="transfer-files", task_run_name="transfer {label}", cache_policy=NO_CACHE)
def transfer_files(
    client: httpx.Client,
    store: ObjectStore,
    survey: str,
    items: list[PlanItem],
    settings: Settings,
    label: str,
    ledger: dict[str, Outcome],
) -> int:
    """Files one after another in one task run (`flows.core.plan.transfer_units`), each
    retried and logged as `transfer-file` does. Each file's outcome goes into `ledger` as it ends,
    so the mirror knows them whatever this task's state; a failed file does not stop the others,
    and the task then ends Failed naming them. Aborted at the hard stop, it ends Cancelled: the
    files not in the ledger are not done yet."""
    logger = get_run_logger()
    for item in items:
        try:
            size = mirror.transfer_file(client, store, survey, item, settings, logger)
        except Exception as exc:
            if mirror.stopped_for_continuation(client):
                done = f"{len(ledger)} of {len(items)} files done; the rest not done yet"
                return cast(int, Cancelled(message=f"{done} ({mirror.CONTINUATION_REASON})"))
            guard = guarded_transport(client)
            if guard is not None and guard.aborted is not None:
                raise  # the run is stopping: the files left are not tried
            ledger[item.name] = (item, 0, one_line(str(exc)))
            logger.error("%s: %s", item.name, one_line(str(exc)))
            continue
        ledger[item.name] = (item, size, None)
    failed = [(item.name, error) for item, _, error in ledger.values() if error is not None]
    if failed:
        raise TransferFailed(
            f"{len(failed)} of {len(items)} files failed: " + "; ".join(f"{n}: {e}" for n, e in failed)
        )
    return sum(size for _, size, _ in ledger.values())


@task(name="delete-files", task_run_name="delete from bls/{survey}/", cache_policy=NO_CACHE)
def delete_files(store: ObjectStore, survey: str, names: list[str]) -> list[str]:
    return mirror.delete_files(store, survey, names, get_run_logger())


@task(name="fetch-population", task_run_name="fetch {url}", cache_policy=NO_CACHE)
def fetch_population_body(url: str, settings: Settings) -> bytes:
    return snapshot.fetch_population_body(url, settings, get_run_logger())


@task(name="store-population", task_run_name="store {key}", cache_policy=NO_CACHE)
def store_population(store: ObjectStore, key: str, body: bytes, url: str) -> str:
    return snapshot.store_population(store, key, body, url)


# --------------------------------------------------------------------------- flows


@flow(name="mirror-survey", flow_run_name="mirror {survey}", log_prints=False)
@ends_failed_on_expected
def mirror_survey(
    survey: str,
    dry_run: bool = False,
    allow_mass_delete: bool = False,
    snapshot_population: bool = False,
    # A dict default, not None: the deployment form shows an object field, not `type "None"`;
    # never mutated (Prefect hands each run its own copy of the parameters).
    chain: dict[str, Any] = {},  # noqa: B006
) -> MirrorSummary:
    """Mirror one BLS survey directory into `bls/<survey>/`: add, update, delete, keep.

    In Lambda (a run with a budget and a deployment) the transfers stop starting before the time
    is up and the survey continues in a follow-up run of the same deployment: this run ends
    COMPLETED "partial: ...". A chain ends (COMPLETED "stopped: ...", left to the next daily
    ingest) at its third follow-up without net progress or once its first run is a day old
    (`flows.core.continuation.Chain`).

    Args:
        survey: The BLS survey to mirror, e.g. `pr` (its folder under time.series/).
        dry_run: Plan and report only: nothing is downloaded, written or deleted.
        allow_mass_delete: Delete even when the listing drops more than QUEST_MAX_DELETE_FRACTION
            of the stored files (a cut or empty listing never deletes anything either way).
        snapshot_population: Take the day's population snapshot once the survey is complete
            (carried to follow-up runs; the daily ingest sets it for `pr`, which the reports read).
        chain: Leave empty: a partial run sets it for its follow-up (when the chain started, its
            length and progress), so that the chain ends.
    """
    settings = current_settings()
    logger = get_run_logger()
    deployment_id = _own_deployment()
    budget = current_budget() if deployment_id is not None else None
    here, note = rules.Chain.read(chain, datetime.now(UTC))
    if note is not None:
        logger.warning("%s", note)
    parameters: dict[str, Any] = {
        "survey": survey,
        "dry_run": dry_run,
        "allow_mass_delete": False,  # one person's decision for this run: never carried to a follow-up
        "snapshot_population": snapshot_population,
    }
    follow = FollowUp(deployment_id, parameters) if deployment_id is not None else None
    stop: str | None = None
    snapshot_key: str | None = None  # taken early by a chain's last run
    with SurveySync.open(settings, survey, dry_run, logger) as sync:
        parameters["survey"] = sync.survey
        listing = list_survey(sync.url, sync.client, settings)
        stored = read_mirror_state(sync.store, sync.survey, settings.concurrency * 2)
        plan, summary = _guarded_plan(sync, listing, stored, allow_mass_delete, bool(chain))
        here = here.planned(len(plan.transfers))
        if follow is not None:
            stop = here.stop_reason(datetime.now(UTC))  # decided once, before any transfer
            parameters["chain"] = here.follow_up().parameter()
        if stop is not None and snapshot_population and not dry_run:
            # The chain's last run: the day's snapshot now, with the run's time ahead, not in its
            # last seconds (every stored file is whole, old or new; the reports read what is there).
            snapshot_key = population_snapshot().key
        if not dry_run:
            meter = TransferMeter.around_current()
            with (
                ThreadPoolTaskRunner[int](max_workers=settings.concurrency) as runner,
                sync.abort_on_exit(),
                meter.installed(),
            ):
                outcomes, not_done, started = _transfer_gated(
                    sync, plan.transfers, runner, budget, meter, follow if stop is None else None
                )
            try:
                deletes = sync.deletions(plan, summary, outcomes, not_done)
            except TransferFailed as exc:
                if follow is None or follow.run is None:
                    raise
                raise TransferFailed(f"{exc}; the rest continues in run {follow.shown()}") from exc
            if deletes:
                summary.deleted = delete_files(sync.store, sync.survey, deletes)
    if summary.partial and follow is not None:
        done = len(summary.added) + len(summary.updated)
        if follow.run is None and started == 0:  # the startup ate the run: a follow-up would do no better
            raise TransferFailed(
                f"{summary.survey}: no transfer could start: less than QUEST_CONTINUATION_MARGIN_SECONDS "
                f"({settings.continuation_margin_seconds:g} s) was left once the plan was made (raise the "
                "function's timeout or lower the margin)"
            )
        if follow.run is None and done == 0:  # a follow-up would do no better: never a chain of empty runs
            sizes = {i.name: i.size for i in plan.transfers}
            left = ", ".join(f"{name} ({sizes[name]} bytes)" for name in summary.not_done[:5])
            raise TransferFailed(
                f"{summary.survey}: no file could be moved within one invocation: {left}"
                f"{' ...' if len(summary.not_done) > 5 else ''} (raise the function's timeout, at most "
                "900 s, or its memory; QUEST_CONTINUATION_MARGIN_SECONDS sets the margin kept at the end)"
            )
        if stop is not None:  # the chain ends here: the files left wait for the next daily ingest
            return cast(MirrorSummary, _stop_chain(summary, plan, stop, snapshot_key))
        follow_up = follow.start()  # first: the artifact and the log can wait, the time cannot
        summary.continues_in = str(follow_up.id)
        message = rules.partial_message(done, len(plan.transfers), follow.shown())
        _mirror_artifact(summary, plan)
        logger.info("mirror %s %s (%s)", summary.survey, message, summary.counts_text())
        # A returned state is the run's final state; callers of the flow get its data.
        return cast(MirrorSummary, Completed(message=message, data=summary))
    _mirror_artifact(summary, plan)
    logger.info("mirror %s done: %s", summary.survey, summary.counts_text())
    if snapshot_population and not dry_run and snapshot_key is None:
        population_snapshot()
    return summary


def _guarded_plan(
    sync: SurveySync,
    listing: Listing,
    stored: dict[str, StoredFile],
    allow_mass_delete: bool,
    follow_up: bool,
) -> tuple[SyncPlan, MirrorSummary]:
    """The plan and the delete guard; a follow-up run meeting the guard says why it has no leave."""
    try:
        return sync.plan(listing, stored, allow_mass_delete)
    except MassDeleteError as exc:
        if not (follow_up or _tagged(INGEST_CONTINUATION_TAG)):
            raise
        raise MassDeleteError(
            f"{one_line(str(exc))} (this is a follow-up run: allow_mass_delete is one person's decision for "
            f"one run and never carried to a follow-up; start a mirror-survey run of {sync.survey} with it)"
        ) from exc


def _tagged(tag: str) -> bool:
    context = FlowRunContext.get()
    return context is not None and context.flow_run is not None and tag in (context.flow_run.tags or [])


def _stop_chain(summary: MirrorSummary, plan: SyncPlan, reason: str, snapshot: str | None) -> Any:
    """The end of a chain with files left: no follow-up, nothing deleted, one line (naming the day's
    population snapshot when this chain carried it: the last run takes it all the same)."""
    done = len(summary.added) + len(summary.updated)
    summary.stopped = rules.stopped_message(reason, done, len(plan.transfers), snapshot)
    _mirror_artifact(summary, plan)
    get_run_logger().warning("mirror %s %s (%s)", summary.survey, summary.stopped, summary.counts_text())
    return Completed(message=summary.stopped, data=summary)


def _mirror_artifact(summary: MirrorSummary, plan: SyncPlan) -> None:
    create_markdown_artifact(
        markdown=summary.markdown(plan),
        key=artifact_key("mirror", summary.survey),
        description=md_text(f"BLS mirror {summary.changes_text()}"),
    )


class FollowUp:
    """The run that continues a partial mirror: started once, as early as the run knows it is partial.

    Started when the time is up with files still waiting (`at` = when this run's time ends, plus
    the flush: the follow-up's invocation starts as this one ends, and finds the lease released), or
    at the end when only aborted transfers are left. Starting it early keeps its creation, a few API
    calls that a loaded server may retry for seconds, out of the last seconds of the run.
    """

    def __init__(self, deployment_id: UUID, parameters: dict[str, Any]):
        self.deployment_id, self.parameters = deployment_id, parameters
        self.run: FlowRun | None = None

    def start(self, at: datetime | None = None) -> FlowRun:
        if self.run is None:
            survey = self.parameters["survey"]
            self.run = _start_follow_up(self.deployment_id, self.parameters, [f"survey:{survey}"], at)
        return self.run

    def shown(self) -> str:
        return "?" if self.run is None else f"{self.run.name} ({self.run.id})"


def _transfer_gated(
    sync: SurveySync,
    items: list[PlanItem],
    runner: ThreadPoolTaskRunner[int],
    budget: Budget | None,
    meter: TransferMeter,
    follow: FollowUp | None = None,
) -> tuple[list[Outcome], list[PlanItem], int]:
    """Start the transfers one by one as the rules allow (flows/core/continuation.py): at most
    `concurrency` in flight, none once the margin is reached, the ones in flight aborted at the hard
    stop. Returns the outcomes, the items not done yet (never started, or aborted), how many started.

    When the time is up with files still waiting and some moved (none failed), `follow` is started
    then, scheduled for the end of this run's time."""
    settings = sync.settings
    margin = settings.continuation_margin_seconds
    pending = transfer_units(items, workers=settings.concurrency)
    flying: dict[Future[Any], tuple[Unit, PrefectFuture[int], dict[str, Outcome]]] = {}
    outcomes: list[Outcome] = []
    not_done: list[PlanItem] = []
    started = 0

    def collect(unit: Unit, future: PrefectFuture[int], ledger: dict[str, Outcome]) -> None:
        if len(unit) > 1:
            _batch_outcomes(unit, future, ledger, outcomes, not_done)
            return
        (item,) = unit
        outcome = _outcome(item, future)
        if outcome is not None:
            outcomes.append(outcome)
            return
        rate = meter.file_rate(item.name).per_second()
        if budget is not None and not rules.fits_in_a_run(item.size, rate, budget.seconds, margin):
            assert rate is not None
            outcomes.append(
                (item, 0, rules.too_big_message(item.name, item.size, rate, budget.seconds, margin))
            )
        else:
            not_done.append(item)

    while pending or flying:
        remaining = budget.remaining() if budget is not None else None
        if flying and rules.must_abort(remaining, margin):
            sync.stop_for_continuation()
            for unit, future, ledger in flying.values():
                collect(unit, future, ledger)
            flying.clear()
            break
        if (
            follow is not None
            and follow.run is None
            and pending
            and budget is not None
            and remaining is not None
            and rules.time_is_up(remaining, margin)
            and rules.worth_a_follow_up([error for _, _, error in outcomes])
        ):
            # Due when this run's time is up plus the flush: a worker submits runs up to its
            # prefetch (10 s) early, and the follow-up's lease wait (10 s) then covers our release.
            due = max(0.0, remaining) + rules.hard_stop_seconds(margin)
            follow.start(datetime.now(UTC) + timedelta(seconds=due))
            remaining = budget.remaining()
        rate = meter.rate().per_second()
        while pending and len(flying) < settings.concurrency:
            pick = next(
                (u for u in pending if rules.may_start(remaining, margin, _size(u), rate, len(flying))), None
            )
            if pick is None:
                break
            pending.remove(pick)
            started += 1
            book: dict[str, Outcome] = {}
            if len(pick) == 1:
                future = runner.submit(transfer_file, sync.transfer_args(pick[0]))
            else:
                batch = {**sync.transfer_args(pick[0]), "items": list(pick), "label": _label(pick)}
                del batch["item"]
                # quote: the task gets this very dict (Prefect would copy a collection it rewrote)
                future = runner.submit(transfer_files, {**batch, "ledger": quote(book)})
            assert isinstance(future, PrefectWrappedFuture)
            flying[future.wrapped_future] = (pick, future, book)
        if not flying:
            break  # nothing may start: what is left waits for the follow-up run
        wait = None if remaining is None else max(0.05, min(1.0, remaining - rules.hard_stop_seconds(margin)))
        done, _ = wait_any(list(flying), timeout=wait, return_when=FIRST_COMPLETED)
        for key in done:
            collect(*flying.pop(key))
    # Never started: not done yet. (Only a file's own attempt says it cannot fit: the aggregate
    # rate includes the waits for BLS's request limits, which say nothing about one file.)
    not_done.extend(item for unit in pending for item in unit)
    return outcomes, not_done, started


Unit = tuple[PlanItem, ...]  # one file, or a batch packed (flows.core.plan.transfer_units)


def _size(unit: Unit) -> int:
    return sum(item.size for item in unit)


def _label(unit: Unit) -> str:
    """A batch's task run name, e.g. `8 files, 64.0 MiB: ce.data.0 to ce.data.7` (each is in its
    log; plain words, as the UI's font may lack an ellipsis)."""
    return f"{len(unit)} files, {human_bytes(_size(unit))}: {unit[0].name} to {unit[-1].name}"


def _batch_outcomes(
    unit: Unit,
    future: PrefectFuture[int],
    ledger: dict[str, Outcome],
    outcomes: list[Outcome],
    not_done: list[PlanItem],
) -> None:
    """A batch's files: each one's own outcome from the ledger; one it never reached is not done
    yet when the batch was stopped (Cancelled, at the hard stop), else failed with the batch."""
    future.wait()
    stopped = future.state.is_cancelled()
    for item in unit:
        if item.name in ledger:
            outcomes.append(ledger[item.name])
        elif stopped:
            not_done.append(item)
        else:
            outcomes.append((item, 0, f"not transferred: {future.state.message or future.state.name}"))


def _outcome(item: PlanItem, future: PrefectFuture[int]) -> Outcome | None:
    """(item, bytes, None) for a transfer that succeeded, (item, 0, why) for one that did not, None
    for one aborted at the hard stop (not done yet)."""
    future.wait()
    if future.state.is_completed():
        return item, future.result(), None
    if future.state.is_cancelled():
        return None
    try:
        future.result(raise_on_failure=True)
    except Exception as exc:
        return item, 0, str(exc)
    return item, 0, str(future.state.message)


def _own_deployment() -> UUID | None:
    """The deployment of the running flow run (None for a local run or an in-process subflow)."""
    context = FlowRunContext.get()
    run = context.flow_run if context is not None else None
    return run.deployment_id if run is not None else None


def _start_follow_up(
    deployment_id: UUID,
    parameters: dict[str, Any],
    tags: list[str] | None = None,
    scheduled_time: datetime | None = None,
) -> FlowRun:
    """A new run of the same deployment, a child of this one in the UI (see `_start_run`), named
    like this one.

    The idempotency key makes a repeated call (a retried flow run) start it once."""
    context = FlowRunContext.get()
    run = context.flow_run if context is not None else None
    key = f"continuation-of-{run.id}" if run is not None else None
    return _start_run(deployment_id, parameters, key, tags, scheduled_time, run.name if run else None)


def _start_run(
    deployment: UUID | str,
    parameters: dict[str, Any],
    key: str | None = None,
    tags: list[str] | None = None,
    scheduled_time: datetime | None = None,
    name: str | None = None,
) -> FlowRun:
    """Create a run of `deployment` scheduled now (or at `scheduled_time`), as a child of the current
    run, and not wait for it (timeout=0): the pool's worker picks it up like any run, in its own
    invocation."""
    from prefect.deployments import run_deployment

    run = run_deployment(
        deployment,
        parameters=parameters,
        scheduled_time=scheduled_time,
        flow_run_name=name,
        timeout=0,
        as_subflow=True,
        idempotency_key=key,
        tags=tags,
    )
    assert isinstance(run, FlowRun)  # the sync call returns the run, not a coroutine
    return run


@flow(name="population-snapshot", flow_run_name=lambda: f"population {_run_day()}")
@ends_failed_on_expected
def population_snapshot() -> PopulationSummary:
    """Fetch the DataUSA population and store the body as returned under `population/<ts>.json`."""
    settings = current_settings()
    url = settings.population_url
    store = store_from_settings(settings)
    body = fetch_population_body(url, settings)
    rows = normalise_population(body)  # refuse junk BEFORE storing anything
    key = population_key(timestamp())
    location = store_population(store, key, body, url)
    years = [year for year, _ in rows]
    create_markdown_artifact(
        markdown=snapshot.snapshot_markdown(url, location, rows),
        key="population-snapshot",
        description=md_text(
            f"DataUSA population {key}: {len(years)} years" + (f" ({years[0]}–{years[-1]})" if years else "")
        ),
    )
    return snapshot.summarise(key, location, url, body, rows, get_run_logger())


@task(name="resolve-surveys", task_run_name="resolve surveys", cache_policy=NO_CACHE)
def resolve_surveys(settings: Settings, requested: list[str] | None) -> SurveySelection:
    """The surveys to mirror: as configured, or discovered at the `time.series/` root (one GET)."""
    with make_client(settings, settings.bls_base_url) as client:
        return discovery.resolve_surveys(settings, requested, client, get_run_logger())


@task(name="retire-surveys", task_run_name="retire gone surveys", cache_policy=NO_CACHE)
def retire_surveys(settings: Settings, gone: list[str], allow_mass_delete: bool) -> list[str]:
    return discovery.retire_surveys(settings, gone, allow_mass_delete, get_run_logger())


class SurveyCheck(BaseModel):
    """One survey's listing against its stored state: unchanged (its summary), or what changed."""

    survey: str
    changed: dict[str, int]
    summary: MirrorSummary | None = None


def check_survey(settings: Settings, survey: str, stop_in: float | None = None) -> SurveyCheck | None:
    """List one survey and read its stored state (both tasks), and plan: does it need a mirror run?

    Reads only (no lease, nothing written): one listing GET and one store listing per survey.
    `stop_in`: seconds until the run's hard stop, when a check still running (a slow listing) is
    aborted and None returned: the survey is left for the follow-up run, not crashed at the deadline.
    """
    logger = get_run_logger()
    with SurveySync.open(settings, survey, True, logger) as sync:
        timer = None if stop_in is None else threading.Timer(max(0.0, stop_in), sync.stop_for_continuation)
        if timer is not None:
            timer.daemon = True
            timer.start()
        try:
            listing = list_survey(sync.url, sync.client, settings)
            stored = read_mirror_state(sync.store, sync.survey, settings.concurrency * 2)
        except Exception:
            if sync.stopped_for_continuation():
                logger.info(
                    "%s: check stopped at the run's hard stop; left for the follow-up run", sync.survey
                )
                return None
            raise
        finally:
            if timer is not None:
                timer.cancel()
        plan = plan_sync(sync.survey, listing.entries, stored, held=listing.unreadable)
        changed = {k: v for k, v in plan.counts().items() if k != Action.KEEP.value and v}
        if changed:
            return SurveyCheck(survey=sync.survey, changed=changed)
        _, summary = sync.plan(listing, stored, allow_mass_delete=False)  # nothing to delete: no guard
        summary.dry_run = False
        return SurveyCheck(survey=sync.survey, changed={}, summary=summary)


@flow(name="ingest", flow_run_name=lambda: _ingest_run_name())
@ends_failed_on_expected
def ingest(surveys: Sequence[str] = (), allow_mass_delete: bool = False) -> IngestSummary:
    """Every survey (default: QUEST_BLS_SURVEYS; `all` discovers them), then the population snapshot.

    As a deployment run with the `mirror-survey` deployment present (the work pool), it fans out:
    every survey is checked (listing + stored state) and each changed one gets its own
    `mirror-survey` run, started as a child of this run and not waited for; the day's population
    snapshot is written here when `pr` has no change, else by `pr`'s mirror run once it completes
    (its `snapshot_population` parameter, carried to its follow-ups). In Lambda, checks that would
    outlast the run's time continue in a follow-up ingest run (`surveys` = those not checked yet).
    Otherwise the mirrors run in-process as subflows.

    Args:
        surveys: BLS surveys to mirror, e.g. `["pr", "ce"]`, or `["all"]` for every survey listed
            at the time.series/ root. Empty (the default): QUEST_BLS_SURVEYS.
        allow_mass_delete: Delete even when a listing drops more than QUEST_MAX_DELETE_FRACTION of
            a survey's files, and remove the mirrors of surveys no longer listed at the root.
    """
    with use_settings(current_settings()) as settings:  # one Settings for the subflows too
        selection = resolve_surveys(settings, list(surveys) or None)
        if selection.gone:
            selection.retired = retire_surveys(settings, selection.gone, allow_mass_delete)
        mirror_deployment = _mirror_deployment() if _own_deployment() is not None else None
        if mirror_deployment is not None:
            fanned = _fan_out(settings, selection, allow_mass_delete, mirror_deployment)
            # A returned state is the run's final state (its data the fan-out's summary); only a
            # deployment run fans out, and its value is read from that state, never by a caller.
            _ingest_artifact(fanned.markdown(), fanned.message())
            if fanned.failed:
                get_run_logger().error("%s", fanned.message())
                return cast(IngestSummary, Failed(message=fanned.message(), data=fanned))
            get_run_logger().info("%s", fanned.message())
            return cast(IngestSummary, Completed(message=fanned.message(), data=fanned))

        def mirror_one(survey: str) -> MirrorSummary:
            with run_tags(f"survey:{survey}"):
                return mirror_survey(survey, allow_mass_delete=allow_mass_delete)

        # As `quest sync` and the plain entry: discovered surveys go on past one that fails; the
        # snapshot (which triggers the reports, read from pr) is taken unless pr itself failed.
        mirrors, failures = discovery.mirror_each(selection, mirror_one, get_run_logger())
        if REPORT_SURVEY in failures:
            raise discovery.surveys_failed(failures, len(selection.surveys))
        summary = IngestSummary(surveys=mirrors, population=population_snapshot(), selection=selection)
        _ingest_artifact(summary.markdown(), summary.message())
        get_run_logger().info("%s", summary.message())
        if failures:
            raise discovery.surveys_failed(failures, len(selection.surveys))
        return summary


def _ingest_artifact(markdown: str, message: str) -> None:
    """The description is the run's message, which quotes upstream text (a failed check's page)."""
    create_markdown_artifact(markdown=markdown, key="ingest-summary", description=md_text(message[:500]))


def _run_day() -> str:
    """The day a run is for: its scheduled start (UTC), so a late or retried run keeps its day."""
    from prefect.runtime import flow_run

    return f"{flow_run.scheduled_start_time:%Y-%m-%d}"


def _ingest_run_name() -> str:
    from prefect.runtime import flow_run

    continued = INGEST_CONTINUATION_TAG in (flow_run.tags or [])
    return f"ingest {_run_day()}" + (" (continued)" if continued else "")


def _fan_out(
    settings: Settings, selection: SurveySelection, allow_mass_delete: bool, mirror_deployment: UUID
) -> IngestFanOut:
    """Check the surveys (`pr` first, QUEST_CONCURRENCY at a time: `flows.checking`), start a
    mirror run per changed one as its check finishes, and decide the snapshot.

    A survey whose mirror runs from an earlier day (a continuation chain still going) is not
    checked and gets no second run: its chain re-plans at every step, so it takes the new changes
    too. A check that fails is reported and the other surveys go on; the run then ends Failed.
    In Lambda the checks stop when less than the continuation margin is left (all of BLS at BLS's
    request rate, shared with the mirrors already started, may not fit in one invocation), and a
    check still running at the hard stop is aborted: the surveys not checked go to a follow-up
    ingest run, tagged `INGEST_CONTINUATION_TAG`. The snapshot is decided by the run that checks
    `pr` (checked first), or, without `pr`, by the first run of the chain.
    """
    margin = settings.continuation_margin_seconds
    order = sorted(selection.surveys, key=lambda s: s != REPORT_SURVEY)  # pr first, then as listed
    busy = _mirrors_in_progress(mirror_deployment)
    unchanged: list[MirrorSummary] = []
    started: dict[str, str] = {}
    failed: dict[str, str] = {}
    context = FlowRunContext.get()
    run = context.flow_run if context is not None else None
    in_progress = {s: busy[s] for s in order if s in busy}

    def check(survey: str, stop_in: float | None) -> SurveyCheck | QuestError | None:
        try:
            return check_survey(settings, survey, stop_in)
        except QuestError as exc:  # reported; the other surveys go on and the run ends Failed
            return exc

    follow: list[FlowRun] = []

    def hand_over(running: list[str], queued: list[str], remaining: float) -> None:
        """The follow-up ingest, now: the surveys queued and those still being checked (narrowed at
        the end to those left unchecked), due when this run's time ends so that the mirrors this
        run still starts are in progress when it looks. Not while `pr` is being checked: its check decides
        the day's snapshot, which a re-check would write twice; the end of the run decides then."""
        if run is None or run.deployment_id is None or REPORT_SURVEY in running:
            return
        due = datetime.now(UTC) + timedelta(seconds=max(0.0, remaining) + rules.hard_stop_seconds(margin))
        left = sorted([*running, *queued], key=order.index)
        follow.append(_start_ingest_follow_up(run, left, due))

    to_check = [s for s in order if s not in busy]
    checks: ConcurrentChecks[SurveyCheck | QuestError] = ConcurrentChecks(
        to_check, check, settings.concurrency, margin, progressed=bool(in_progress), on_time_up=hand_over
    )
    done: list[str] = list(in_progress)
    for survey, result in checks:
        done.append(survey)
        if isinstance(result, QuestError):
            failed[survey] = one_line(str(result))
        elif result.summary is not None:
            unchanged.append(result.summary)
        else:
            started[survey] = _start_mirror(result, allow_mass_delete, run)
    if checks.stopped and not done:  # a follow-up would do no better: never an endless chain
        for survey in checks.stopped:
            failed[survey] = (
                "its listing and stored state could not be read within one run "
                f"({settings.continuation_margin_seconds:g} s margin; a slow upstream?)"
            )
        done.extend(checks.stopped)
    for survey, other in in_progress.items():
        get_run_logger().info(
            "%s: mirror run %s (%s) is still %s; no second run started (it takes today's changes too)",
            survey,
            other.name,
            other.id,
            other.state.name if other.state else "going",
        )
    fanned = IngestFanOut(
        selection=selection,
        unchanged=unchanged,
        started=started,
        in_progress={s: f"{r.name} {r.id}" for s, r in in_progress.items()},
        failed=failed,
    )
    remaining_surveys = not_checked(order, done)
    if remaining_surveys and run is not None and run.deployment_id is not None:
        if not follow:  # not handed over when the time was up: now, with exactly what is left
            follow.append(_start_ingest_follow_up(run, remaining_surveys))
        elif follow[0].parameters.get("surveys") != remaining_surveys:
            _narrow_follow_up(follow[0], remaining_surveys)
        fanned.checked, fanned.continues_in = len(done), f"{follow[0].name} ({follow[0].id})"
    if REPORT_SURVEY in started:
        fanned.population_by = started[REPORT_SURVEY]
    elif REPORT_SURVEY in in_progress:
        other = in_progress[REPORT_SURVEY]
        if other.parameters.get("snapshot_population"):
            fanned.population_by = f"{other.id} (started earlier)"
        else:
            fanned.population_note = (
                f"not written: {REPORT_SURVEY} is being mirrored by run {other.name} ({other.id}), "
                "which does not write it; the next ingest does"
            )
    elif REPORT_SURVEY in failed:
        fanned.population_note = f"not written: {REPORT_SURVEY} could not be checked"
    elif REPORT_SURVEY in done or (
        REPORT_SURVEY not in order and not (run is not None and INGEST_CONTINUATION_TAG in run.tags)
    ):
        fanned.population = population_snapshot()
    return fanned


def _start_ingest_follow_up(run: FlowRun, surveys: list[str], at: datetime | None = None) -> FlowRun:
    """The ingest run that checks `surveys` after this one, tagged `INGEST_CONTINUATION_TAG`.

    Never with `allow_mass_delete`: it is one person's decision for one run, so the follow-up and
    the mirror runs it starts keep the delete guard (and say so when they meet it)."""
    assert run.deployment_id is not None
    tags = sorted({*run.tags, INGEST_CONTINUATION_TAG})  # the server adds the deployment's too
    parameters = {"surveys": surveys, "allow_mass_delete": False}
    return _start_follow_up(run.deployment_id, parameters, tags, at)


def _narrow_follow_up(follow: FlowRun, surveys: list[str]) -> None:
    """The follow-up handed over at the time-up, down to the surveys still unchecked at the end.

    It was created with the checks then running; those that finished need no second listing GET
    (a no-change day stays at one per survey). It is not due before this run's time ends, so it has
    not read them yet. Best effort: if the API refuses, the follow-up re-checks a few surveys.
    """
    from prefect.client.orchestration import get_client

    parameters = {"surveys": surveys, "allow_mass_delete": False}
    try:
        with get_client(sync_client=True) as client:
            client.update_flow_run(follow.id, parameters=parameters)
    except Exception as exc:  # the follow-up still runs; it only checks a few surveys again
        get_run_logger().warning(
            "could not narrow follow-up %s to %d surveys (%s); it checks %d",
            follow.id,
            len(surveys),
            one_line(str(exc)),
            len(follow.parameters.get("surveys") or []),
        )


def _start_mirror(check: SurveyCheck, allow_mass_delete: bool, run: FlowRun | None) -> str:
    """Start the changed survey's `mirror-survey` run as a child of this one (not waited for)."""
    parameters = {
        "survey": check.survey,
        "allow_mass_delete": allow_mass_delete,
        "snapshot_population": check.survey == REPORT_SURVEY,
    }
    key = f"{run.id}:mirror:{check.survey}" if run is not None else None
    tags = [f"survey:{check.survey}"]
    if run is not None and INGEST_CONTINUATION_TAG in run.tags:  # its delete guard says why it has no leave
        tags.append(INGEST_CONTINUATION_TAG)
    child = _start_run(  # a retried ingest starts it once (the key)
        MIRROR_DEPLOYMENT, parameters, key, tags, name=f"mirror {check.survey}"
    )
    get_run_logger().info(
        "%s changed (%s): started mirror run %s (%s)",
        check.survey,
        ", ".join(f"{n:,} to {action}" for action, n in check.changed.items()),
        child.name,
        child.id,
    )
    return str(child.id)


def _mirror_deployment() -> UUID | None:
    """The `mirror-survey` deployment on this Prefect API (prefect.yaml deploys it), if any."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            return client.read_deployment_by_name(MIRROR_DEPLOYMENT).id
        except ObjectNotFound:
            return None


IN_PROGRESS_STATES = ("SCHEDULED", "PENDING", "RUNNING", "PAUSED", "CANCELLING")
IN_PROGRESS_WINDOW = timedelta(days=1)  # older non-final runs are stale (a lost worker), not running


def _mirrors_in_progress(deployment_id: UUID) -> dict[str, FlowRun]:
    """Survey -> a run of the mirror deployment that is not final yet (one API call per ingest run)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterDeploymentId,
        FlowRunFilterExpectedStartTime,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    since = datetime.now(UTC) - IN_PROGRESS_WINDOW
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id]),
                state=FlowRunFilterState(
                    type=FlowRunFilterStateType(any_=[StateType(t) for t in IN_PROGRESS_STATES])
                ),
                expected_start_time=FlowRunFilterExpectedStartTime.model_validate({"after_": since}),
            ),
            limit=200,
        )
    busy: dict[str, FlowRun] = {}
    for other in runs:
        survey = other.parameters.get("survey")
        if isinstance(survey, str):
            busy.setdefault(survey.strip().lower(), other)
    return busy


def ingest_payload(payload: dict[str, Any], settings: Settings) -> tuple[list[str], bool]:
    """The Lambda's scheduled event: `{"surveys": [...], "allow_mass_delete": false}` (both optional)."""
    surveys = payload.get("surveys") or settings.bls_surveys
    if not isinstance(surveys, str | list) or not all(isinstance(s, str) for s in surveys):
        raise QuestError(f"ingest payload: `surveys` must be a list of names, got {surveys!r}")
    return parse_surveys(surveys, "ingest payload `surveys`"), bool(payload.get("allow_mass_delete", False))
