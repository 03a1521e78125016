"""The Lambda stand-in itself (tests/lambda_emulator.py): it must fail the way Lambda fails.

The work pool is tested against the stand-in, so what it does when an invocation outlives its
timeout, runs out of memory, is killed, is throttled, or fails asynchronously (retries, the
on-failure destination, the maximum event age, duplicate delivery) and how it logs must match
Lambda. A small probe handler (written into the task root) does what each test asks; SQS and
CloudWatch Logs are moto's server on loopback, read with real boto3 calls.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

import pytest
from lambda_emulator import RESERVED_CONCURRENCY_REASON, Invocation, LambdaEmulator

# The probe: prints its request id (so each run is visible in the logs), then does what it is told.
PROBE = """
import os, subprocess, sys, time

def handler(event, context):
    action = event.get("action", "echo")
    print(f"probe {action} {context.aws_request_id}", flush=True)
    if action == "sleep":
        child = subprocess.Popen(["sleep", "60"])  # a child of the handler: killed with it
        print(f"child pid {child.pid}", flush=True)
        time.sleep(event["seconds"])
    elif action == "hog":
        hoard = []
        while True:
            hoard.append(b"x" * (8 << 20))  # written, so resident
            time.sleep(0.01)
    elif action == "fail":
        raise ValueError(event.get("message", "boom"))
    elif action == "context":
        return {
            "aws_request_id": context.aws_request_id,
            "function_name": context.function_name,
            "invoked_function_arn": context.invoked_function_arn,
            "memory_limit_in_mb": context.memory_limit_in_mb,
            "log_group_name": context.log_group_name,
            "log_stream_name": context.log_stream_name,
            "remaining_ms": context.get_remaining_time_in_millis(),
        }
    return {"echo": event}
"""

HANDLER = "probe.handler"
FAST_RETRIES = (0.2, 0.3)  # instead of Lambda's ~1 and ~2 minutes


@pytest.fixture(scope="module")
def clients(moto_server: str) -> dict[str, Any]:
    import boto3

    def client(service: str) -> Any:
        return boto3.client(service, endpoint_url=moto_server, region_name="us-east-1")

    return {"sqs": client("sqs"), "logs": client("logs")}


@pytest.fixture(scope="module")
def lam(clients: dict[str, Any], moto_server: str):
    with LambdaEmulator(
        code_paths=(),
        extra_files={"probe.py": PROBE},
        sqs=clients["sqs"],
        cloudwatch_logs=moto_server,  # an endpoint URL works as well as a client
        retry_delays=FAST_RETRIES,
        throttle_retry_seconds=0.2,
    ) as emulator:
        yield emulator


def _lambda(lam: LambdaEmulator) -> Any:
    """A Lambda client that does not retry (botocore would retry a 429 on its own)."""
    import boto3
    from botocore.config import Config

    config = Config(retries={"total_max_attempts": 1}, read_timeout=30)
    return boto3.client("lambda", endpoint_url=lam.endpoint_url, region_name="us-east-1", config=config)


def _function(lam: LambdaEmulator, **options: Any) -> str:
    name = f"probe-{uuid.uuid4().hex[:8]}"
    lam.add_function(name, handler=HANDLER, **options)
    return name


def _queue(clients: dict[str, Any]) -> str:
    return clients["sqs"].create_queue(QueueName=f"failures-{uuid.uuid4().hex[:8]}")["QueueUrl"]


def _records(clients: dict[str, Any], queue_url: str) -> list[dict[str, Any]]:
    messages = clients["sqs"].receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(m["Body"]) for m in messages]


def _invoke(lam: LambdaEmulator, function: str, event: dict[str, Any], kind: str = "RequestResponse") -> Any:
    return _lambda(lam).invoke(FunctionName=function, InvocationType=kind, Payload=json.dumps(event).encode())


def _event(lam: LambdaEmulator, function: str, event: dict[str, Any]) -> str:
    """An async invoke; its request id."""
    response = _invoke(lam, function, event, "Event")
    assert response["StatusCode"] == 202
    return response["ResponseMetadata"]["RequestId"]


def _only(lam: LambdaEmulator, request_id: str, timeout: float = 30) -> Invocation:
    (call,) = lam.calls(request_id)
    assert call.done.wait(timeout), f"{request_id} still pending"
    return call


def _attempt_seconds(lam: LambdaEmulator, request_id: str) -> float:
    """How long the (single) attempt of a request ran, from process start to its end."""
    return _only(lam, request_id).attempts[0].seconds


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


# --------------------------------------------------------------------------- limits


def test_timeout_kills_the_process_group_and_answers_like_lambda(lam, clients):
    function = _function(lam, timeout_seconds=2)
    started = time.monotonic()
    response = _invoke(lam, function, {"action": "sleep", "seconds": 30})
    elapsed = time.monotonic() - started
    body = json.loads(response["Payload"].read())
    request_id = response["ResponseMetadata"]["RequestId"]

    assert 2 <= _attempt_seconds(lam, request_id) < 3, "killed within a second of the timeout"
    assert elapsed < 4
    assert response["StatusCode"] == 200 and response["FunctionError"] == "Unhandled"
    assert body == {
        "errorType": "Sandbox.Timedout",
        "errorMessage": f"RequestId: {request_id} Error: Task timed out after 2.00 seconds",
    }
    call = _only(lam, request_id)
    assert call.outcome == "timeout" and call.attempts[0].outcome == "timeout"
    child = int(re.search(r"child pid (\d+)", call.logs).group(1))
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child), "the handler's own child dies with the environment"
    # The log stream ends with Lambda's timeout line.
    events = _log_events(clients, function, request_id)
    assert events[-1].endswith(f"{request_id} Task timed out after 2.00 seconds")
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ", events[-1])


def test_async_timeout_is_retried_then_sent_to_the_failure_destination(lam, clients):
    queue = _queue(clients)
    function = _function(lam, timeout_seconds=1, on_failure_queue_url=queue)  # 2 retries, Lambda's default
    event = {"action": "sleep", "seconds": 30, "flow_run_id": "r-1"}
    request_id = _event(lam, function, event)
    call = _only(lam, request_id)

    assert [a.outcome for a in call.attempts] == ["timeout"] * 3 and call.retries == 2
    assert all(1 <= a.seconds < 2 for a in call.attempts)
    # Every attempt ran the same event under the same request id.
    assert call.logs.count(f"probe sleep {request_id}") == 3
    gaps = [b.started_at - a.ended_at for a, b in zip(call.attempts, call.attempts[1:], strict=False)]
    assert gaps[0] >= FAST_RETRIES[0] and gaps[1] >= FAST_RETRIES[1]
    (record,) = _records(clients, queue)
    assert call.destination_sent and call.destination_condition == "RetriesExhausted"
    assert record == call.destination_record
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record.pop("timestamp"))
    assert record == {
        "version": "1.0",
        "requestContext": {
            "requestId": request_id,
            "functionArn": f"{lam.function_arn(function)}:$LATEST",
            "condition": "RetriesExhausted",
            "approximateInvokeCount": 3,
        },
        "requestPayload": event,
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "responsePayload": {
            "errorType": "Sandbox.Timedout",
            "errorMessage": f"RequestId: {request_id} Error: Task timed out after 1.00 seconds",
        },
    }


def test_handler_error_is_retried_and_a_success_sends_nothing(lam, clients):
    queue = _queue(clients)
    function = _function(lam, maximum_retry_attempts=1, on_failure_queue_url=queue)
    failed = _only(lam, _event(lam, function, {"action": "fail", "message": "bad data"}))
    ok = _only(lam, _event(lam, function, {"action": "echo"}))

    assert [a.outcome for a in failed.attempts] == ["error", "error"]
    assert ok.outcome == "ok" and ok.retries == 0 and not ok.destination_sent
    (record,) = _records(clients, queue)
    assert record["requestContext"]["approximateInvokeCount"] == 2
    assert record["responsePayload"]["errorType"] == "ValueError"
    assert record["responsePayload"]["errorMessage"] == "bad data"


def test_memory_over_the_limit_is_killed_as_out_of_memory(lam):
    function = _function(lam, memory_mb=96, timeout_seconds=20)
    response = _invoke(lam, function, {"action": "hog"})
    body = json.loads(response["Payload"].read())
    request_id = response["ResponseMetadata"]["RequestId"]

    assert response["FunctionError"] == "Unhandled"
    assert body == {
        "errorType": "Runtime.OutOfMemory",
        "errorMessage": f"RequestId: {request_id} Error: Runtime exited with error: signal: killed",
    }
    call = _only(lam, request_id)
    assert call.outcome == "oom" and call.attempts[0].max_memory_mb > 96
    assert call.attempts[0].seconds < 10


def test_kill_9_of_a_running_invocation_is_a_runtime_exit_error(lam, clients):
    queue = _queue(clients)
    function = _function(lam, maximum_retry_attempts=0, on_failure_queue_url=queue)
    request_id = _event(lam, function, {"action": "sleep", "seconds": 30})
    lam.wait_running(request_id, timeout=10)
    assert lam.kill(request_id) == 1
    call = _only(lam, request_id, timeout=10)

    expected = {
        "errorType": "Runtime.ExitError",
        "errorMessage": f"RequestId: {request_id} Error: Runtime exited with error: signal: killed",
    }
    assert call.outcome == "killed" and call.result == expected and call.retries == 0
    (record,) = _records(clients, queue)
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["responsePayload"] == expected
    assert lam.kill(request_id) == 0, "nothing left running"


# --------------------------------------------------------------------------- throttling


def test_throttle_switch_raises_toomanyrequests_with_the_reason(lam):
    function = _function(lam)
    client = _lambda(lam)
    lam.throttle(count=2)
    for kind in ("RequestResponse", "Event"):
        with pytest.raises(client.exceptions.TooManyRequestsException) as caught:
            client.invoke(FunctionName=function, InvocationType=kind, Payload=b"{}")
        error = caught.value.response
        assert error["Error"]["Code"] == "TooManyRequestsException"
        assert error["Reason"] == RESERVED_CONCURRENCY_REASON
        assert error["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert client.invoke(FunctionName=function, Payload=b"{}")["StatusCode"] == 200, "the count is used up"

    lam.throttle(reason="ConcurrentInvocationLimitExceeded")  # until cleared
    for _ in range(3):
        with pytest.raises(client.exceptions.TooManyRequestsException) as caught:
            client.invoke(FunctionName=function, Payload=b"{}")
        assert caught.value.response["Reason"] == "ConcurrentInvocationLimitExceeded"
    lam.clear_throttle()
    assert client.invoke(FunctionName=function, Payload=b"{}")["StatusCode"] == 200
    outcomes = [c.outcome for c in lam.invocations if c.function == function]
    assert outcomes == ["throttled", "throttled", "ok", "throttled", "throttled", "throttled", "ok"]


def test_reserved_concurrency_throttles_sync_and_queues_async(lam):
    function = _function(lam, reserved_concurrency=1)
    client = _lambda(lam)
    first = _event(lam, function, {"action": "sleep", "seconds": 1.5})
    lam.wait_running(first, timeout=10)

    with pytest.raises(client.exceptions.TooManyRequestsException) as caught:
        client.invoke(FunctionName=function, Payload=b"{}")
    assert caught.value.response["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
    queued = _event(lam, function, {"action": "echo"})  # accepted: Lambda queues it and retries

    one, two = _only(lam, first), _only(lam, queued)
    assert one.outcome == "ok" and two.outcome == "ok"
    assert two.throttles >= 1 and two.attempts[0].started_at >= one.attempts[0].ended_at
    assert two.attempts[0].started_at - one.attempts[0].ended_at < 1, "retried from the queue soon"


def test_event_throttled_past_its_maximum_age_goes_to_the_destination(lam, clients):
    queue = _queue(clients)
    function = _function(lam, reserved_concurrency=0, maximum_event_age_seconds=1, on_failure_queue_url=queue)
    event = {"poll_work_pool": "pool"}
    request_id = _event(lam, function, event)
    call = _only(lam, request_id, timeout=10)

    assert call.outcome == "throttled" and call.attempts == [] and call.throttles >= 2
    assert 1 <= call.seconds < 3
    (record,) = _records(clients, queue)
    assert record["requestContext"] == {
        "requestId": request_id,
        "functionArn": f"{lam.function_arn(function)}:$LATEST",
        "condition": "EventAgeExceeded",
        "approximateInvokeCount": 0,
    }
    assert record["requestPayload"] == event
    assert "responseContext" not in record and "responsePayload" not in record
    # Settings change for the invokes that follow (as PutFunctionConcurrency would).
    lam.update_function(function, reserved_concurrency=None)
    assert _only(lam, _event(lam, function, {"action": "echo"})).outcome == "ok"
    with pytest.raises(ValueError, match="0, 1 or 2"):
        lam.update_function(function, maximum_retry_attempts=3)
    assert lam.functions[function].maximum_retry_attempts == 2, "a refused change changes nothing"


# --------------------------------------------------------------------------- duplicates


@pytest.mark.parametrize("back_to_back", [False, True])
def test_duplicate_delivery_runs_the_event_twice_with_one_request_id(lam, back_to_back):
    function = _function(lam)
    lam.duplicate_next_events(1, back_to_back=back_to_back)
    request_id = _event(lam, function, {"action": "sleep", "seconds": 1})
    lam.wait_idle(30)

    calls = lam.calls(request_id)
    assert [c.duplicate for c in calls] == [False, True]
    assert all(c.outcome == "ok" and f"probe sleep {request_id}" in c.logs for c in calls)
    first, second = (c.attempts[0] for c in calls)
    overlap = first.started_at < second.ended_at and second.started_at < first.ended_at
    assert overlap is not back_to_back
    # Only the next event was duplicated.
    assert len(lam.calls(_event(lam, function, {"action": "echo"}))) == 1


# --------------------------------------------------------------------------- logs


def _log_events(clients: dict[str, Any], function: str, request_id: str) -> list[str]:
    found = clients["logs"].filter_log_events(
        logGroupName=f"/aws/lambda/{function}", filterPattern=f'"{request_id}"'
    )
    return [e["message"] for e in found["events"]]


def test_logs_go_to_cloudwatch_with_lambdas_framing(lam, clients):
    function = _function(lam, memory_mb=256)
    response = _invoke(lam, function, {"action": "context"})
    context = json.loads(response["Payload"].read())
    request_id = response["ResponseMetadata"]["RequestId"]
    call = _only(lam, request_id)
    stream = call.attempts[0].log_stream

    assert re.fullmatch(r"\d{4}/\d\d/\d\d/\[\$LATEST\][0-9a-f]{32}", stream)
    assert context == {
        "aws_request_id": request_id,
        "function_name": function,
        "invoked_function_arn": lam.function_arn(function),
        "memory_limit_in_mb": "256",
        "log_group_name": f"/aws/lambda/{function}",
        "log_stream_name": stream,
        "remaining_ms": context["remaining_ms"],
    }
    assert 100_000 < context["remaining_ms"] <= 120_000

    start, probe, end, report = _log_events(clients, function, request_id)
    assert start == f"START RequestId: {request_id} Version: $LATEST"
    assert probe == f"probe context {request_id}"
    assert end == f"END RequestId: {request_id}"
    assert re.fullmatch(
        rf"REPORT RequestId: {request_id}\tDuration: \d+\.\d\d ms\tBilled Duration: \d+ ms\t"
        r"Memory Size: 256 MB\tMax Memory Used: \d+ MB",
        report,
    )
    streams = clients["logs"].describe_log_streams(logGroupName=f"/aws/lambda/{function}")["logStreams"]
    assert [s["logStreamName"] for s in streams] == [stream]
