"""The Lambda entry point. One function, three entry paths, chosen by the event's shape.

- SQS batch (`Records` from `aws:sqs`)      → reports flow on the newest snapshot; partial batch failures.
- `{"flow_run_id": "..."}`                   → execute that Prefect flow run (the Lambda work pool).
- `{"poll_work_pool": "NAME"}`               → one polling round of the Lambda worker (serverless schedules).
- EventBridge scheduled event / `{"ingest": {...}}` → the ingest flow (stacks without a Prefect work pool).

Imports stay cheap at module level (cold starts): Prefect, pandas and boto3 load inside the paths.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from flows.core.errors import UnknownEvent
from flows.core.names import LAMBDA_PREFECT_HOME, LAMBDA_RUN_TAG  # the code directory is read-only

if TYPE_CHECKING:
    from flows.settings import Settings

log = logging.getLogger(__name__)


def event_kind(event: Any) -> str:
    """Which entry path an event takes: 'sqs', 'flow_run', 'poll', 'ingest'."""
    if not isinstance(event, dict):
        raise UnknownEvent(f"expected a JSON object event, got {type(event).__name__}")
    records = event.get("Records")
    if (
        isinstance(records, list)
        and records
        and all(isinstance(r, dict) and r.get("eventSource") == "aws:sqs" for r in records)
    ):
        return "sqs"
    if event.get("flow_run_id"):
        return "flow_run"
    if event.get("poll_work_pool"):
        return "poll"
    if "ingest" in event or (
        event.get("source") == "aws.events" and event.get("detail-type") == "Scheduled Event"
    ):
        return "ingest"
    raise UnknownEvent(f"unrecognised event with keys {sorted(event)[:10]}")


def prepare_runtime(environ: dict[str, str] | None = None) -> None:
    """Prefect settings a Lambda needs before Prefect is imported: a writable home, no telemetry.

    The API key is loaded only for an https:// (or loopback) PREFECT_API_URL (`FlowRunEntryError`).
    """
    env = os.environ if environ is None else environ
    if env.get("AWS_LAMBDA_FUNCTION_NAME"):
        env.setdefault("PREFECT_HOME", LAMBDA_PREFECT_HOME)
    env.setdefault("DO_NOT_TRACK", "1")
    # The Prefect API key comes from the function's secret, before Prefect reads its settings.
    from flows.runtime.flow_run import load_prefect_api_key

    load_prefect_api_key(env)


def log_info_in_lambda(env: Mapping[str, str]) -> None:
    """Let the project's INFO lines reach CloudWatch (the plain entry's progress, for one).

    Lambda's Python runtime adds its handler to the root logger but leaves the root at Python's
    WARNING unless the function sets a log level (`AWS_LAMBDA_LOG_LEVEL`, advanced logging
    controls): https://docs.aws.amazon.com/lambda/latest/dg/python-logging.html. So `flows`
    gets INFO itself, unless a level was chosen for the function or for `flows` already.
    """
    logger = logging.getLogger("flows")
    if not env.get("AWS_LAMBDA_LOG_LEVEL") and logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)


# Each of Prefect's two workers (logs, events) gets at most this long to flush.
FLUSH_SECONDS = 10.0


def flush_seconds(context: Any = None) -> float:
    """How long each flush may take: `FLUSH_SECONDS`, less when Lambda's deadline is nearer.

    A run stopped by the deadline ends DEADLINE_MARGIN_SECONDS before it; both flushes fit in what
    is left, with a second to spare for returning.
    """
    remaining_ms = getattr(context, "get_remaining_time_in_millis", None)
    if not callable(remaining_ms):
        return FLUSH_SECONDS
    left = float(remaining_ms()) / 1000.0 - 1.0
    return max(0.5, min(FLUSH_SECONDS, left / 2))


def flush_prefect(timeout: float = FLUSH_SECONDS) -> None:
    """Send buffered logs and events now: Lambda freezes the process once the handler returns."""
    try:
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker
    except ImportError:  # pragma: no cover - prefect is a runtime dependency
        return
    for service in (APILogWorker, EventsWorker):
        try:
            service.drain_all(timeout=timeout)
        except Exception:  # a flush failure must not turn a good run into a failed invocation
            log.exception("flushing %s failed", service.__name__)


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    prepare_runtime()
    if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
        log_info_in_lambda(os.environ)
    from flows.runtime.flow_run import check_prefect_api_target
    from flows.settings import Settings

    # What Prefect loaded (profiles and any-case names included) must not send the key elsewhere.
    check_prefect_api_target()

    kind = event_kind(event)
    settings = Settings()
    # Every flow run created in here (subflows, the SQS reports, the scheduled ingest) carries the
    # tag the stack's zombie automation watches: these runs heartbeat every 30 s. Deployment runs
    # have it from prefect.yaml, since they are created before the function sees them.
    from prefect import tags

    try:
        with tags(LAMBDA_RUN_TAG):
            return _dispatch(kind, event, context, settings)
    finally:
        from flows.io.limits import settle

        settle()  # BLS pacer slots come back before Lambda freezes the process
        flush_prefect(flush_seconds(context))


def _dispatch(kind: str, event: dict[str, Any], context: Any, settings: Settings) -> dict[str, Any]:
    if kind == "sqs":
        from flows.runtime.sqs import handle_sqs_batch

        return handle_sqs_batch(event, settings, context)
    if kind == "flow_run":
        from flows.runtime.flow_run import run_flow_run

        return run_flow_run(str(event["flow_run_id"]), env=event.get("env"), context=context)
    if kind == "poll":
        from flows.runtime.flow_run import poll_work_pool

        return poll_work_pool(str(event["poll_work_pool"]))
    from flows.runtime.plain import run_ingest

    return run_ingest(event.get("ingest") or {}, settings, context)
