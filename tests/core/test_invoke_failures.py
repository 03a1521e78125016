"""Lambda's on-failure destination records: the documented shapes, the reason line, and junk."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.core.invoke_failures import (
    EVENT_AGE_EXCEEDED,
    MAX_ERROR_MESSAGE_CHARS,
    InvokeFailure,
    Unreadable,
    not_our_function,
    parse_invoke_failure,
    parse_record,
    payload_kind,
)

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RUN = "5f0c1a52-8f6b-4f55-9a0e-2a5d1c7e9b11"
ARN = "arn:aws:lambda:eu-west-1:123456789012:function:runner"


def record(
    request_id="req-1",
    condition="RetriesExhausted",
    payload=None,
    error_type="Sandbox.Timedout",
    error_message="RequestId: req-1 Error: Task timed out after 600.00 seconds",
    attempts=1,
    response=True,
):
    body = {
        "version": "1.0",
        "timestamp": "2026-11-30T10:00:00.000Z",
        "requestContext": {
            "requestId": request_id,
            "functionArn": f"{ARN}:$LATEST",
            "condition": condition,
            "approximateInvokeCount": attempts,
        },
        "requestPayload": {"flow_run_id": RUN, "env": {}} if payload is None else payload,
    }
    if response:
        body["responseContext"] = {
            "statusCode": 200,
            "executedVersion": "$LATEST",
            "functionError": "Unhandled",
        }
        body["responsePayload"] = {"errorType": error_type, "errorMessage": error_message}
    return body


def test_a_timeout_record_names_the_run_and_reads_as_one_line():
    failure = parse_invoke_failure(json.dumps(record()))
    assert isinstance(failure, InvokeFailure)
    assert failure.flow_run_id == RUN and failure.payload_kind == "flow_run"
    assert failure.request_id == "req-1" and failure.attempts == 1 and failure.status_code == 200
    assert failure.function_arn == f"{ARN}:$LATEST" and failure.function_error == "Unhandled"
    assert failure.error_message == "Task timed out after 600.00 seconds"
    assert failure.reason() == (
        "Lambda request req-1 ended without reporting: Task timed out after 600.00 seconds "
        "(Sandbox.Timedout; retries exhausted after 1 attempt)"
    )


@pytest.mark.parametrize("error_type", ["Runtime.OutOfMemory", "Runtime.ExitError"])
def test_out_of_memory_and_killed_runtimes(error_type):
    body = record(
        error_type=error_type, error_message="Runtime exited with error: signal: killed", attempts=2
    )
    failure = parse_invoke_failure(json.dumps(body).encode())
    assert isinstance(failure, InvokeFailure)
    assert failure.reason() == (
        "Lambda request req-1 ended without reporting: Runtime exited with error: signal: killed "
        f"({error_type}; retries exhausted after 2 attempts)"
    )


def test_event_age_exceeded_has_no_response_and_says_it_never_ran():
    failure = parse_invoke_failure(
        json.dumps(record(condition=EVENT_AGE_EXCEEDED, attempts=0, response=False))
    )
    assert isinstance(failure, InvokeFailure)
    assert failure.error_type is None and failure.error_message is None and failure.status_code is None
    reason = failure.reason()
    assert reason.startswith("Lambda request req-1 was never run")
    assert reason.endswith("(event age exceeded after 0 attempts)")


def test_payloads_that_are_not_a_flow_run():
    assert payload_kind({"poll_work_pool": "pool"}) == ("poll", None)
    assert payload_kind({"Records": []}) == ("other", None)
    assert payload_kind({"flow_run_id": "not-a-uuid"}) == ("other", None)
    assert payload_kind(json.dumps({"flow_run_id": RUN.upper()})) == ("flow_run", RUN)
    assert payload_kind("not json") == ("other", None)
    assert payload_kind([RUN]) == ("other", None)
    poll = parse_invoke_failure(json.dumps(record(payload={"poll_work_pool": "pool"})))
    assert isinstance(poll, InvokeFailure) and poll.flow_run_id is None and poll.payload_kind == "poll"


def test_long_and_multiline_error_messages_are_clipped_to_one_line():
    failure = parse_invoke_failure(json.dumps(record(error_message="Traceback\n  line\n" + "x" * 5000)))
    assert isinstance(failure, InvokeFailure)
    assert "\n" not in failure.reason()
    assert len(failure.error_message or "") == MAX_ERROR_MESSAGE_CHARS


def test_unknown_condition_and_missing_counts_are_kept_as_given():
    body = record(condition="SomethingNew", attempts=None)
    failure = parse_record(body)
    assert isinstance(failure, InvokeFailure) and failure.attempts is None
    assert failure.reason().endswith("(Sandbox.Timedout; SomethingNew)")


@pytest.mark.parametrize(
    "body, why",
    [
        (None, "empty"),
        (b"\xff\xfe", "UTF-8"),
        ("", "not JSON"),
        ("{", "not JSON"),
        ("[]", "array"),
        ("null", "null"),
        ('{"Records": []}', "requestContext"),
        ('{"requestContext": {"condition": "RetriesExhausted"}}', "requestId"),
        ('{"requestContext": {"requestId": "r"}}', "condition"),
        ('{"requestContext": {"requestId": " ", "condition": "x"}}', "requestId"),
        ("[" * 100_000 + "]" * 100_000, ""),
    ],
)
def test_what_is_not_a_record_is_unreadable(body, why):
    parsed = parse_invoke_failure(body)
    assert isinstance(parsed, Unreadable) and why in parsed.why


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
FIELDS = st.sampled_from(
    ["requestId", "condition", "approximateInvokeCount", "functionArn", "flow_run_id", "errorMessage"]
)


@FAST
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300), JSON.map(json.dumps)))
def test_junk_never_crashes_the_parser(body):
    parsed = parse_invoke_failure(body)
    assert isinstance(parsed, InvokeFailure | Unreadable)
    if isinstance(parsed, InvokeFailure):
        assert parsed.request_id and "\n" not in parsed.reason()


@FAST
@given(st.dictionaries(FIELDS, JSON, max_size=6), JSON, JSON, JSON)
def test_records_with_wrong_types_anywhere_never_crash(context, payload, response_context, response):
    body = {
        "requestContext": context,
        "requestPayload": payload,
        "responseContext": response_context,
        "responsePayload": response,
    }
    parsed = parse_record(body)
    assert isinstance(parsed, InvokeFailure | Unreadable)
    if isinstance(parsed, InvokeFailure):
        reason = parsed.reason()
        assert reason.startswith(f"Lambda request {parsed.request_id} ") and "\n" not in reason
        assert parsed.flow_run_id is None or parsed.payload_kind == "flow_run"


# --------------------------------------------------------------------------- issue 27: whose record


ARN = "arn:aws:lambda:us-east-1:123456789012:function:runner"


@pytest.mark.parametrize(
    ("pool_function", "record_arn"),
    [
        ("runner", f"{ARN}:$LATEST"),
        (ARN, f"{ARN}:$LATEST"),
        (f"{ARN}:$LATEST", ARN),
        (f"{ARN}:prod", f"{ARN}:prod"),
        ("runner:7", f"{ARN}:7"),
        ("123456789012:function:runner", f"{ARN}:$LATEST"),
    ],
)
def test_records_of_the_pools_function_in_any_form_are_ours(pool_function, record_arn):
    assert not_our_function(record_arn, pool_function) is None


@pytest.mark.parametrize(
    ("pool_function", "record_arn", "why"),
    [
        (ARN, "arn:aws:lambda:us-east-1:123456789012:function:runner2:$LATEST", "another function"),
        ("runner", "arn:aws:lambda:us-east-1:123456789012:function:Runner:$LATEST", "another function"),
        (ARN, f"{ARN}:prod", "another version or alias"),
        (f"{ARN}:prod", f"{ARN}:$LATEST", "another version or alias"),
        (ARN, "arn:aws:lambda:us-east-1:999999999999:function:runner:$LATEST", "another account"),
        (ARN, "arn:aws:lambda:eu-west-1:123456789012:function:runner:$LATEST", "another region"),
        (ARN, "arn:aws-cn:lambda:us-east-1:123456789012:function:runner", "another partition"),
        (ARN, None, "names no Lambda function ARN"),
        (ARN, "", "names no Lambda function ARN"),
        (ARN, "arn:aws:sqs:us-east-1:123456789012:function:runner", "not one"),
        (ARN, f"{ARN}:$LATEST:extra", "not one"),
        (ARN, "arn:aws:lambda:us-east-1:123456789012:function:runner\n:$LATEST", "not one"),
        ("", f"{ARN}:$LATEST", "the pool's function"),
    ],
)
def test_records_of_any_other_function_are_not(pool_function, record_arn, why):
    problem = not_our_function(record_arn, pool_function)
    assert problem is not None and why in problem and "\n" not in problem


def test_the_pools_region_setting_holds_a_function_named_by_name():
    record = "arn:aws:lambda:eu-west-1:123456789012:function:runner:$LATEST"
    assert "another region" in (not_our_function(record, "runner", "us-east-1") or "")
    assert not_our_function(record, "runner", "eu-west-1") is None


@given(st.text(max_size=120), st.text(max_size=80))
def test_any_text_is_compared_without_raising(record_arn, pool_function):
    problem = not_our_function(record_arn, pool_function)
    assert problem is None or "\n" not in problem
