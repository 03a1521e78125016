"""One Lambda request's lines from CloudWatch Logs (real boto3 against moto's server)."""

from __future__ import annotations

import time
import uuid

import pytest

from flows.core.errors import RuntimeFailure
from flows.core.invocation import console_url
from flows.io.aws import aws_client
from flows.io.lambda_logs import (
    function_name_of,
    invocation_ended,
    log_group_for,
    region_of,
    request_lines,
)

ARN = "arn:aws:lambda:eu-west-1:123456789012:function:runner"


@pytest.fixture
def logs(moto_server):
    return aws_client("logs", region="us-east-1", endpoint_url=moto_server)


def _request(request_id: str, body: list[str], ended: bool = True) -> list[str]:
    lines = [f"START RequestId: {request_id} Version: $LATEST", *body]
    if ended:
        lines += [f"END RequestId: {request_id}", f"REPORT RequestId: {request_id}\tDuration: 1.00 ms"]
    return lines


def _group(logs, streams: dict[str, list[str]]) -> str:
    group = f"/aws/lambda/runner-{uuid.uuid4().hex[:8]}"
    logs.create_log_group(logGroupName=group)
    now = int(time.time() * 1000)
    for stream, lines in streams.items():
        logs.create_log_stream(logGroupName=group, logStreamName=stream)
        events = [{"timestamp": now + i, "message": line} for i, line in enumerate(lines)]
        logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=events)
    return group


def test_names_and_groups_from_a_function_name_or_arn():
    assert function_name_of(ARN) == "runner"
    assert function_name_of(f"{ARN}:live") == "runner"
    assert function_name_of("123456789012:function:runner") == "runner"
    assert function_name_of("runner:live") == "runner"
    assert log_group_for(ARN) == "/aws/lambda/runner"
    assert region_of(ARN) == "eu-west-1" and region_of("runner") is None


def test_console_link_uses_the_consoles_encoding():
    url = console_url("eu-west-1", "/aws/lambda/runner")
    assert url == (
        "https://eu-west-1.console.aws.amazon.com/cloudwatch/home?region=eu-west-1"
        "#logsV2:log-groups/log-group/$252Faws$252Flambda$252Frunner"
    )
    stream = console_url("eu-west-1", "/aws/lambda/runner", "2026/11/30/[$LATEST]abc", "req-1")
    assert stream.endswith(
        "/log-events/2026$252F11$252F30$252F$255B$2524LATEST$255Dabc$3FfilterPattern$3D$2522req-1$2522"
    )
    group_search = console_url("eu-west-1", "/aws/lambda/runner", request_id="req-1")
    assert group_search.endswith("$252Frunner/log-events$3FfilterPattern$3D$2522req-1$2522")


def test_a_requests_lines_from_its_own_stream_between_start_and_report(logs):
    group = _group(
        logs,
        {
            "2026/11/30/[$LATEST]aaa": [
                *_request("req-0", ["earlier request"]),
                *_request("req-1", ["loading flow run", "Task timed out after 600.00 seconds"]),
                *_request("req-2", ["a later request"]),
            ],
            "2026/11/30/[$LATEST]bbb": _request("req-9", ["other environment"]),
        },
    )
    log = request_lines(logs, group, "req-1")
    assert log is not None and log.ended and not log.truncated
    assert log.log_stream == "2026/11/30/[$LATEST]aaa"
    assert log.lines[0].startswith("START RequestId: req-1")
    assert log.lines[1:3] == ("loading flow run", "Task timed out after 600.00 seconds")
    assert log.lines[-1].startswith("REPORT RequestId: req-1")
    assert not [line for line in log.lines if "req-0" in line or "req-2" in line or "other" in line]
    assert invocation_ended(logs, group, "req-1")
    assert request_lines(logs, group, "req-unknown") is None


def test_only_the_last_lines_are_kept_and_their_size_is_capped(logs):
    body = [f"line {i} " + "x" * 100 for i in range(300)]
    group = _group(logs, {"s": _request("req-big", body)})
    log = request_lines(logs, group, "req-big")
    assert log is not None and log.truncated and len(log.lines) == 50
    assert log.lines[-1].startswith("REPORT RequestId: req-big")
    small = request_lines(logs, group, "req-big", max_bytes=1000)
    assert small is not None and small.truncated and sum(len(x) + 1 for x in small.lines) <= 1000


def test_a_running_request_has_not_ended(logs):
    group = _group(logs, {"s": _request("req-live", ["still working"], ended=False)})
    assert not invocation_ended(logs, group, "req-live")
    log = request_lines(logs, group, "req-live")
    assert log is not None and not log.ended and log.lines[-1] == "still working"


def test_a_group_that_cannot_be_read_says_so(logs):
    with pytest.raises(RuntimeFailure, match="/aws/lambda/missing"):
        invocation_ended(logs, "/aws/lambda/missing", "req-1")
