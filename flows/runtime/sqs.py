"""From SQS messages to one reports run: the Lambda SQS path and the long-polling consumer.

`handle_sqs_batch` is what the Lambda handler calls with an SQS batch; `consume` receives from the
queue itself (outside Lambda, and in `quest demo`) and feeds the same logic with a batch shaped
exactly like Lambda's, then deletes exactly the messages that succeeded. Failed messages stay on
the queue, become visible again after the visibility timeout, and after the queue's
maxReceiveCount the redrive policy moves them to the DLQ.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from flows.core import names
from flows.core.events import BatchPlan, parse_sqs_event, plan_batch
from flows.io.store import parse_store_url

log = logging.getLogger(__name__)

SQS_MAX_MESSAGES = 10  # SQS's limit per ReceiveMessage / DeleteMessageBatch
SQS_MAX_WAIT_SECONDS = 20


@dataclass(frozen=True)
class ReportOutcome:
    result: dict[str, Any]
    location: str


# A reports runner: (settings, population_key, reports_ts) → outcome. Default: the reports flow.
Runner = Callable[[Any, str, str], ReportOutcome]


@dataclass
class BatchOutcome:
    plan: BatchPlan
    failures: list[str] = field(default_factory=list)  # message ids, in batch order
    report: ReportOutcome | None = None
    error: str | None = None  # why the reports run failed

    def response(self) -> dict[str, Any]:
        """Lambda's partial batch response (the event source mapping needs ReportBatchItemFailures)."""
        return {"batchItemFailures": [{"itemIdentifier": i} for i in self.failures]}


def store_scope(store_url: str) -> tuple[str | None, str]:
    """(bucket, key prefix) of the store the reports read; a local store accepts any bucket."""
    parsed = parse_store_url(store_url)
    if parsed is None:
        return None, ""
    bucket, prefix = parsed
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


def run_reports_flow(
    settings: Any, population_key: str, reports_ts: str, context: Any = None
) -> ReportOutcome:
    """Run the reports on one snapshot (the flow when a Prefect API exists, else its plain entry,
    within the deadline of Lambda's `context`)."""
    from flows.runtime.plain import run_reports

    run = run_reports(settings, population_key, reports_ts, context)
    return ReportOutcome(result=run.result, location=run.location)


def process_sqs_batch(event: Mapping[str, Any], settings: Any, runner: Runner | None = None) -> BatchOutcome:
    """Parse the batch, run the reports once on the newest snapshot, and say which messages failed."""
    messages = parse_sqs_event(event)
    bucket, prefix = store_scope(settings.store)
    plan = plan_batch(messages, store_bucket=bucket, store_prefix=prefix)
    outcome = BatchOutcome(plan=plan)
    for message in messages:
        if message.error is not None:
            log.warning("message %s is not an S3 event and fails: %s", message.message_id, message.error)
    if plan.skipped:
        log.info("no work for: %s", ", ".join(f"{n} x{k}" for k, n in sorted(plan.skipped.items())))
    failed = set(plan.failed)
    if plan.snapshot is not None:
        if plan.superseded:
            log.info("batch holds %d older snapshot(s); reporting on the newest only", len(plan.superseded))
        try:
            outcome.report = (runner or run_reports_flow)(settings, plan.snapshot.key, names.timestamp())
        except Exception as exc:  # the messages are retried, then dead-lettered: never crash the batch
            log.exception("reports on %s failed", plan.snapshot.key)
            outcome.error = f"{type(exc).__name__}: {exc}"
            failed.update(plan.message_ids_of_run())
    outcome.failures = [m.message_id for m in messages if m.message_id in failed]
    return outcome


def handle_sqs_batch(event: Mapping[str, Any], settings: Any, context: Any = None) -> dict[str, Any]:
    """The Lambda SQS path: `{"batchItemFailures": [{"itemIdentifier": messageId}, ...]}`.

    Reports stopped by Lambda's deadline (`context`) fail their messages, which come back later."""
    runner = functools.partial(run_reports_flow, context=context)
    return process_sqs_batch(event, settings, runner).response()


# --------------------------------------------------------------------------- the long-polling consumer


def make_sqs_client() -> Any:
    """An SQS client whose read timeout outlasts a long poll (up to 20 s)."""
    from flows.io.aws import aws_client

    return aws_client("sqs", read_timeout=SQS_MAX_WAIT_SECONDS + 40)


def lambda_shaped_event(messages: Sequence[Mapping[str, Any]], queue_arn: str, region: str) -> dict[str, Any]:
    """ReceiveMessage output → the event Lambda's SQS event source mapping would deliver."""
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m.get("Body", ""),
                "attributes": dict(m.get("Attributes", {})),
                "messageAttributes": dict(m.get("MessageAttributes", {})),
                "md5OfBody": m.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            }
            for m in messages
        ]
    }


@dataclass
class RoundResult:
    received: int = 0
    deleted: int = 0
    failed: list[str] = field(default_factory=list)
    outcome: BatchOutcome | None = None


@dataclass
class ConsumeStats:
    rounds: int = 0
    received: int = 0
    deleted: int = 0
    failed: int = 0
    reports: list[ReportOutcome] = field(default_factory=list)


def consume_round(
    client: Any,
    queue_url: str,
    settings: Any,
    wait_seconds: int = SQS_MAX_WAIT_SECONDS,
    queue_arn: str | None = None,
    visibility_timeout: int | None = None,
    runner: Runner | None = None,
) -> RoundResult:
    """One ReceiveMessage (long poll), one batch through the handler logic, delete the successes."""
    kwargs: dict[str, Any] = {
        "QueueUrl": queue_url,
        "MaxNumberOfMessages": SQS_MAX_MESSAGES,
        "WaitTimeSeconds": max(0, min(int(wait_seconds), SQS_MAX_WAIT_SECONDS)),
        "MessageSystemAttributeNames": ["All"],
    }
    if visibility_timeout is not None:
        kwargs["VisibilityTimeout"] = visibility_timeout
    messages = client.receive_message(**kwargs).get("Messages", [])
    if not messages:
        return RoundResult()
    region = client.meta.region_name or ""
    event = lambda_shaped_event(messages, queue_arn or queue_url, region)
    outcome = process_sqs_batch(event, settings, runner)
    failed = set(outcome.failures)
    done = [m for m in messages if m["MessageId"] not in failed]
    deleted = 0
    for start in range(0, len(done), SQS_MAX_MESSAGES):
        chunk = done[start : start + SQS_MAX_MESSAGES]
        resp = client.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)],
        )
        deleted += len(resp.get("Successful", []))
        for failure in resp.get("Failed", []):
            log.warning("could not delete a handled message: %s", failure.get("Message", failure))
    return RoundResult(received=len(messages), deleted=deleted, failed=outcome.failures, outcome=outcome)


def consume(
    queue_url: str,
    once: bool = False,
    wait_seconds: int = SQS_MAX_WAIT_SECONDS,
    settings: Any = None,
    *,
    client: Any = None,
    visibility_timeout: int | None = None,
    until: Callable[[ConsumeStats], bool] | None = None,
    deadline_seconds: float | None = None,
    on_round: Callable[[RoundResult], None] | None = None,
    runner: Runner | None = None,
) -> ConsumeStats:
    """Long-poll the queue and hand each batch to the handler logic.

    `once`: one receive round. Otherwise loop until `until(stats)` is true or `deadline_seconds`
    pass (default: forever; Ctrl-C stops it).
    """
    if settings is None:
        from flows.settings import Settings

        settings = Settings()
    client = client or make_sqs_client()
    queue_arn = _queue_arn(client, queue_url)
    stats = ConsumeStats()
    started = time.monotonic()
    while True:
        result = consume_round(
            client, queue_url, settings, wait_seconds, queue_arn, visibility_timeout, runner
        )
        stats.rounds += 1
        stats.received += result.received
        stats.deleted += result.deleted
        stats.failed += len(result.failed)
        if result.outcome is not None and result.outcome.report is not None:
            stats.reports.append(result.outcome.report)
        if on_round is not None:
            on_round(result)
        if once or (until is not None and until(stats)):
            return stats
        if deadline_seconds is not None and time.monotonic() - started >= deadline_seconds:
            return stats


def _queue_arn(client: Any, queue_url: str) -> str:
    """The queue's ARN for the Lambda-shaped records; the URL stands in if it cannot be read."""
    try:
        attrs = client.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
    except client.exceptions.QueueDoesNotExist as exc:
        from flows.core.errors import QuestError

        raise QuestError(f"no SQS queue at {queue_url}") from exc
    return str(attrs.get("Attributes", {}).get("QueueArn", queue_url))
