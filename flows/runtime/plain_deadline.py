"""Lambda's deadline for the entries without a Prefect API (flows/runtime/plain.py).

The flow-run path ends a run DEADLINE_MARGIN_SECONDS before Lambda's deadline and names the limit
(flows/runtime/flow_run.py). The plain entries (a stack without `prefectApiUrl`: the scheduled
ingest and the SQS reports) follow the same rule here, with the same pieces:

- The deadline is read only from what Lambda gives: its context's `get_remaining_time_in_millis()`
  (Lambda sets no environment variable for it). The limit a message names is the stack's
  QUEST_FUNCTION_TIMEOUT_SECONDS, else the time left at start (`flows.core.invocation`).
- Too little time left: nothing starts, one `LambdaTimeLimitReached`.
- Otherwise the work runs under the flow-run path's SIGALRM (`deadline_alarm`), which interrupts
  a blocked read in the main thread (where Lambda's runtime client calls the handler) when the
  budget is spent. The mirror's `abort_on_exit` then aborts every transfer in flight, and the
  store aborts their writes (temp files, multipart uploads): nothing half-written is published.
  The interrupt leaves here as one `LambdaTimeLimitReached` naming the limit, before Lambda would
  kill the process (a kill gives no message and, for an async event, counts as a failed attempt).
- `check_time` is how a step asks before starting (a survey, a transfer, the snapshot, the
  reports' writes): no new work starts once the budget is spent. It is also the whole rule where
  SIGALRM is not ours (a handler called outside the main thread).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flows.budget import Budget, current_budget, run_budget
from flows.core.errors import LambdaTimeLimitReached
from flows.core.invocation import limit_message, run_timeout, too_late_message
from flows.core.names import DEADLINE_MARGIN_SECONDS
from flows.runtime.watch import Invocation, LambdaTimeLimit, deadline_alarm

log = logging.getLogger(__name__)


@contextmanager
def lambda_deadline(
    context: Any, what: str, margin_seconds: float = DEADLINE_MARGIN_SECONDS
) -> Iterator[Budget | None]:
    """Run the block within Lambda's deadline less `margin_seconds`; yields its budget (None
    without a Lambda context: a local caller has no deadline).

    Raises `LambdaTimeLimitReached` (a QuestError: the SQS path fails the batch's messages, the
    scheduled path fails the invocation) when the time is spent or too short to start.
    """
    invocation = Invocation.from_context(context)
    remaining = invocation.remaining()
    if remaining is None:
        yield None
        return
    limit, request = invocation.limit or 0, invocation.request_id or "?"
    seconds = run_timeout(remaining, margin_seconds, None)
    if seconds is None:
        late = (
            f"{what}: {too_late_message(limit, request, remaining, margin_seconds, what=f'the {what} run')}"
        )
        log.error(late)
        raise LambdaTimeLimitReached(late)
    message = f"{what}: {limit_message(limit, request, margin_seconds)}; nothing half-written was published"
    try:
        with run_budget(seconds) as budget, deadline_alarm(seconds, message) as armed:
            if not armed:
                log.warning("%s: not in the main thread, so only new steps stop at the deadline", what)
            yield budget
    except LambdaTimeLimit:
        log.error(message)
        raise LambdaTimeLimitReached(message) from None


def check_time(budget: Budget | None = None) -> None:
    """Refuse to start a step once the budget (this context's, or `budget` for a worker thread,
    which does not inherit it) is spent; `lambda_deadline` turns this into its one error."""
    budget = budget if budget is not None else current_budget()
    if budget is not None and budget.remaining() <= 0:
        raise LambdaTimeLimit("the invocation's time budget is spent")
