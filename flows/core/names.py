"""Names shared by the flows and the Pulumi program.

The S3 notification filter, the IAM prefixes and the keys the flows write must agree; they are
defined once here and imported by both sides so that a prefix changed in one place cannot drift.
This module has no dependencies and does no I/O.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

PROJECT = "quest"

# Store layout (keys relative to the store root, which may itself carry a prefix).
BLS_PREFIX = "bls/"
POPULATION_PREFIX = "population/"
POPULATION_SUFFIX = ".json"
REPORTS_PREFIX = "reports/"
DATA_PREFIXES: tuple[str, ...] = (BLS_PREFIX, POPULATION_PREFIX, REPORTS_PREFIX)

# The BLS file the reports read.
REPORT_SURVEY = "pr"
REPORT_BLS_FILE = "pr.data.0.Current"

# S3 → SQS notification: only population snapshots wake the reports flow.
NOTIFICATION_EVENTS: tuple[str, ...] = ("s3:ObjectCreated:*",)

# The notification queue's dead-letter queue: receives before a message moves there, and how
# long it keeps them (the SQS maximum, 14 days) so a failure can still be inspected and redriven.
DLQ_MAX_RECEIVE_COUNT_DEFAULT = 5
DLQ_RETENTION_SECONDS = 14 * 24 * 3600

# Timestamps in keys: sortable, UTC, no characters that need URL-encoding.
TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"

# Environment variable names (settings use the QUEST_ prefix; Prefect and AWS keep their own).
ENV_PREFIX = "QUEST_"
ENV_STORE = "QUEST_STORE"
ENV_BLS_BASE_URL = "QUEST_BLS_BASE_URL"
ENV_BLS_SURVEYS = "QUEST_BLS_SURVEYS"
ENV_POPULATION_URL = "QUEST_POPULATION_URL"
ENV_CONTACT = "QUEST_CONTACT"
ENV_BLS_MAX_CONCURRENT_REQUESTS = "QUEST_BLS_MAX_CONCURRENT_REQUESTS"
ENV_BLS_REQUESTS_PER_SECOND = "QUEST_BLS_REQUESTS_PER_SECOND"
ENV_PREFECT_API_KEY_SECRET_ARN = "QUEST_PREFECT_API_KEY_SECRET_ARN"

# The Lambda function: its handler (event shape picks the path) and Prefect's writable home there
# (the code directory is read-only).
LAMBDA_HANDLER = "flows.runtime.handler.handler"
LAMBDA_PREFECT_HOME = "/tmp/prefect"

# The Lambda work pool's worker type (see flows/worker.py).
WORKER_TYPE = "aws-lambda"

# How the pool survives Lambda (issue 11); the stack, the function and the worker share these.
# - Async invokes are not retried by Lambda: a crashed invocation's run is RUNNING, so a retry
#   would only be refused by Prefect; the failure goes straight to the on-failure destination and
#   is reconciled as CRASHED (Prefect's own flow retries decide about a re-run).
INVOKE_MAX_RETRY_ATTEMPTS = 0
# - An invocation Lambda could not start within an hour (throttled) is dropped to the destination
#   (`EventAgeExceeded`) and reconciled, instead of a daily run starting silently hours late.
INVOKE_MAX_EVENT_AGE_SECONDS = 3600
# The on-failure destination's queue, read by the poll path and the long-running worker.
ENV_INVOKE_FAILURE_QUEUE_URL = "QUEST_INVOKE_FAILURE_QUEUE_URL"
# The function's configured timeout, so a run's final message can name the limit.
ENV_FUNCTION_TIMEOUT_SECONDS = "QUEST_FUNCTION_TIMEOUT_SECONDS"
# Time kept back before Lambda's deadline to end the run with a true final state and flush logs.
DEADLINE_MARGIN_SECONDS = 15
# How often the function checks whether its run was cancelled.
CANCEL_CHECK_SECONDS = 5
# Flow-run heartbeats in the function (Prefect's minimum is 30 s) and the automation that crashes
# a run whose heartbeats stopped (a killed invocation): silence for three beats and a half.
HEARTBEAT_FREQUENCY_SECONDS = 30
ZOMBIE_AFTER_SECONDS = 105
# The tag on every flow run the function executes (and its subflows): the zombie automation
# watches only runs with it, so runs elsewhere (Prefect's default heartbeat is 180 s) are never
# crashed by it.
LAMBDA_RUN_TAG = "quest-in-lambda"

# `QUEST_BLS_SURVEYS=all`: every survey folder the `time.series/` root listing shows (issue 12).
ALL_SURVEYS = "all"
# Prefect global concurrency limits keeping every invocation together polite to BLS: at most N
# requests in flight, at most R started per second (the pacer: `flows.core.pacing`).
BLS_CONCURRENCY_LIMIT = "quest-bls-requests"
BLS_RATE_LIMIT = "quest-bls-rate"
BLS_MAX_CONCURRENT_REQUESTS_DEFAULT = 4
BLS_REQUESTS_PER_SECOND_DEFAULT = 2.0
# The deployment each survey's mirror runs as on the work pool (prefect.yaml: flow/deployment).
MIRROR_DEPLOYMENT = "mirror-survey/mirror-survey"
# A survey mirror in Lambda stops starting transfers when less than this is left of its time
# (Lambda's limit less DEADLINE_MARGIN_SECONDS), and continues in a follow-up run.
CONTINUATION_MARGIN_SECONDS = 30
# The tag of an ingest run that continues the survey checks of the day's first ingest run (the
# first one decides the population snapshot).
INGEST_CONTINUATION_TAG = "ingest-continuation"


def timestamp(now: datetime | None = None) -> str:
    """UTC timestamp as used in `population/<ts>.json` and `reports/<ts>/`."""
    now = now or datetime.now(UTC)
    return now.astimezone(UTC).strftime(TIMESTAMP_FORMAT)


def bls_key(survey: str, file_name: str) -> str:
    return f"{BLS_PREFIX}{survey}/{file_name}"


def bls_survey_prefix(survey: str) -> str:
    return f"{BLS_PREFIX}{survey}/"


def population_key(ts: str) -> str:
    return f"{POPULATION_PREFIX}{ts}{POPULATION_SUFFIX}"


def reports_prefix(ts: str) -> str:
    return f"{REPORTS_PREFIX}{ts}/"


_SNAPSHOT_KEY = re.compile(
    re.escape(POPULATION_PREFIX) + r"([0-9]{8}T[0-9]{6}Z)" + re.escape(POPULATION_SUFFIX)
)


def parse_population_key(key: str) -> str | None:
    """The UTC timestamp of a snapshot key `population/<YYYYMMDDTHHMMSSZ>.json`, else None.

    Snapshots are chosen by this timestamp, so anything else under population/ (a note, a copy,
    `latest.json`, an impossible date like 20251399T000000Z) must not count as a snapshot.
    """
    match = _SNAPSHOT_KEY.fullmatch(key) if isinstance(key, str) else None
    if match is None:
        return None
    try:
        datetime.strptime(match[1], TIMESTAMP_FORMAT)
    except ValueError:
        return None
    return match[1]


def is_population_key(key: str) -> bool:
    """True for keys the S3 notification filter admits (same prefix/suffix as the Pulumi program)."""
    return key.startswith(POPULATION_PREFIX) and key.endswith(POPULATION_SUFFIX)
