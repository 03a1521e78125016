"""One Lambda request's lines in CloudWatch Logs, for the flow run it was invoked for (issue 11).

A Lambda function writes each request between `START RequestId: <id>` and `END RequestId: <id>`
(then `REPORT RequestId: <id> ...`), in the log stream of the execution environment that served it.
The worker uses this to:

- show on a run where its function logs (`log_group_for`; the link: `flows.core.invocation.console_url`),
- forward the last lines of a request that died without reporting (timeout, out of memory,
  killed) to the run's logs (`request_lines`), and
- tell whether an invocation has ended (`invocation_ended`) when a run is cancelled.

The Logs client is passed in (flows/io/aws.py makes it). A group that cannot be read (missing,
denied, unreachable) raises `RuntimeFailure` naming the group. CloudWatch filter patterns are used only
as one quoted term, which both CloudWatch and moto read as "the message contains this text".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flows.core.errors import RuntimeFailure

# What is forwarded of one request: its last lines, and at most this much text.
MAX_LINES = 50
MAX_BYTES = 16 * 1024
MAX_LINE_CHARS = 2000
# Pages read at most per call (FilterLogEvents scans the whole group; GetLogEvents one stream).
MAX_FILTER_PAGES = 10
MAX_STREAM_PAGES = 20


@dataclass(frozen=True)
class RequestLog:
    """The lines of one request (its last `MAX_LINES`, capped to `MAX_BYTES`) and where they are."""

    log_group: str
    log_stream: str
    lines: tuple[str, ...]
    ended: bool  # its END or REPORT line was seen
    truncated: bool  # earlier lines were left out


def function_name_of(function: str) -> str:
    """`arn:aws:lambda:<region>:<account>:function:<name>[:<qualifier>]` or a name -> the name."""
    text = function.strip()
    if text.startswith("arn:"):
        parts = text.split(":")
        if len(parts) >= 7 and parts[5] == "function":
            return parts[6]
    # `<account>:function:<name>` partial ARNs, and `name:qualifier`.
    if ":function:" in text:
        return text.split(":function:", 1)[1].split(":", 1)[0]
    return text.split(":", 1)[0]


def region_of(function: str) -> str | None:
    """The region in a function ARN, else None."""
    parts = function.strip().split(":")
    return parts[3] or None if len(parts) >= 7 and parts[0] == "arn" else None


def log_group_for(function: str) -> str:
    """Lambda's default log group of a function: `/aws/lambda/<function name>`."""
    return f"/aws/lambda/{function_name_of(function)}"


START_PREFIX = "START RequestId: "


def start_line(request_id: str) -> str:
    return f"START RequestId: {request_id}"


def end_line(request_id: str) -> str:
    return f"END RequestId: {request_id}"


def report_line(request_id: str) -> str:
    return f"REPORT RequestId: {request_id}"


def invocation_ended(client: Any, log_group: str, request_id: str, since_ms: int | None = None) -> bool:
    """True when the request's `END RequestId: <id>` line is in the group (it ran and returned,
    failed, timed out or was killed: Lambda writes END in every case). Raises RuntimeFailure."""
    return _first_event(client, log_group, end_line(request_id), since_ms) is not None


def request_lines(
    client: Any,
    log_group: str,
    request_id: str,
    since_ms: int | None = None,
    max_lines: int = MAX_LINES,
    max_bytes: int = MAX_BYTES,
) -> RequestLog | None:
    """The request's lines (START to END/REPORT), or None when its START line is not in the group.

    Raises RuntimeFailure when the group cannot be read.
    """
    start = _first_event(client, log_group, start_line(request_id), since_ms)
    if start is None:
        return None
    stream = str(start.get("logStreamName") or "")
    if not stream:
        return None
    lines: list[str] = []
    dropped = started = ended = done = False
    token: str | None = None
    for _ in range(MAX_STREAM_PAGES):
        kwargs: dict[str, Any] = {"logGroupName": log_group, "logStreamName": stream, "startFromHead": True}
        if token:
            kwargs["nextToken"] = token
        else:
            kwargs["startTime"] = int(start.get("timestamp") or 0)
        page = _call(client.get_log_events, log_group, **kwargs)
        events = page.get("events") or []
        for event in events:
            message = str(event.get("message") or "").rstrip("\n")
            if not started:
                # Another request's last lines may share the START's millisecond in this stream.
                started = message.startswith(start_line(request_id))
                if not started:
                    continue
            elif message.startswith(START_PREFIX):
                ended = done = True  # the environment's next request: this one is over
                break
            lines.append(message[:MAX_LINE_CHARS])
            if len(lines) > max_lines:
                del lines[0]
                dropped = True
            ended = ended or message.startswith(end_line(request_id))
            if message.startswith(report_line(request_id)):
                ended = done = True
                break
        next_token = page.get("nextForwardToken")
        if done or not events or not next_token or next_token == token:
            break
        token = next_token
    kept, clipped = _cap_bytes(lines, max_bytes)
    return RequestLog(log_group, stream, tuple(kept), ended, dropped or clipped)


def _cap_bytes(lines: list[str], max_bytes: int) -> tuple[list[str], bool]:
    """The last lines whose UTF-8 size fits `max_bytes`."""
    kept: list[str] = []
    size = 0
    for line in reversed(lines):
        size += len(line.encode()) + 1
        if size > max_bytes:
            return kept[::-1], True
        kept.append(line)
    return kept[::-1], False


def _first_event(client: Any, log_group: str, text: str, since_ms: int | None) -> dict[str, Any] | None:
    kwargs: dict[str, Any] = {"logGroupName": log_group, "filterPattern": f'"{text}"'}
    if since_ms is not None:
        kwargs["startTime"] = max(int(since_ms), 0)
    for _ in range(MAX_FILTER_PAGES):
        page = _call(client.filter_log_events, log_group, **kwargs)
        for event in page.get("events") or []:
            if text in str(event.get("message") or ""):
                return dict(event)
        token = page.get("nextToken")
        if not token:
            return None
        kwargs["nextToken"] = token
    return None


def _call(method: Any, log_group: str, **kwargs: Any) -> dict[str, Any]:
    try:
        result: dict[str, Any] = method(**kwargs)
    except Exception as exc:  # botocore ClientError (not found, denied), endpoint or credential errors
        raise RuntimeFailure(f"could not read log group {log_group}: {type(exc).__name__}: {exc}") from exc
    return result
