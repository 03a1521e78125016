"""Flow runs whose Lambda invocation died without reporting: read back from the on-failure queue.

An asynchronous invocation that times out, runs out of memory, is killed, raises before the flow
starts, or is never run (throttled past its maximum event age) cannot tell Prefect itself. Lambda
sends a record of it to the function's on-failure destination (an SQS queue, infra_pulumi/runner.py;
the record's shape is in flows/core/invoke_failures.py). At the start of every polling round the
worker drains that queue (`reconcile_invoke_failures`):

- a record of a flow run that is not final (and whose infrastructure pid is that request, or
  unset): the run is set CRASHED (forced) with the record's one-line reason, the request's last
  function log lines are forwarded to the run's logs (logger `prefect.flow_runs.observer`, as
  prefect-aws's ECS observer does), and the message is deleted;
- a record of a run already final, scheduled again, paused, deleted, or invoked again since
  (another request id), and a record of another payload (the pool poll, ...): deleted, with a log
  line;
- a message that is not a destination record: left for the queue's retention, logged once (its
  first receive) and hidden for 12 hours so it does not come back every minute;
- a record that is not this pool's (issue 27): of another function (its `functionArn`'s name,
  version or alias, region or account differ from the pool's function), or of a run with no work
  pool or another pool's. Nothing is changed and its request id is not noted: it is left like an
  unreadable message (logged once, hidden for 12 hours, gone at the queue's retention), never
  deleted, as it may be another worker's on a shared queue, and it can never become ours.

A message whose run could not be updated (the API is unreachable) is left to come back after
its visibility timeout.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

import anyio
import anyio.to_thread

from flows.core.errors import RuntimeFailure
from flows.core.invoke_failures import InvokeFailure, Unreadable, not_our_function, parse_invoke_failure
from flows.io.lambda_logs import RequestLog, request_lines

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.objects import FlowRun

# One call: at most this many receives of up to 10 messages (SQS's maximum per receive).
MAX_ROUNDS = 5
BATCH = 10
# Long-poll each receive this long (seconds): short polls may miss messages on a quiet queue.
WAIT_SECONDS = 1
# A message being handled is invisible this long; one not deleted comes back after it.
VISIBILITY_SECONDS = 60
# An unreadable message is hidden this long (SQS's maximum) between its receives.
UNREADABLE_HIDDEN_SECONDS = 12 * 3600
# Function logs are searched from this long before the run was created.
LOG_SEARCH_MARGIN = timedelta(minutes=5)

Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]


@dataclass
class ReconcileSummary:
    """What one drain did (the worker keeps `request_ids` to answer kill_infrastructure)."""

    crashed: list[str] = field(default_factory=list)  # flow run ids set CRASHED
    deleted: int = 0  # messages deleted (crashed ones included)
    left: int = 0  # messages left on the queue (unreadable, or the update failed)
    request_ids: set[str] = field(default_factory=set)  # requests whose failure record was seen


@dataclass(frozen=True)
class FailureQueue:
    """Where the records are, whose they are, and how to read the logs they point at."""

    sqs: Any  # a boto3 SQS client
    queue_url: str
    logs: Any | None = None  # a boto3 Logs client; None: no logs are forwarded
    log_group: str | None = None
    # Only records of this function, of runs of this pool, change anything.
    work_pool_name: str = field(kw_only=True)
    function_name: str = field(kw_only=True)  # the pool's: a name, a partial or a full ARN
    function_region: str | None = field(default=None, kw_only=True)  # the pool's region setting


async def reconcile_invoke_failures(
    client: PrefectClient,
    queue: FailureQueue,
    logger: Logger,
    *,
    max_rounds: int = MAX_ROUNDS,
    wait_seconds: int = WAIT_SECONDS,
    run_logger: Callable[[FlowRun], Logger] | None = None,
) -> ReconcileSummary:
    """Drain the on-failure queue (bounded); never raises for one message's trouble."""
    summary = ReconcileSummary()
    for _ in range(max_rounds):
        messages = await anyio.to_thread.run_sync(_receive, queue, wait_seconds)
        if not messages:
            break
        for message in messages:
            try:
                await _handle(client, queue, message, logger, summary, run_logger or _observer_logger)
            except Exception as exc:  # SQS refused a delete, ...: the message comes back later
                summary.left += 1
                logger.warning(
                    "on-failure queue message %s not reconciled: %s: %s",
                    message.get("MessageId", "?"),
                    type(exc).__name__,
                    exc,
                )
    return summary


def _receive(queue: FailureQueue, wait_seconds: int) -> list[dict[str, Any]]:
    response = queue.sqs.receive_message(
        QueueUrl=queue.queue_url,
        MaxNumberOfMessages=BATCH,
        WaitTimeSeconds=max(0, min(int(wait_seconds), 20)),
        VisibilityTimeout=VISIBILITY_SECONDS,
        MessageSystemAttributeNames=["ApproximateReceiveCount"],
    )
    messages: list[dict[str, Any]] = response.get("Messages") or []
    return messages


async def _handle(
    client: PrefectClient,
    queue: FailureQueue,
    message: dict[str, Any],
    logger: Logger,
    summary: ReconcileSummary,
    run_logger: Callable[[FlowRun], Logger],
) -> None:
    message_id = message.get("MessageId", "?")
    parsed = parse_invoke_failure(message.get("Body"))
    if isinstance(parsed, Unreadable):
        await _leave_unreadable(queue, message, parsed, logger)
        summary.left += 1
        return
    foreign = not_our_function(parsed.function_arn, queue.function_name, queue.function_region)
    if foreign:
        await _leave_foreign(queue, message, f"not of the pool's function: {foreign}", logger)
        summary.left += 1
        return
    outcome = await _reconcile(client, queue, parsed, logger, summary, run_logger)
    if not isinstance(outcome, str):  # a request of ours that has ended
        summary.request_ids.add(parsed.request_id)
    if outcome is True:
        await anyio.to_thread.run_sync(_delete, queue, message)
        summary.deleted += 1
    elif outcome is False:
        summary.left += 1
        logger.debug("invoke failure message %s left for a later round", message_id)
    else:
        await _leave_foreign(queue, message, outcome, logger)
        summary.left += 1


async def _reconcile(
    client: PrefectClient,
    queue: FailureQueue,
    failure: InvokeFailure,
    logger: Logger,
    summary: ReconcileSummary,
    run_logger: Callable[[FlowRun], Logger],
) -> bool | str:
    """Apply one record; True when its message can be deleted, False to see it again, or why the
    run is not this pool's (nothing changed)."""
    from prefect.exceptions import ObjectNotFound
    from prefect.states import Crashed

    reason = failure.reason()
    if failure.flow_run_id is None:
        logger.info("Lambda invocation failed (%s payload, not a flow run): %s", failure.payload_kind, reason)
        return True
    try:
        flow_run = await client.read_flow_run(UUID(failure.flow_run_id))
    except ObjectNotFound:
        logger.info("flow run %s no longer exists: %s", failure.flow_run_id, reason)
        return True
    except Exception as exc:  # the API is unreachable: the record comes back later
        logger.warning("could not read flow run %s: %s: %s", failure.flow_run_id, type(exc).__name__, exc)
        return False
    if flow_run.work_pool_name != queue.work_pool_name:
        pool = f"pool {flow_run.work_pool_name!r}" if flow_run.work_pool_name else "no work pool"
        return f"flow run {flow_run.id} is not of pool {queue.work_pool_name!r} ({pool})"
    state = flow_run.state
    skip = _why_not_crash(flow_run, failure)
    if skip:
        logger.info("flow run %s left as it is (%s): %s", flow_run.id, skip, reason)
        return True
    forward = run_logger(flow_run)
    forward.error(reason)
    await _forward_logs(queue, failure, flow_run, forward)
    try:
        await client.set_flow_run_state(flow_run.id, Crashed(message=reason), force=True)
    except ObjectNotFound:
        logger.info("flow run %s was deleted before it could be marked crashed", flow_run.id)
        return True
    except Exception as exc:
        logger.warning("could not mark flow run %s crashed: %s: %s", flow_run.id, type(exc).__name__, exc)
        return False
    summary.crashed.append(str(flow_run.id))
    logger.info(
        "flow run %s (%s) set Crashed: %s",
        flow_run.id,
        state.type.value if state is not None else "no state",
        reason,
    )
    return True


def _why_not_crash(flow_run: FlowRun, failure: InvokeFailure) -> str | None:
    """Why a record must not crash this run (None: it must)."""
    state = flow_run.state
    if state is None:
        return None
    if state.is_final():
        return f"already {state.type.value}"
    if state.is_scheduled() or state.is_paused():
        return f"{state.type.value}: it will be submitted again"
    pid = flow_run.infrastructure_pid
    if pid and pid != failure.request_id:
        return f"invoked again since, now as request {pid}"
    return None


async def _forward_logs(
    queue: FailureQueue, failure: InvokeFailure, flow_run: FlowRun, forward: Logger
) -> None:
    if queue.logs is None or not queue.log_group:
        forward.info("The function's logs were not read (no log group configured).")
        return
    since_ms = int((flow_run.created - LOG_SEARCH_MARGIN).timestamp() * 1000) if flow_run.created else None
    try:
        log = await anyio.to_thread.run_sync(_read_request, queue, failure.request_id, since_ms)
    except RuntimeFailure as exc:
        forward.warning("The function's logs of request %s could not be read: %s", failure.request_id, exc)
        return
    if log is None:
        forward.info(
            "Lambda request %s wrote no log lines to %s (it never started, or its logs are not there yet).",
            failure.request_id,
            queue.log_group,
        )
        return
    forward.info(
        "Last %d log lines of Lambda request %s (%s, stream %s)%s:",
        len(log.lines),
        failure.request_id,
        log.log_group,
        log.log_stream,
        ", earlier lines left out" if log.truncated else "",
    )
    for line in log.lines:
        forward.info(line)


def _read_request(queue: FailureQueue, request_id: str, since_ms: int | None) -> RequestLog | None:
    assert queue.log_group is not None
    return request_lines(queue.logs, queue.log_group, request_id, since_ms=since_ms)


async def _leave_unreadable(
    queue: FailureQueue, message: dict[str, Any], why: Unreadable, logger: Logger
) -> None:
    await _leave(queue, message, f"is not a Lambda destination record ({why.why})", logger)


async def _leave_foreign(queue: FailureQueue, message: dict[str, Any], why: str, logger: Logger) -> None:
    await _leave(queue, message, f"is not this pool's: {why}", logger)


async def _leave(queue: FailureQueue, message: dict[str, Any], what: str, logger: Logger) -> None:
    """Log once (the first receive), hide for 12 hours, leave for the queue's retention."""
    receives = str((message.get("Attributes") or {}).get("ApproximateReceiveCount", "1"))
    level = logging.WARNING if receives in ("", "1") else logging.DEBUG
    logger.log(
        level,
        "on-failure queue message %s %s: left on the queue for its retention",
        message.get("MessageId", "?"),
        what,
    )
    try:
        await anyio.to_thread.run_sync(_hide, queue, message)
    except Exception as exc:  # only its next appearance is earlier
        logger.debug("could not hide message %s: %s", message.get("MessageId", "?"), exc)


def _hide(queue: FailureQueue, message: dict[str, Any]) -> None:
    queue.sqs.change_message_visibility(
        QueueUrl=queue.queue_url,
        ReceiptHandle=message["ReceiptHandle"],
        VisibilityTimeout=UNREADABLE_HIDDEN_SECONDS,
    )


def _delete(queue: FailureQueue, message: dict[str, Any]) -> None:
    queue.sqs.delete_message(QueueUrl=queue.queue_url, ReceiptHandle=message["ReceiptHandle"])


def _observer_logger(flow_run: FlowRun) -> Logger:
    from prefect.logging.loggers import flow_run_logger

    return flow_run_logger(flow_run=flow_run).getChild("observer")
