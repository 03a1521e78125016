"""The `aws-lambda` worker against a real Prefect API (session harness) and the Lambda emulator.

A deployment run → the worker's `run()` → boto3 `Invoke` → the loopback Lambda API → the
project's handler in a Lambda-like subprocess → the flow run's final state in the Prefect API.
"""

from __future__ import annotations

import json
import logging
import uuid

import pytest
from aio import run_async
from lambda_emulator import REPO, LambdaEmulator

from flows.core.errors import LambdaInvokeError
from flows.run_env import RUN_ENV_NAMES
from flows.worker import (
    LambdaJobConfiguration,
    LambdaWorker,
    base_job_template_for,
    default_base_job_template,
    invocation_payload,
    invoke_failure,
)

CODE = ("flows", "tests/worker_flows.py")


# --------------------------------------------------------------------------- pure parts


def test_registered_through_the_collections_entry_point():
    from prefect.workers.base import BaseWorker

    assert BaseWorker.get_worker_class_from_type("aws-lambda") is LambdaWorker


def test_default_template_reads_well_in_the_ui():
    template = default_base_job_template()
    props = template["variables"]["properties"]
    fields = {
        "env",
        "function_name",
        "region",
        "invocation_type",
        "endpoint_url",
        "aws_credentials",
        "invoke_failure_queue_url",
        "log_group_name",
    }
    assert set(template["job_configuration"]) == fields
    assert set(props) == fields
    # The credentials are a prefect-aws block (the UI offers a block picker); empty is the default chain.
    assert props["aws_credentials"]["$ref"] == "#/definitions/AwsCredentials"
    assert template["variables"]["definitions"]["AwsCredentials"]["block_type_slug"] == "aws-credentials"
    assert props["invocation_type"]["default"] == "Event"
    assert props["invocation_type"]["enum"] == ["Event", "RequestResponse"]
    assert all(p.get("description") and p.get("title") for p in props.values())
    assert template["variables"]["required"] == ["function_name"]


def test_template_for_a_function_sets_defaults():
    arn = "arn:aws:lambda:eu-west-1:123456789012:function:runner"
    template = base_job_template_for(arn, region="eu-west-1", env={"QUEST_BLS_SURVEYS": "pr"})
    props = template["variables"]["properties"]
    assert props["function_name"]["default"] == arn
    assert props["region"]["default"] == "eu-west-1"
    assert props["env"]["default"] == {"QUEST_BLS_SURVEYS": "pr"}
    assert "function_name" not in template["variables"].get("required", [])
    with pytest.raises(ValueError):
        base_job_template_for("")
    queue = "https://sqs.eu-west-1.amazonaws.com/123456789012/runner-invoke-failures"
    template = base_job_template_for(
        arn, invoke_failure_queue_url=queue, log_group_name="/aws/lambda/runner-x"
    )
    props = template["variables"]["properties"]
    assert props["invoke_failure_queue_url"]["default"] == queue
    assert props["log_group_name"]["default"] == "/aws/lambda/runner-x"
    assert (
        base_job_template_for(arn)["variables"]["properties"]["invoke_failure_queue_url"]["default"] is None
    )


def test_the_functions_log_group():
    from flows.worker import function_log_group

    arn = "arn:aws:lambda:eu-west-1:123456789012:function:runner-3f2a"
    configuration = LambdaJobConfiguration(function_name=arn)
    assert function_log_group(configuration, {}) == "/aws/lambda/runner-3f2a"
    # Inside that very function, Lambda names its (custom) group; another function's is not it.
    inside = {
        "AWS_LAMBDA_FUNCTION_NAME": "runner-3f2a",
        "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/quest-runner",
    }
    assert function_log_group(configuration, inside) == "/aws/lambda/quest-runner"
    assert function_log_group(LambdaJobConfiguration(function_name="other"), inside) == "/aws/lambda/other"
    configured = LambdaJobConfiguration(function_name=arn, log_group_name="/custom/group")
    assert function_log_group(configured, inside) == "/custom/group"


def test_payload_carries_only_run_settings():
    env = {
        "QUEST_BLS_SURVEYS": "pr,cu",
        "quest_retries": "2",
        "PREFECT_API_KEY": "pnu_secret",
        "prefect_api_auth_string": "admin:pw",
        "Prefect_Api_Url": "http://evil.example/api",
        "HTTPS_PROXY": "http://evil.example:3128",
        "AWS_SECRET_ACCESS_KEY": "x",
        "QUEST_STORE": "s3://other",
        "QUEST_CONCURRENCY": "-1",
        "PREFECT__FLOW_RUN_ID": "abc",
        "UNSET": None,
    }
    records: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger = logging.getLogger("test-worker-payload")
    logger.addHandler(Capture())
    body = json.loads(invocation_payload("abc", env, "Event", logger))
    assert body == {"flow_run_id": "abc", "env": {"QUEST_BLS_SURVEYS": "pr,cu", "QUEST_RETRIES": "2"}}
    assert len(records) == 8 and all("not applied" in r for r in records)
    assert not any(v in "".join(records) for v in ("pnu_secret", "admin:pw", "evil.example", "s3://other"))


def test_payload_over_lambda_limit_is_refused():
    with pytest.raises(LambdaInvokeError, match="byte limit"):
        invocation_payload("x" * 300_000, {}, "Event")
    assert invocation_payload("x" * 300_000, {}, "RequestResponse")
    # An oversized value is no longer sent at all.
    assert json.loads(invocation_payload("abc", {"QUEST_BLS_SURVEYS": "pr," * 100_000}, "Event"))["env"] == {}


def test_the_ui_lists_the_accepted_names():
    description = default_base_job_template()["variables"]["properties"]["env"]["description"]
    assert all(name in description for name in RUN_ENV_NAMES)


def test_pool_defaults_refuse_other_names():
    arn = "arn:aws:lambda:eu-west-1:123456789012:function:runner"
    with pytest.raises(ValueError, match="PREFECT_API_URL"):
        base_job_template_for(arn, env={"PREFECT_API_URL": "http://evil.example/api"})
    props = base_job_template_for(arn, env={"quest_concurrency": "2"})["variables"]["properties"]
    assert props["env"]["default"] == {"QUEST_CONCURRENCY": "2"}


def test_invoke_failure_reasons():
    ok = {"StatusCode": 202, "ResponseMetadata": {"RequestId": "r1"}}
    assert invoke_failure(ok, "f") is None
    err = {
        "StatusCode": 200,
        "FunctionError": "Unhandled",
        "Payload": json.dumps({"errorType": "KeyError", "errorMessage": "'x'"}).encode(),
        "ResponseMetadata": {"RequestId": "r2"},
    }
    assert invoke_failure(err, "f") == "function f (request r2) failed (Unhandled): KeyError: 'x'"
    assert "status 500" in invoke_failure({"StatusCode": 500}, "f")


# --------------------------------------------------------------------------- real API + emulator


@pytest.fixture(scope="module")
def lam(prefect_harness):
    from prefect.settings import PREFECT_API_URL

    with LambdaEmulator(code_paths=CODE) as emulator:
        emulator.add_function("runner", env={"PREFECT_API_URL": PREFECT_API_URL.value()})
        yield emulator


def _pool_and_deployment(lam, flow_name: str, function: str = "runner", **template_options):
    """A fresh aws-lambda pool and a deployment of `tests/worker_flows.py:<flow_name>` on it."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    pool = f"lambda-{uuid.uuid4().hex[:8]}"
    template = base_job_template_for(
        lam.function_arn(function), endpoint_url=lam.endpoint_url, **template_options
    )
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=pool, type="aws-lambda", base_job_template=template))
        flow_id = client.create_flow_from_name(flow_name)
        deployment_id = client.create_deployment(
            flow_id=flow_id,
            name=f"{flow_name}-{pool}",
            entrypoint=f"tests/worker_flows.py:{flow_name}",
            work_pool_name=pool,
            job_variables={
                "env": {"quest_concurrency": "3", "PREFECT_API_KEY": "pnu_leak", "HTTPS_PROXY": "http://x:1"}
            },
        )
    return pool, deployment_id


def _run_once(pool: str, deployment_id, parameters=None):
    """Create a deployment run and let one worker polling round submit it."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        run = client.create_flow_run_from_deployment(deployment_id, parameters=parameters or {})

    async def poll():
        async with LambdaWorker(work_pool_name=pool, create_pool_if_not_found=False) as worker:
            return await worker.get_and_submit_flow_runs()

    assert run.id in {r.id for r in run_async(poll())}
    return run.id


def _logs(run_id) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
    return "\n".join(log.message for log in logs)


def _logs_with(run_id, text: str, timeout: float = 15.0) -> str:
    """The run's logs once `text` is among them (logs reach the API in batches)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        logs = _logs(run_id)
        if text in logs or time.monotonic() > deadline:
            return logs
        time.sleep(0.3)


def _state(run_id):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id)


def test_deployment_run_completes_in_the_function(lam):
    pool, deployment_id = _pool_and_deployment(lam, "echo")
    run_id = _run_once(
        pool, deployment_id, {"names": ["QUEST_CONCURRENCY", "PREFECT_API_KEY", "AWS_LAMBDA_FUNCTION_NAME"]}
    )
    lam.wait_idle(60)
    run = _state(run_id)
    call = [c for c in lam.invocations if c.event.get("flow_run_id") == str(run_id)][-1]
    assert run.state.type.value == "COMPLETED", call.logs[-3000:]
    assert call.invocation_type == "Event" and call.function_error is None
    assert call.result["state"] == "Completed"
    assert run.infrastructure_pid == call.request_id
    # Only the run setting travels; the worker says on the run what it dropped (never the value).
    assert call.event["env"] == {"QUEST_CONCURRENCY": "3"}
    logs = _logs(run_id)
    assert "run env 'PREFECT_API_KEY' not applied" in logs and "run env 'HTTPS_PROXY' not applied" in logs
    assert "pnu_leak" not in logs


def test_flow_failing_inside_the_function_ends_failed(lam):
    pool, deployment_id = _pool_and_deployment(lam, "fail", invocation_type="RequestResponse")
    run_id = _run_once(pool, deployment_id, {"message": "bad data"})
    run = _state(run_id)
    call = [c for c in lam.invocations if c.event.get("flow_run_id") == str(run_id)][-1]
    assert call.function_error is None, "a failed flow is not a function error (no Lambda retry)"
    assert run.state.type.value == "FAILED", call.logs[-3000:]
    assert call.result["state"] == "Failed"


def test_unknown_function_marks_the_run_crashed(lam):
    pool, deployment_id = _pool_and_deployment(lam, "echo", function="missing")
    run_id = _run_once(pool, deployment_id)
    run = _state(run_id)
    assert run.state.type.value == "CRASHED"
    assert "ResourceNotFoundException" in run.state.message
    assert "missing" in run.state.message


def test_function_error_marks_the_run_crashed_with_the_reason(lam):
    # The function cannot read its API key secret: the handler raises before running anything.
    lam.add_function(
        "misconfigured",
        env={
            "PREFECT_API_URL": lam.functions["runner"].env["PREFECT_API_URL"],
            "QUEST_PREFECT_API_KEY_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:nope",
            "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
            "AWS_MAX_ATTEMPTS": "1",
        },
    )
    pool, deployment_id = _pool_and_deployment(
        lam, "echo", function="misconfigured", invocation_type="RequestResponse"
    )
    run_id = _run_once(pool, deployment_id)
    run = _state(run_id)
    assert run.state.type.value == "CRASHED"
    assert "(Unhandled)" in run.state.message
    assert "FlowRunEntryError" in run.state.message and "secret" in run.state.message


def test_serverless_poll_submits_due_scheduled_runs(lam):
    import boto3
    from prefect.client.orchestration import get_client

    pool, deployment_id = _pool_and_deployment(lam, "echo")
    with get_client(sync_client=True) as client:
        run = client.create_flow_run_from_deployment(deployment_id)  # Scheduled, due now
    client = boto3.client("lambda", endpoint_url=lam.endpoint_url, region_name="us-east-1")
    response = client.invoke(FunctionName="runner", Payload=json.dumps({"poll_work_pool": pool}).encode())
    body = json.loads(response["Payload"].read())
    assert response.get("FunctionError") is None, body
    assert body == {"work_pool": pool, "submitted": [str(run.id)]}
    lam.wait_idle(60)
    done = _state(run.id)
    assert done.state.type.value == "COMPLETED"


def test_poll_of_a_missing_pool_is_a_function_error(lam):
    import boto3

    client = boto3.client("lambda", endpoint_url=lam.endpoint_url, region_name="us-east-1")
    response = client.invoke(
        FunctionName="runner", Payload=json.dumps({"poll_work_pool": "no-such-pool"}).encode()
    )
    body = json.loads(response["Payload"].read())
    assert response.get("FunctionError") == "Unhandled"
    assert "no-such-pool" in body["errorMessage"] and "not found" in body["errorMessage"]


def test_job_configuration_drops_worker_settings_from_env():
    # The worker's own Prefect settings (key, home) must not become the run's environment.
    assert LambdaJobConfiguration._base_environment() == {}
    # Nor Prefect's bookkeeping variables (PREFECT__FLOW_RUN_ID, ...): the payload has the id.
    assert LambdaJobConfiguration._base_flow_run_environment(None) == {}
    assert LambdaJobConfiguration._base_attribution_environment(flow_run=None, worker_name="w") == {}
    assert REPO.joinpath("tests/worker_flows.py").exists()


# --------------------------------------------------------------------------- throttled and failed Invokes


def test_temporary_invoke_failures_are_throttling_and_lambda_service_errors():
    from botocore.exceptions import ClientError

    from flows.worker import temporary_invoke_failure

    def error(code, status, **extra):
        return ClientError(
            {
                "Error": {"Code": code, "Message": "m"},
                "ResponseMetadata": {"HTTPStatusCode": status},
                **extra,
            },
            "Invoke",
        )

    throttled = temporary_invoke_failure(
        error("TooManyRequestsException", 429, Reason="ReservedFunctionConcurrentInvocationLimitExceeded")
    )
    assert throttled is not None
    assert (
        throttled.reason == "TooManyRequestsException (ReservedFunctionConcurrentInvocationLimitExceeded): m"
    )
    assert temporary_invoke_failure(error("ServiceException", 500)) is not None
    assert temporary_invoke_failure(error("ResourceNotReadyException", 502)) is not None
    assert (
        temporary_invoke_failure(
            error("TooManyRequestsException", 429, retryAfterSeconds="90")
        ).retry_after_seconds
        == 90
    )
    # Configuration problems are not temporary, whatever their status.
    for code, status in [
        ("ResourceNotFoundException", 404),
        ("AccessDeniedException", 403),
        ("InvalidRequestContentException", 400),
        ("KMSAccessDeniedException", 502),
    ]:
        assert temporary_invoke_failure(error(code, status)) is None, code
    assert temporary_invoke_failure(RuntimeError("no response")) is None


def test_retry_delay_doubles_from_30_seconds_up_to_5_minutes_with_jitter():
    import random

    from flows.worker import retry_delay_seconds

    class Low(random.Random):
        def random(self):
            return 0.0

    class High(random.Random):
        def random(self):
            return 1.0

    assert [retry_delay_seconds(n, Low()) for n in range(7)] == [30, 60, 120, 240, 300, 300, 300]
    assert retry_delay_seconds(0, High()) == pytest.approx(36)
    assert retry_delay_seconds(99, High()) == pytest.approx(360)
    assert retry_delay_seconds(-1, Low()) == 30


def _stubbed_lambda(monkeypatch, *errors):
    """Every Invoke of the worker answers the next of `errors` (code, status, modeled fields)."""
    from botocore.stub import Stubber

    import flows.worker
    from flows.io.aws import aws_client

    client = aws_client("lambda", region="us-east-1", endpoint_url="http://127.0.0.1:9")
    stubber = Stubber(client)
    for code, status, fields in errors:
        stubber.add_client_error(
            "invoke",
            service_error_code=code,
            service_message=f"{code} from the stub",
            http_status_code=status,
            modeled_fields=fields,
        )
    stubber.activate()
    monkeypatch.setattr(flows.worker, "lambda_client", lambda configuration, **config: client)
    return stubber


def _plain_pool_deployment():
    """A pool whose function is never really called (the tests stub Lambda) and a deployment on it."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    pool = f"lambda-{uuid.uuid4().hex[:8]}"
    template = base_job_template_for("arn:aws:lambda:us-east-1:123456789012:function:stubbed")
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=pool, type="aws-lambda", base_job_template=template))
        flow_id = client.create_flow_from_name("echo")
        deployment_id = client.create_deployment(
            flow_id=flow_id, name=f"echo-{pool}", entrypoint="tests/worker_flows.py:echo", work_pool_name=pool
        )
    return pool, deployment_id


def _states(run_id):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run_states(run_id)


def _due_again(run_id):
    """Make a rescheduled run due now (as if its retry time had come)."""
    from prefect.client.orchestration import get_client
    from prefect.states import Scheduled

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run_id, Scheduled(), force=True)


THROTTLED = (
    "TooManyRequestsException",
    429,
    {"Reason": "ReservedFunctionConcurrentInvocationLimitExceeded", "Type": "User"},
)


def test_a_throttled_invoke_puts_the_run_back_to_scheduled_and_backs_off(prefect_harness, monkeypatch):
    from datetime import UTC, datetime, timedelta

    stubber = _stubbed_lambda(monkeypatch, THROTTLED, THROTTLED)
    pool, deployment_id = _plain_pool_deployment()
    before = datetime.now(UTC)
    run_id = _run_once(pool, deployment_id)
    run = _state(run_id)
    assert run.state.type.value == "SCHEDULED" and run.state.name == "AwaitingRetry", run.state
    assert "ReservedFunctionConcurrentInvocationLimitExceeded" in run.state.message
    assert "TooManyRequestsException" in run.state.message
    first = run.state.state_details.scheduled_time
    assert before + timedelta(seconds=29) <= first <= datetime.now(UTC) + timedelta(seconds=37)
    assert not run.infrastructure_pid
    assert "Lambda did not accept the invocation" in _logs_with(run_id, "Lambda did not accept")

    _due_again(run_id)
    before = datetime.now(UTC)
    _run_once_again(pool, run_id)
    run = _state(run_id)
    assert run.state.name == "AwaitingRetry" and "retry 2" in run.state.message
    assert run.state.state_details.scheduled_time >= before + timedelta(seconds=59)  # doubled
    assert [s.name for s in _states(run_id)].count("AwaitingRetry") == 2
    assert not [s for s in _states(run_id) if s.type.value == "CRASHED"]
    stubber.assert_no_pending_responses()


def test_a_lambda_service_error_is_retried_later_too(prefect_harness, monkeypatch):
    _stubbed_lambda(monkeypatch, ("ServiceException", 500, {}))
    pool, deployment_id = _plain_pool_deployment()
    run_id = _run_once(pool, deployment_id)
    run = _state(run_id)
    assert run.state.type.value == "SCHEDULED" and run.state.name == "AwaitingRetry"
    assert "ServiceException" in run.state.message


def test_a_run_refused_for_longer_than_the_event_age_crashes(prefect_harness, monkeypatch):
    import flows.worker

    _stubbed_lambda(monkeypatch, THROTTLED, THROTTLED)
    pool, deployment_id = _plain_pool_deployment()
    run_id = _run_once(pool, deployment_id)
    assert _state(run_id).state.name == "AwaitingRetry"
    monkeypatch.setattr(flows.worker, "INVOKE_MAX_EVENT_AGE_SECONDS", 0)
    _due_again(run_id)
    _run_once_again(pool, run_id)
    run = _state(run_id)
    assert run.state.type.value == "CRASHED"
    assert "TooManyRequestsException" in run.state.message


def test_a_missing_function_still_crashes_with_the_reason(prefect_harness, monkeypatch):
    _stubbed_lambda(monkeypatch, ("ResourceNotFoundException", 404, {"Type": "User"}))
    pool, deployment_id = _plain_pool_deployment()
    run_id = _run_once(pool, deployment_id)
    run = _state(run_id)
    assert run.state.type.value == "CRASHED"
    assert "ResourceNotFoundException" in run.state.message


def _run_once_again(pool: str, run_id):
    async def poll():
        async with LambdaWorker(work_pool_name=pool, create_pool_if_not_found=False) as worker:
            return await worker.get_and_submit_flow_runs()

    assert run_id in {r.id for r in run_async(poll())}
