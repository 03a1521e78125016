"""Invocations that died without reporting, read back from the on-failure queue (issue 11), and
kill_infrastructure, against a real Prefect API (session harness) and moto's SQS and Logs server.

Lambda's destination records are written to the queue here as Lambda documents them (moto does
not run functions); throttled Invokes are in test_worker.py (botocore's Stubber).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid

import pytest
from aio import run_async

from flows.core.names import ENV_INVOKE_FAILURE_QUEUE_URL
from flows.io.aws import aws_client
from flows.reconcile import FailureQueue, reconcile_invoke_failures
from flows.worker import LambdaJobConfiguration, LambdaWorker, base_job_template_for

FUNCTION = "arn:aws:lambda:us-east-1:123456789012:function:runner"
BLOCK_KEY = "AKIABLOCKCREDENTIALS"


@pytest.fixture
def sqs(moto_server):
    return aws_client("sqs", region="us-east-1", endpoint_url=moto_server)


@pytest.fixture
def logs(moto_server):
    return aws_client("logs", region="us-east-1", endpoint_url=moto_server)


@pytest.fixture
def queue_url(sqs):
    return sqs.create_queue(QueueName=f"failures-{uuid.uuid4().hex[:8]}")["QueueUrl"]


@pytest.fixture
def log_group(logs):
    group = f"/aws/lambda/runner-{uuid.uuid4().hex[:8]}"
    logs.create_log_group(logGroupName=group)
    return group


# --------------------------------------------------------------------------- helpers


def destination_record(
    request_id, payload, condition="RetriesExhausted", error=None, function_arn=f"{FUNCTION}:$LATEST"
):
    body = {
        "version": "1.0",
        "timestamp": "2026-11-30T10:00:00.000Z",
        "requestContext": {
            "requestId": request_id,
            "functionArn": function_arn,
            "condition": condition,
            "approximateInvokeCount": 1,
        },
        "requestPayload": payload,
    }
    if error is not None:
        body["responseContext"] = {
            "statusCode": 200,
            "executedVersion": "$LATEST",
            "functionError": "Unhandled",
        }
        body["responsePayload"] = {"errorType": error[0], "errorMessage": error[1]}
    return json.dumps(body)


TIMEOUT = ("Sandbox.Timedout", "RequestId: {id} Error: Task timed out after 600.00 seconds")


def write_request_logs(logs, group, request_id, body, ended=True):
    stream = f"2026/11/30/[$LATEST]{uuid.uuid4().hex}"
    lines = [f"START RequestId: {request_id} Version: $LATEST", *body]
    if ended:
        lines += [f"END RequestId: {request_id}", f"REPORT RequestId: {request_id}\tDuration: 600000.00 ms"]
    logs.create_log_stream(logGroupName=group, logStreamName=stream)
    now = int(time.time() * 1000)
    logs.put_log_events(
        logGroupName=group,
        logStreamName=stream,
        logEvents=[{"timestamp": now + i, "message": line} for i, line in enumerate(lines)],
    )


def make_pool(**template_options):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    pool = f"lambda-{uuid.uuid4().hex[:8]}"
    template = base_job_template_for(FUNCTION, **template_options.pop("options", {}))
    for name, default in template_options.items():
        template["variables"]["properties"][name]["default"] = default
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=pool, type="aws-lambda", base_job_template=template))
        flow_id = client.create_flow_from_name("echo")
        deployment_id = client.create_deployment(
            flow_id=flow_id, name=f"echo-{pool}", entrypoint="tests/worker_flows.py:echo", work_pool_name=pool
        )
    return pool, deployment_id


def make_run(deployment_id, state, request_id=None):
    """A deployment run put in `state` (RUNNING, COMPLETED, CANCELLING, ...) with a request id as pid."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import State, StateType

    with get_client(sync_client=True) as client:
        run = client.create_flow_run_from_deployment(deployment_id)
        client.set_flow_run_state(run.id, State(type=StateType.PENDING), force=True)
        if state != "PENDING":
            client.set_flow_run_state(run.id, State(type=StateType(state)), force=True)
        if request_id:
            client.update_flow_run(run.id, infrastructure_pid=request_id)
        return client.read_flow_run(run.id)


def read_run(run_id):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id)


def run_logs(run_id, text, timeout=15.0):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            found = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
        joined = "\n".join(f"{log.name}: {log.message}" for log in found)
        if text in joined or time.monotonic() > deadline:
            return joined
        time.sleep(0.3)


def messages_left(sqs, queue_url):
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


class Capture(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records: list[str] = []

    def emit(self, record):
        self.records.append(record.getMessage())


def pool_queue(sqs, queue_url, pool, function=FUNCTION, **options):
    """The queue as the worker of `pool` (whose function is `function`) reads it."""
    return FailureQueue(sqs=sqs, queue_url=queue_url, work_pool_name=pool, function_name=function, **options)


def reconcile(queue, logger=None):
    from prefect.client.orchestration import get_client

    async def go():
        async with get_client() as client:
            return await reconcile_invoke_failures(client, queue, logger or logging.getLogger("test"))

    return run_async(go())


# --------------------------------------------------------------------------- reconciliation


def test_records_crash_live_runs_and_are_deleted_others_are_left(
    prefect_harness, sqs, logs, queue_url, log_group
):
    pool, deployment_id = make_pool()
    running = make_run(deployment_id, "RUNNING", "req-running")
    completed = make_run(deployment_id, "COMPLETED", "req-completed")
    relaunched = make_run(deployment_id, "RUNNING", "req-newer")  # the record is of an older request
    write_request_logs(
        logs,
        log_group,
        "req-running",
        ["loading flow run", "fetching bls/pr.data.0.Current", "still fetching"],
    )
    timeout = (TIMEOUT[0], TIMEOUT[1].format(id="req-running"))
    bodies = [
        destination_record("req-running", {"flow_run_id": str(running.id), "env": {}}, error=timeout),
        destination_record("req-completed", {"flow_run_id": str(completed.id), "env": {}}, error=timeout),
        destination_record("req-older", {"flow_run_id": str(relaunched.id), "env": {}}, error=timeout),
        destination_record(
            "req-poll", {"poll_work_pool": "pool"}, error=("Runtime.ExitError", "signal: killed")
        ),
        "this is not a destination record",
    ]
    for body in bodies:
        sqs.send_message(QueueUrl=queue_url, MessageBody=body)

    capture = Capture()
    logger = logging.getLogger(f"test-reconcile-{uuid.uuid4().hex[:6]}")
    logger.addHandler(capture)
    logger.setLevel(logging.INFO)
    queue = pool_queue(sqs, queue_url, pool, logs=logs, log_group=log_group)
    summary = reconcile(queue, logger)

    assert summary.crashed == [str(running.id)]
    assert summary.deleted == 4 and summary.left == 1
    assert summary.request_ids == {"req-running", "req-completed", "req-older", "req-poll"}
    crashed = read_run(running.id)
    assert crashed.state.type.value == "CRASHED"
    assert crashed.state.message == (
        "Lambda request req-running ended without reporting: Task timed out after 600.00 seconds "
        "(Sandbox.Timedout; retries exhausted after 1 attempt)"
    )
    forwarded = run_logs(running.id, "still fetching")
    assert "prefect.flow_runs.observer: Last 6 log lines of Lambda request req-running" in forwarded
    assert "prefect.flow_runs.observer: fetching bls/pr.data.0.Current" in forwarded
    assert "prefect.flow_runs.observer: still fetching" in forwarded
    assert "END RequestId: req-running" in forwarded
    # Final runs, later invocations and other payloads are left alone; their messages are gone.
    assert read_run(completed.id).state.type.value == "COMPLETED"
    assert read_run(relaunched.id).state.type.value == "RUNNING"
    joined = "\n".join(capture.records)
    assert "already COMPLETED" in joined and "invoked again since, now as request req-newer" in joined
    assert "poll payload, not a flow run" in joined
    # The junk stays for the queue's retention, hidden, and is reported once.
    assert messages_left(sqs, queue_url) == 1
    assert sum("not a Lambda destination record" in r for r in capture.records) == 1
    assert reconcile(queue, logger).left == 0  # hidden: not received (nor logged) again
    assert sum("not a Lambda destination record" in r for r in capture.records) == 1


def test_a_never_run_invocation_crashes_its_pending_run_without_logs(
    prefect_harness, sqs, logs, queue_url, log_group
):
    pool, deployment_id = make_pool()
    pending = make_run(deployment_id, "PENDING", "req-queued")
    record = destination_record("req-queued", {"flow_run_id": str(pending.id)}, condition="EventAgeExceeded")
    sqs.send_message(QueueUrl=queue_url, MessageBody=record)
    reconcile(pool_queue(sqs, queue_url, pool, logs=logs, log_group=log_group))
    run = read_run(pending.id)
    assert run.state.type.value == "CRASHED"
    assert run.state.message.startswith("Lambda request req-queued was never run")
    assert "wrote no log lines" in run_logs(pending.id, "wrote no log lines")
    assert messages_left(sqs, queue_url) == 0


def make_poolless_run(state="RUNNING", request_id=None):
    """A run of a deployment with no work pool (served by `.serve()` or a process worker elsewhere)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name("echo")
        deployment_id = client.create_deployment(
            flow_id=flow_id, name=f"served-{uuid.uuid4().hex[:8]}", entrypoint="tests/worker_flows.py:echo"
        )
    run = make_run(deployment_id, state, request_id)
    assert run.work_pool_name is None
    return run


OTHER_ACCOUNT = "arn:aws:lambda:us-east-1:210987654321:function:runner"
FOREIGN_ARNS = {
    "another function": "arn:aws:lambda:us-east-1:123456789012:function:runner-evil:$LATEST",
    "a prefix of ours": "arn:aws:lambda:us-east-1:123456789012:function:run:$LATEST",
    "another account": f"{OTHER_ACCOUNT}:$LATEST",
    "another region": "arn:aws:lambda:eu-west-1:123456789012:function:runner:$LATEST",
    "another partition": "arn:aws-cn:lambda:us-east-1:123456789012:function:runner:$LATEST",
    "an alias of ours": f"{FUNCTION}:prod",
    "a version of ours": f"{FUNCTION}:3",
    "not an ARN": "runner; DROP TABLE",
    "no ARN": None,
}


def test_records_of_other_pools_runs_or_other_functions_change_nothing_and_are_left_once(
    prefect_harness, sqs, queue_url
):
    """Issue 27: a record naming a run of another pool or of no pool, or of another function
    (name, account, region, partition, version or alias), crashed that run. Now nothing changes:
    each is logged once, hidden and left (another worker's on a shared queue); ours still crash."""
    pool, deployment_id = make_pool()
    _, other_deployment = make_pool()
    other_pools = make_run(other_deployment, "RUNNING", "req-other-pool")
    poolless = make_poolless_run("RUNNING", "req-no-pool")
    ours = make_run(deployment_id, "RUNNING", "req-ours-victim")
    crash_me = make_run(deployment_id, "RUNNING", "req-ours")
    timeout = (TIMEOUT[0], TIMEOUT[1].format(id="x"))
    bodies = [
        destination_record("req-other-pool", {"flow_run_id": str(other_pools.id)}, error=timeout),
        destination_record("req-no-pool", {"flow_run_id": str(poolless.id)}, error=timeout),
        *(
            destination_record(f"req-{i}", {"flow_run_id": str(ours.id)}, error=timeout, function_arn=arn)
            for i, arn in enumerate(FOREIGN_ARNS.values())
        ),
        destination_record("req-ours", {"flow_run_id": str(crash_me.id)}, error=timeout),
    ]
    for body in bodies:
        sqs.send_message(QueueUrl=queue_url, MessageBody=body)
    capture = Capture()
    logger = logging.getLogger(f"test-reconcile-{uuid.uuid4().hex[:6]}")
    logger.addHandler(capture)
    logger.setLevel(logging.INFO)
    queue = pool_queue(sqs, queue_url, pool)

    summary = reconcile(queue, logger)

    assert summary.crashed == [str(crash_me.id)]
    assert read_run(crash_me.id).state.type.value == "CRASHED"
    for run in (other_pools, poolless, ours):
        assert read_run(run.id).state.type.value == "RUNNING"
        assert read_run(run.id).infrastructure_pid == run.infrastructure_pid
    foreign = len(bodies) - 1
    assert summary.deleted == 1 and summary.left == foreign
    # A foreign record's request is not one of ours: kill_infrastructure must not believe it ended.
    assert summary.request_ids == {"req-ours"}
    left_lines = [r for r in capture.records if "is not this pool's" in r]
    assert len(left_lines) == foreign
    assert all("\n" not in r for r in left_lines)
    joined = "\n".join(left_lines)
    assert f"is not of pool '{pool}'" in joined and "(no work pool)" in joined
    for part in ("function", "account", "region", "partition", "version or alias"):
        assert f"of another {part}" in joined
    assert "the record names no Lambda function ARN" in joined
    # Left on the queue (never deleted: it may be another worker's), hidden, not looped on.
    assert messages_left(sqs, queue_url) == foreign
    again = reconcile(queue, logger)
    assert again.left == 0 and again.crashed == []
    assert len([r for r in capture.records if "is not this pool's" in r]) == foreign


@pytest.mark.parametrize(
    ("pool_function", "record_arn"),
    [
        ("runner", f"{FUNCTION}:$LATEST"),  # the pool names its function by name
        (f"{FUNCTION}:prod", f"{FUNCTION}:prod"),  # an alias
        ("123456789012:function:runner:7", f"{FUNCTION}:7"),  # a partial ARN with a version
        (f"{FUNCTION}:$LATEST", FUNCTION),  # an unqualified record is $LATEST
    ],
)
def test_a_pool_names_its_function_in_any_form_lambda_accepts(
    prefect_harness, sqs, queue_url, pool_function, record_arn
):
    pool, deployment_id = make_pool()
    run = make_run(deployment_id, "RUNNING", "req-q")
    body = destination_record("req-q", {"flow_run_id": str(run.id)}, function_arn=record_arn)
    sqs.send_message(QueueUrl=queue_url, MessageBody=body)
    summary = reconcile(pool_queue(sqs, queue_url, pool, function=pool_function))
    assert summary.crashed == [str(run.id)]
    assert messages_left(sqs, queue_url) == 0


def test_the_worker_leaves_runs_of_other_pools_alone(
    prefect_harness, moto_server, sqs, queue_url, monkeypatch
):
    """Through the worker: its pool's name and function are what the records are held to."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    pool, deployment_id = make_pool(options={"invoke_failure_queue_url": queue_url})
    _, other_deployment = make_pool()
    mine = make_run(deployment_id, "RUNNING", "req-mine")
    theirs = make_run(other_deployment, "RUNNING", "req-theirs")
    for request_id, run in (("req-mine", mine), ("req-theirs", theirs)):
        sqs.send_message(
            QueueUrl=queue_url, MessageBody=destination_record(request_id, {"flow_run_id": str(run.id)})
        )

    async def poll():
        async with LambdaWorker(work_pool_name=pool, create_pool_if_not_found=False) as worker:
            return await worker.reconcile_invoke_failures()

    summary = run_async(poll())
    assert summary.crashed == [str(mine.id)]
    assert read_run(theirs.id).state.type.value == "RUNNING"


def test_the_worker_reconciles_each_polling_round_with_the_pools_block_credentials(
    prefect_harness, moto_server, sqs, logs, queue_url, log_group, monkeypatch
):
    """The pool's queue URL and AWS Credentials block (explicit keys, moto's endpoint) reach the clients."""
    from prefect_aws import AwsCredentials

    import flows.io.aws

    block = AwsCredentials(
        aws_access_key_id=BLOCK_KEY,
        aws_secret_access_key="block-secret",
        region_name="us-east-1",
        aws_client_parameters={"endpoint_url": moto_server},
    )
    block_id = block.save(f"lambda-{uuid.uuid4().hex[:8]}")
    pool, deployment_id = make_pool(
        options={"invoke_failure_queue_url": queue_url, "log_group_name": log_group},
        aws_credentials={"$ref": {"block_document_id": str(block_id)}},
    )
    run = make_run(deployment_id, "RUNNING", "req-oom")
    write_request_logs(
        logs, log_group, "req-oom", ["allocating", "Runtime exited with error: signal: killed"]
    )
    oom = ("Runtime.OutOfMemory", "Runtime exited with error: signal: killed")
    sqs.send_message(
        QueueUrl=queue_url, MessageBody=destination_record("req-oom", {"flow_run_id": str(run.id)}, error=oom)
    )

    made = []
    real = flows.io.aws.aws_client

    def spy(service, **kwargs):
        client = real(service, **kwargs)
        made.append((service, client._request_signer._credentials.access_key, client.meta.endpoint_url))
        return client

    monkeypatch.setattr(flows.io.aws, "aws_client", spy)

    async def poll():
        async with LambdaWorker(work_pool_name=pool, create_pool_if_not_found=False) as worker:
            await worker.get_and_submit_flow_runs()
            return worker._failed_request_ids

    assert "req-oom" in run_async(poll())
    crashed = read_run(run.id)
    assert crashed.state.type.value == "CRASHED"
    assert "(Runtime.OutOfMemory; retries exhausted after 1 attempt)" in crashed.state.message
    assert "allocating" in run_logs(run.id, "allocating")
    assert {(service, key, endpoint) for service, key, endpoint in made} == {
        ("sqs", BLOCK_KEY, moto_server),
        ("logs", BLOCK_KEY, moto_server),
    }


def test_inside_the_function_the_queue_comes_from_its_env_and_the_default_chain(
    prefect_harness, moto_server, sqs, queue_url, monkeypatch
):
    import flows.io.aws

    pool, deployment_id = make_pool()  # no queue in the pool, an empty credentials block
    run = make_run(deployment_id, "RUNNING", "req-env")
    sqs.send_message(
        QueueUrl=queue_url,
        MessageBody=destination_record(
            "req-env", {"flow_run_id": str(run.id)}, error=("Runtime.ExitError", "boom")
        ),
    )
    monkeypatch.setenv(ENV_INVOKE_FAILURE_QUEUE_URL, queue_url)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)  # boto3's own setting: the default chain's endpoint
    keys = []
    real = flows.io.aws.aws_client

    def spy(service, **kwargs):
        client = real(service, **kwargs)
        keys.append(client._request_signer._credentials.access_key)
        return client

    monkeypatch.setattr(flows.io.aws, "aws_client", spy)

    async def poll():
        async with LambdaWorker(work_pool_name=pool, create_pool_if_not_found=False) as worker:
            return await worker.reconcile_invoke_failures()

    summary = run_async(poll())
    assert summary is not None and summary.crashed == [str(run.id)]
    assert set(keys) == {"testing"}  # conftest's AWS_ACCESS_KEY_ID: boto3's default chain
    assert "function's logs of request req-env could not be read" in run_logs(run.id, "could not be read")


def test_without_a_queue_reconciliation_is_skipped_quietly(prefect_harness, monkeypatch):
    monkeypatch.delenv(ENV_INVOKE_FAILURE_QUEUE_URL, raising=False)
    pool, _ = make_pool()

    async def poll():
        async with LambdaWorker(work_pool_name=pool, create_pool_if_not_found=False) as worker:
            return await worker.reconcile_invoke_failures()

    assert run_async(poll()) is None


def test_a_template_with_a_credentials_block_renders(prefect_harness, moto_server):
    from prefect_aws import AwsCredentials

    block_id = AwsCredentials(
        aws_access_key_id=BLOCK_KEY, aws_secret_access_key="s", region_name="eu-west-1"
    ).save(f"lambda-{uuid.uuid4().hex[:8]}")
    template = base_job_template_for(
        FUNCTION, invoke_failure_queue_url="https://sqs.eu-west-1.amazonaws.com/1/q"
    )
    template["variables"]["properties"]["aws_credentials"]["default"] = {
        "$ref": {"block_document_id": str(block_id)}
    }

    async def render(values):
        return await LambdaJobConfiguration.from_template_and_values(template, values)

    configuration = run_async(render({}))
    assert configuration.aws_credentials.aws_access_key_id == BLOCK_KEY
    assert configuration.aws_credentials.aws_secret_access_key.get_secret_value() == "s"
    assert configuration.invoke_failure_queue_url == "https://sqs.eu-west-1.amazonaws.com/1/q"
    # A deployment may give its own (inline) credentials; no block means an empty one (the default chain).
    inline = run_async(render({"aws_credentials": {"profile_name": "ops"}}))
    assert inline.aws_credentials.profile_name == "ops" and inline.aws_credentials.aws_access_key_id is None
    plain = run_async(LambdaJobConfiguration.from_template_and_values(base_job_template_for(FUNCTION), {}))
    assert plain.aws_credentials.aws_access_key_id is None and plain.aws_credentials.profile_name is None


# --------------------------------------------------------------------------- kill_infrastructure


def _configuration(moto_server, log_group, flow_run):
    from prefect_aws import AwsCredentials

    configuration = LambdaJobConfiguration(
        function_name=FUNCTION,
        log_group_name=log_group,
        aws_credentials=AwsCredentials(
            aws_access_key_id=BLOCK_KEY,
            aws_secret_access_key="s",
            region_name="us-east-1",
            aws_client_parameters={"endpoint_url": moto_server},
        ),
    )
    configuration.prepare_for_flow_run(flow_run)
    return configuration


def _kill(pool, configuration, request_id, grace_seconds=5, failed=()):
    async def go():
        async with LambdaWorker(work_pool_name=pool, create_pool_if_not_found=False) as worker:
            worker._failed_request_ids |= set(failed)
            started = time.monotonic()
            await worker.kill_infrastructure(request_id, configuration, grace_seconds)
            return time.monotonic() - started

    return run_async(go())


def test_kill_of_an_ended_invocation_raises_infrastructure_not_found(
    prefect_harness, moto_server, logs, log_group
):
    from prefect.exceptions import InfrastructureNotFound

    pool, deployment_id = make_pool()
    run = make_run(deployment_id, "CANCELLING", "req-done")
    write_request_logs(logs, log_group, "req-done", ["finished"])
    with pytest.raises(InfrastructureNotFound, match="req-done"):
        _kill(pool, _configuration(moto_server, log_group, run), "req-done")
    # Its failure record was seen: ended too, whatever the logs say.
    with pytest.raises(InfrastructureNotFound, match="failure record"):
        _kill(pool, _configuration(moto_server, log_group, run), "req-other", failed={"req-other"})


def test_the_base_worker_then_marks_a_pending_run_cancelled(prefect_harness, moto_server, logs, log_group):
    """3.8.8's `_cancel_run` (a never-started run): InfrastructureNotFound -> CANCELLED."""
    pool, deployment_id = make_pool(options={"log_group_name": log_group})
    run = make_run(deployment_id, "CANCELLING", "req-init-failed")
    write_request_logs(logs, log_group, "req-init-failed", ["could not load flow"])

    from prefect_aws import AwsCredentials

    block_id = AwsCredentials(
        aws_access_key_id=BLOCK_KEY,
        aws_secret_access_key="s",
        region_name="us-east-1",
        aws_client_parameters={"endpoint_url": moto_server},
    ).save(f"lambda-{uuid.uuid4().hex[:8]}")
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        template = client.read_work_pool(pool).base_job_template
        template["variables"]["properties"]["aws_credentials"]["default"] = {
            "$ref": {"block_document_id": str(block_id)}
        }
        from prefect.client.schemas.actions import WorkPoolUpdate

        client.update_work_pool(pool, WorkPoolUpdate(base_job_template=template))

    async def go():
        async with LambdaWorker(work_pool_name=pool, create_pool_if_not_found=False) as worker:
            await worker._cancel_run(run.id)

    run_async(go())
    assert read_run(run.id).state.type.value == "CANCELLED"


def test_kill_of_a_live_invocation_waits_for_the_function_to_stop_the_run(
    prefect_harness, moto_server, logs, log_group
):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import State, StateType

    pool, deployment_id = make_pool()
    run = make_run(deployment_id, "CANCELLING", "req-live")
    write_request_logs(logs, log_group, "req-live", ["working"], ended=False)

    def function_sees_cancelling():
        time.sleep(1.5)
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(run.id, State(type=StateType.CANCELLED), force=True)

    stopper = threading.Thread(target=function_sees_cancelling)
    stopper.start()
    waited = _kill(pool, _configuration(moto_server, log_group, run), "req-live", grace_seconds=20)
    stopper.join()
    assert 1.0 < waited < 10
    # Still CANCELLING after the grace period: it returns all the same (Prefect then marks it).
    still = make_run(deployment_id, "CANCELLING", "req-live")
    waited = _kill(pool, _configuration(moto_server, log_group, still), "req-live", grace_seconds=2)
    assert 1.5 < waited < 6
    assert read_run(still.id).state.type.value == "CANCELLING"


def test_kill_when_the_logs_cannot_be_read_says_so_and_returns(prefect_harness, moto_server):
    pool, deployment_id = make_pool()
    run = make_run(deployment_id, "CANCELLING", "req-x")
    configuration = _configuration(moto_server, "/aws/lambda/no-such-group", run)
    assert _kill(pool, configuration, "req-x", grace_seconds=30) < 5
    assert "Cannot tell whether Lambda request req-x is still running" in run_logs(run.id, "Cannot tell")
