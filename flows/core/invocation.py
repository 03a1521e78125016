"""One Lambda invocation running one flow run: the rules, without Prefect or AWS (issue 11).

- Where its logs are: the CloudWatch console link for the invocation's log group and stream.
- Its time budget: the flow's timeout ends `margin` seconds before Lambda's deadline, never later
  than a timeout the flow already has; too little time left means the run does not start.
- Whether it may start the run at all: async invocations are delivered at least once, so only
  the invocation the worker invoked (or one the worker has not recorded yet) starts a run that
  has not started.
- The messages a run's final state carries when Lambda's limit or a cancel ended it.

This module has no dependencies and does no I/O.
"""

from __future__ import annotations

import math
from urllib.parse import quote

# Less than this left for the flow itself (after the margin) and the run is not started.
MIN_RUN_SECONDS = 1.0

# The run states an invocation may start from (Prefect's state type values).
STARTABLE_STATES = ("SCHEDULED", "PENDING")


def console_escape(name: str) -> str:
    """A log group or stream name as the CloudWatch console writes it in its URL fragment.

    The console percent-encodes the name twice and writes the outer `%` as `$`: `/` → `$252F`,
    `[` → `$255B`, `]` → `$255D`, `$` → `$2524`.
    """
    return quote(quote(name, safe=""), safe="").replace("%", "$")


def console_url(
    region: str, log_group: str, log_stream: str | None = None, request_id: str | None = None
) -> str:
    """The CloudWatch console page of a log group, or of one stream; with `request_id`, its events
    filtered to that request (in the stream, or searched across the group's streams)."""
    url = (
        f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}"
        f"#logsV2:log-groups/log-group/{console_escape(log_group)}"
    )
    if log_stream:
        url += f"/log-events/{console_escape(log_stream)}"
    elif request_id:
        url += "/log-events"  # "search all log streams"
    if request_id:
        url += "$3FfilterPattern$3D" + console_escape(f'"{request_id}"')
    return url


def where_the_logs_are(request_id: str, group: str, stream: str, region: str | None) -> str:
    """The line a run's page shows at start: which invocation runs it and where its logs are."""
    line = f"running in Lambda request {request_id}; function logs: log group {group}, stream {stream}"
    if region and group and stream:
        line += f" ({console_url(region, group, stream)})"
    return line


def limit_seconds(configured: str | None, remaining_at_start: float) -> int:
    """The function's time limit to name in messages: its configured timeout when the stack set
    it (QUEST_FUNCTION_TIMEOUT_SECONDS), else the time left at start, rounded up."""
    try:
        value = int(str(configured).strip()) if configured is not None else 0
    except ValueError:
        value = 0
    return value if value > 0 else max(1, math.ceil(remaining_at_start))


def run_timeout(remaining: float, margin: float, flow_timeout: float | None) -> float | None:
    """Seconds the flow may run: `margin` before Lambda's deadline, or the flow's own timeout when
    that is shorter. None when less than `MIN_RUN_SECONDS` is left (do not start)."""
    budget = remaining - margin
    if budget < MIN_RUN_SECONDS:
        return None
    if flow_timeout is not None and 0 < flow_timeout <= budget:
        return flow_timeout
    return budget


def limit_message(limit: int, request_id: str, margin: float) -> str:
    """A run that Lambda's time limit stopped: its CRASHED state's message."""
    return (
        f"Lambda time limit {limit} s reached (request {request_id}): stopped {margin:g} s "
        "before Lambda would have killed the invocation"
    )


def too_late_message(
    limit: int, request_id: str, remaining: float, margin: float, what: str = "the flow"
) -> str:
    """A run (`what`) that was not started because the invocation had too little time left."""
    return (
        f"Lambda time limit {limit} s: request {request_id} had {remaining:.1f} s left, less than the "
        f"{margin:g} s margin plus {MIN_RUN_SECONDS:g} s to run; {what} was not started"
    )


def cancelled_message(request_id: str | None) -> str:
    """A run cancelled while its invocation was running it."""
    where = f"Lambda request {request_id}" if request_id else "this Lambda invocation"
    return f"Flow run was cancelled while running in {where}."


def cancelled_before_start_message(request_id: str | None) -> str:
    """A run cancelled before the invocation delivered for it started it."""
    where = f"Lambda request {request_id}" if request_id else "this Lambda invocation"
    return f"Flow run was cancelled before {where} started it."


def start_refusal(
    state_type: str | None, infrastructure_pid: str | None, request_id: str | None
) -> str | None:
    """Why this invocation must not start the run (None when it may).

    Lambda delivers an async invocation at least once: a second delivery (same request id) finds
    the run already running or finished, and an invocation the worker did not record as the run's
    infrastructure (another request id) is not the run's. Without a request id (a local caller),
    only the state counts.
    """
    if state_type not in STARTABLE_STATES:
        return f"the run is {state_type or 'without a state'}, not {' or '.join(STARTABLE_STATES)}"
    if request_id and infrastructure_pid and infrastructure_pid != request_id:
        return f"the run belongs to Lambda request {infrastructure_pid}, not {request_id}"
    return None
