"""Lambda's on-failure destination records, read as data (issue 11): pure parsing, no I/O.

Lambda sends one record per asynchronous invocation it gave up on to the function's on-failure
destination (an SQS queue; documented shape):

    {"version": "1.0", "timestamp": "...",
     "requestContext": {"requestId", "functionArn", "condition", "approximateInvokeCount"},
     "requestPayload": <the event>,
     "responseContext": {"statusCode", "executedVersion", "functionError"},
     "responsePayload": {"errorType", "errorMessage"}}

`condition` is `RetriesExhausted` (the invocation ran and failed: an unhandled error, a timeout, an
out-of-memory or killed runtime) or `EventAgeExceeded` (Lambda never ran it within the maximum
event age, e.g. throttled for an hour); the latter has no response parts. The worker
(flows/reconcile.py) turns a record of a flow run into that run's CRASHED state with `reason()`.

`parse_invoke_failure` never raises: anything that is not such a record is an `Unreadable` with
the reason, so one bad message cannot stop the queue being drained.

A record is only believed of the function it names: `not_our_function` compares its
`requestContext.functionArn` with the pool's function (a name, a partial or a full ARN, each
possibly qualified by a version or alias), so a record of another function, region, account or
qualifier that reached our queue never changes one of our runs.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Literal
from uuid import UUID

RETRIES_EXHAUSTED = "RetriesExhausted"
EVENT_AGE_EXCEEDED = "EventAgeExceeded"

# What a state message may carry of Lambda's error text (it can hold a whole traceback).
MAX_ERROR_MESSAGE_CHARS = 500
# Records bigger than this are not parsed (Lambda's own limit for a record is 256 KB).
MAX_RECORD_CHARS = 512 * 1024

PayloadKind = Literal["flow_run", "poll", "other"]

# Lambda's names: a function name, and a version or alias qualifier ($LATEST when unqualified).
_FUNCTION_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_QUALIFIER = re.compile(r"[A-Za-z0-9$_-]{1,128}")
LATEST = "$LATEST"

# "RequestId: <id> Error: Task timed out after 600.00 seconds" -> the part after "Error: ".
_REQUEST_ID_PREFIX = re.compile(r"^\s*RequestId:\s*\S+\s+Error:\s*")


@dataclass(frozen=True)
class InvokeFailure:
    """One failed asynchronous invocation, as Lambda reported it."""

    request_id: str
    condition: str
    payload_kind: PayloadKind
    flow_run_id: str | None = None  # the run the invocation was for (a canonical UUID string)
    function_arn: str | None = None
    attempts: int | None = None  # requestContext.approximateInvokeCount
    status_code: int | None = None
    function_error: str | None = None  # responseContext.functionError ("Unhandled", ...)
    error_type: str | None = None  # responsePayload.errorType ("Sandbox.Timedout", ...)
    error_message: str | None = None  # responsePayload.errorMessage, without the RequestId prefix
    timestamp: str | None = None

    def reason(self) -> str:
        """One line for the run's CRASHED state: what happened, Lambda's words, the condition."""
        return failure_reason(self)


@dataclass(frozen=True)
class Unreadable:
    """A message that is not an on-failure destination record; `why` says what is wrong."""

    why: str


def parse_invoke_failure(body: str | bytes | None) -> InvokeFailure | Unreadable:
    """Read one SQS message body; never raises."""
    if body is None:
        return Unreadable("empty message body")
    if isinstance(body, bytes | bytearray):
        try:
            body = bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            return Unreadable("message body is not UTF-8")
    if not isinstance(body, str):
        return Unreadable(f"message body is a {type(body).__name__}, not text")
    if len(body) > MAX_RECORD_CHARS:
        return Unreadable(f"message body is {len(body)} characters, over {MAX_RECORD_CHARS}")
    try:
        record = json.loads(body)
    except (ValueError, RecursionError):
        return Unreadable("message body is not JSON")
    return parse_record(record)


def parse_record(record: object) -> InvokeFailure | Unreadable:
    """Read one decoded record; never raises."""
    if not isinstance(record, dict):
        return Unreadable(f"record is a JSON {_json_kind(record)}, not an object")
    context = record.get("requestContext")
    if not isinstance(context, dict):
        return Unreadable("record has no requestContext object: not a Lambda destination record")
    request_id = context.get("requestId")
    if not isinstance(request_id, str) or not request_id.strip():
        return Unreadable("record's requestContext has no requestId")
    condition = context.get("condition")
    if not isinstance(condition, str) or not condition.strip():
        return Unreadable("record's requestContext has no condition")
    response_context = record.get("responseContext")
    response_context = response_context if isinstance(response_context, dict) else {}
    response = record.get("responsePayload")
    kind, flow_run_id = payload_kind(record.get("requestPayload"))
    error_type, error_message = _error(response)
    return InvokeFailure(
        request_id=request_id.strip(),
        condition=condition.strip(),
        payload_kind=kind,
        flow_run_id=flow_run_id,
        function_arn=_text(context.get("functionArn")),
        attempts=_count(context.get("approximateInvokeCount")),
        status_code=_count(response_context.get("statusCode")),
        function_error=_text(response_context.get("functionError")),
        error_type=error_type,
        error_message=error_message,
        timestamp=_text(record.get("timestamp")),
    )


def payload_kind(payload: object) -> tuple[PayloadKind, str | None]:
    """What the failed invocation was for: a flow run (with its id), the pool poll, or other."""
    if isinstance(payload, str):  # a payload Lambda could not re-read as JSON stays a string
        try:
            payload = json.loads(payload)
        except (ValueError, RecursionError):
            return "other", None
    if not isinstance(payload, dict):
        return "other", None
    if "flow_run_id" in payload:
        flow_run_id = _uuid(payload.get("flow_run_id"))
        return ("flow_run", flow_run_id) if flow_run_id else ("other", None)
    if "poll_work_pool" in payload:
        return "poll", None
    return "other", None


def failure_reason(failure: InvokeFailure) -> str:
    """`Lambda request <id> ended without reporting: <Lambda's words> (<type>; <condition>)`."""
    if failure.condition == EVENT_AGE_EXCEEDED:
        what = (
            f"Lambda request {failure.request_id} was never run: Lambda dropped the event at its "
            "maximum event age (the function was throttled or unavailable all that time)"
        )
    else:
        detail = failure.error_message or failure.function_error or "no error reported"
        what = f"Lambda request {failure.request_id} ended without reporting: {detail}"
    notes = [n for n in (failure.error_type, _condition_note(failure)) if n]
    return f"{what} ({'; '.join(notes)})"


def _condition_note(failure: InvokeFailure) -> str:
    attempts = ""
    if failure.attempts is not None:
        attempts = f" after {failure.attempts} attempt{'' if failure.attempts == 1 else 's'}"
    if failure.condition == RETRIES_EXHAUSTED:
        return f"retries exhausted{attempts}"
    if failure.condition == EVENT_AGE_EXCEEDED:
        return f"event age exceeded{attempts}"
    return f"{failure.condition}{attempts}"


def _error(response: object) -> tuple[str | None, str | None]:
    if isinstance(response, str):  # a non-JSON response payload
        return None, _clip(_one_line(response))
    if not isinstance(response, dict):
        return None, None
    message = _text(response.get("errorMessage"))
    if message is not None:
        message = _clip(_one_line(_REQUEST_ID_PREFIX.sub("", message)))
    return _text(response.get("errorType")), message or None


def _text(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    text = _one_line(value)
    return _clip(text) if text else None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _clip(text: str) -> str:
    return text if len(text) <= MAX_ERROR_MESSAGE_CHARS else text[: MAX_ERROR_MESSAGE_CHARS - 1] + "…"


def _count(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def _uuid(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return str(UUID(value))
    except ValueError:
        return None


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "number", float: "number", str: "string", list: "array"}.get(
        type(value), type(value).__name__
    )


@dataclass(frozen=True)
class FunctionRef:
    """A Lambda function as a name, partial ARN or ARN gives it; None parts were not given."""

    name: str
    qualifier: str  # $LATEST when unqualified
    partition: str | None = None
    region: str | None = None
    account: str | None = None


def function_ref(text: object) -> FunctionRef | None:
    """`name[:qualifier]`, `account:function:name[:qualifier]` or
    `arn:partition:lambda:region:account:function:name[:qualifier]`; None for anything else."""
    if not isinstance(text, str):
        return None
    parts = text.strip().split(":")
    partition = region = account = None
    if parts[0] == "arn":
        if len(parts) not in (7, 8) or parts[2] != "lambda" or parts[5] != "function":
            return None
        partition, region, account = parts[1], parts[3], parts[4]
        if not (partition and region and account):
            return None
        rest = parts[6:]
    elif len(parts) in (3, 4) and parts[1] == "function":
        account, rest = parts[0], parts[2:]
    elif len(parts) in (1, 2):
        rest = parts
    else:
        return None
    name, qualifier = rest[0], rest[1] if len(rest) == 2 else LATEST
    if not _FUNCTION_NAME.fullmatch(name) or not _QUALIFIER.fullmatch(qualifier):
        return None
    if account is not None and not (account.isdigit() and len(account) == 12):
        return None
    return FunctionRef(name, qualifier, partition, region, account)


def not_our_function(
    record_arn: str | None, pool_function: str, pool_region: str | None = None
) -> str | None:
    """Why a record's functionArn is not the pool's function (None: it is).

    Name and qualifier must be equal (an unqualified function is $LATEST, as Lambda reports it);
    partition, region and account wherever the pool's function (or its region setting) names them.
    """
    ours = function_ref(pool_function)
    if ours is None:
        return f"the pool's function {pool_function!r} is not a Lambda function name or ARN"
    theirs = function_ref(record_arn)
    if theirs is None:
        return "the record names no Lambda function ARN" if not record_arn else "its functionArn is not one"
    region = ours.region or pool_region or None
    for part, mine, its in (
        ("function", ours.name, theirs.name),
        ("version or alias", ours.qualifier, theirs.qualifier),
        ("partition", ours.partition, theirs.partition),
        ("region", region, theirs.region),
        ("account", ours.account, theirs.account),
    ):
        if mine is not None and mine != its:
            return f"it is of another {part} ({_clip(_one_line(str(its)))}, the pool's is {mine})"
    return None
