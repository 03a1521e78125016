"""The function's role, and the worker's minimal policy, enforced (issue 28, part 2).

moto with IAM on (`INITIAL_NO_AUTH_ACTION_COUNT` 0 inside `enforcing()`), the decision made the way
AWS makes it (tests/iam_enforcement.py says what moto 5.2 gets wrong and what replaces it). The role
is created with exactly the documents the Pulumi program emits (work-pool stack, under its mocks;
only the secret's ARN is moto's, which assigns its own suffix), assumed through STS, and each entry
path's AWS calls run through the project's own code with those credentials, as Lambda passes them
(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN).

Not evaluated here: `kms:ViaService` (the SSE-KMS stack; moto's S3 never calls KMS with the caller's
credentials), and the S3 notification queue policy (S3 itself sends, not the role).
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import zipfile

import boto3
import pytest
from botocore.exceptions import ClientError
from enforced_role import add_resource_policies, assume, create_role, trust_policy
from iam_enforcement import Enforcer, Request, decide, enforcing, installed
from stack_policies import emitted_policies, stack, worker_policy

from flows.io.store import S3Store

REGION = "us-east-1"
OTHER_BUCKET = "someone-elses-bucket"
OTHER_FUNCTION = "someone-elses-function"


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("handler.py", "def handler(event, context):\n    return {}\n")
    return buf.getvalue()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from moto import mock_aws

    mocks = stack(tmp_path_factory.mktemp("enforced"), prefect=True)
    emitted = emitted_policies(mocks)
    bucket = mocks.one("aws:s3/bucket:Bucket").id
    queues = {q.name: q for q in mocks.of_type("aws:sqs/queue:Queue")}
    notifications = queues["quest-dev-notifications-queue"].outputs["name"]
    failures = queues["quest-dev-runner-invoke-failures"].outputs["name"]
    role_name = mocks.one("aws:iam/role:Role").outputs["name"]
    fn = mocks.one("aws:lambda/function:Function")
    group = mocks.one("aws:cloudwatch/logGroup:LogGroup").outputs["name"]
    mock_secret = mocks.one("aws:secretsmanager/secret:Secret")

    with mock_aws(config={"lambda": {"use_docker": False}}), installed(Enforcer()) as enforcer:
        s3 = boto3.client("s3", region_name=REGION)
        sqs = boto3.client("sqs", region_name=REGION)
        for b in (bucket, OTHER_BUCKET):
            s3.create_bucket(Bucket=b)
        urls = {
            name: sqs.create_queue(QueueName=name)["QueueUrl"]
            for name in (notifications, failures, "not-the-stacks-queue")
        }
        sm = boto3.client("secretsmanager", region_name=REGION)
        secret_arn = sm.create_secret(Name=mock_secret.outputs["name"], SecretString="pnu_key")["ARN"]
        other_secret = sm.create_secret(Name="someone-elses-secret", SecretString="x")["ARN"]
        logs = boto3.client("logs", region_name=REGION)
        logs.create_log_group(logGroupName=group)
        logs.create_log_stream(logGroupName=group, logStreamName="2026/01/01/[$LATEST]abc")
        logs.create_log_group(logGroupName="/aws/lambda/someone-else")
        logs.create_log_stream(logGroupName="/aws/lambda/someone-else", logStreamName="s")

        def concrete(text: str) -> str:
            return text.replace(mock_secret.arn, secret_arn)

        iam_client = boto3.client("iam", region_name=REGION)
        trust = trust_policy(emitted, mocks.one("aws:iam/role:Role").name)
        role_arn = create_role(iam_client, role_name, trust, emitted, concrete)
        add_resource_policies(enforcer, emitted, concrete)
        lam = boto3.client("lambda", region_name=REGION)
        for name in (fn.outputs["name"], OTHER_FUNCTION):
            lam.create_function(
                FunctionName=name,
                Runtime="python3.12",
                Role=role_arn,
                Handler="handler.handler",
                Code={"ZipFile": _zip()},
            )
        create_role(iam_client, "worker", trust, [worker_policy(mocks)])
        sts = boto3.client("sts", region_name=REGION)
        yield {
            "enforcer": enforcer,
            "bucket": bucket,
            "urls": urls,
            "notifications": notifications,
            "failures": failures,
            "function_arn": fn.arn,
            "group": group,
            "secret_arn": secret_arn,
            "other_secret": other_secret,
            "trust": trust,
            "role_arn": role_arn,
            "function": assume(sts, role_name),
            "worker": assume(sts, "worker"),
        }


@pytest.fixture
def as_role(world, monkeypatch):
    """Run as the role the test names, with the credentials Lambda would pass in the environment."""

    def use(name: str) -> Enforcer:
        for key, value in world[name].items():
            monkeypatch.setenv(key, value)
        world["enforcer"].decisions.clear()
        return world["enforcer"]

    return use


def client(service: str):
    return boto3.session.Session().client(service, region_name=REGION)


def test_only_lambda_may_assume_the_role(world):
    assume = Request("sts:AssumeRole", world["role_arn"])
    trust = [world["trust"]]
    assert decide([], trust, assume, "service:lambda.amazonaws.com")[0]
    assert not decide([], trust, assume, "arn:aws:iam::123456789012:user/anyone")[0]
    assert not decide([], trust, assume, "service:ec2.amazonaws.com")[0]


# --------------------------------------------------------------------------- the function's role


def _store_paths(world) -> None:
    """The mirror, the snapshot and the reports through the project's S3 store."""
    mib = 1024 * 1024
    store = S3Store(world["bucket"], client=client("s3"), multipart_threshold=5 * mib, part_size=5 * mib)
    assert store.head("bls/pr/pr.data.0.Current") is None  # 404, not 403: the role may list bls/
    with store.lease("bls/pr/", 60):
        store.put_bytes("bls/pr/pr.data.0.Current", b"series_id\tyear\n")
        store.put_stream("bls/pr/pr.series", iter([b"x" * 6 * mib]))  # multipart
    assert store.list_keys("bls/pr/") and store.head("bls/pr/pr.series").size == 6 * mib
    store.cleanup_stale("bls/pr/", 3600)
    store.delete("bls/pr/pr.series")
    store.put_bytes("population/20300101T000000Z.json", b'{"data": []}')
    assert store.list_keys("population/") == ["population/20300101T000000Z.json"]
    store.put_bytes("reports/20300101T000000Z/population_stats.json", b"{}")
    assert store.head("reports/20300101T000000Z/missing.json") is None


def _sqs_batch(world) -> None:
    """The event source mapping's calls (it uses the function's role), then the batch's reports."""
    sqs = client("sqs")
    url = world["urls"][world["notifications"]]
    sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    for m in messages:
        sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])


def _deliver(world) -> None:
    sqs = client("sqs")
    url = world["urls"][world["failures"]]
    record = {
        "version": "1.0",
        "requestContext": {
            "requestId": "req-1",
            "functionArn": f"{world['function_arn']}:$LATEST",
            "condition": "RetriesExhausted",
            "approximateInvokeCount": 1,
        },
        "requestPayload": {"poll_work_pool": "quest-lambda"},
        "responseContext": {"statusCode": 200, "functionError": "Unhandled"},
        "responsePayload": {"errorMessage": "boom"},
    }
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(record))  # settled: deleted
    sqs.send_message(QueueUrl=url, MessageBody="not a record")  # left: hidden


def _poll_path(world, deliver: bool = True) -> None:
    """poll_work_pool: Lambda delivers failure records with the role; the round reads them back,
    hides what it leaves and deletes what it settled; the crashed request's logs; invoke itself."""
    from flows.io.lambda_logs import invocation_ended, request_lines
    from flows.reconcile import FailureQueue, reconcile_invoke_failures
    from flows.worker import LambdaJobConfiguration, _invoke

    sqs = client("sqs")
    url = world["urls"][world["failures"]]
    if deliver:  # Lambda's delivery to the on-failure destination, with the function's role
        _deliver(world)
    queue = FailureQueue(
        sqs=sqs, queue_url=url, work_pool_name="quest-lambda", function_name=world["function_arn"]
    )
    summary = asyncio.run(reconcile_invoke_failures(None, queue, logging.getLogger("t"), wait_seconds=0))
    assert summary.deleted == 1 and summary.left == 1
    logs = client("logs")
    invocation_ended(logs, world["group"], "req-1")
    request_lines(logs, world["group"], "req-1")
    config = LambdaJobConfiguration(
        function_name=world["function_arn"], region=REGION, invocation_type="Event"
    )
    response, _ = _invoke(config, b'{"flow_run_id": "0b9f6d2e-5c1a-4e8b-9f3d-2a7c6e1b4d80"}')
    assert response["StatusCode"] == 202


def _secret(world) -> None:
    """A work-pool stack's function reads its Prefect API key (flow_run.load_prefect_api_key)."""
    value = client("secretsmanager").get_secret_value(SecretId=world["secret_arn"])["SecretString"]
    assert value == "pnu_key"


@pytest.mark.parametrize("path", [_store_paths, _sqs_batch, _poll_path, _secret])
def test_every_entry_paths_calls_are_allowed(world, as_role, path):
    enforcer = as_role("function")
    with enforcing():
        path(world)
    assert enforcer.decisions, "nothing was authorised: IAM was not on"
    assert enforcer.denied() == []


def _denied(call) -> ClientError:
    with enforcing(), pytest.raises(ClientError) as raised:
        call()
    # moto answers every service's denial in its query-protocol XML: JSON services parse it as "403".
    code = raised.value.response["Error"]["Code"]
    assert code in ("AccessDenied", "AccessDeniedException") or "<Code>AccessDenied</Code>" in str(
        raised.value
    ), raised.value
    return raised.value


NEGATIVE = {
    "write outside the data prefixes": lambda w: client("s3").put_object(
        Bucket=w["bucket"], Key="lambda-code/runner.zip", Body=b"x"
    ),
    "list outside the data prefixes": lambda w: client("s3").list_objects_v2(
        Bucket=w["bucket"], Prefix="lambda-code/"
    ),
    "list the whole bucket": lambda w: client("s3").list_objects_v2(Bucket=w["bucket"]),
    "another bucket": lambda w: client("s3").put_object(Bucket=OTHER_BUCKET, Key="bls/x", Body=b"x"),
    "delete the reports": lambda w: client("s3").delete_object(
        Bucket=w["bucket"], Key="reports/20300101T000000Z/population_stats.json"
    ),
    "delete a snapshot": lambda w: client("s3").delete_object(
        Bucket=w["bucket"], Key="population/20300101T000000Z.json"
    ),
    "another secret": lambda w: client("secretsmanager").get_secret_value(SecretId=w["other_secret"]),
    "invoke another function": lambda w: client("lambda").invoke(
        FunctionName=OTHER_FUNCTION, InvocationType="Event", Payload=b"{}"
    ),
    "send to a queue not the stack's": lambda w: client("sqs").send_message(
        QueueUrl=w["urls"]["not-the-stacks-queue"], MessageBody="x"
    ),
    "send to the notification queue": lambda w: client("sqs").send_message(
        QueueUrl=w["urls"][w["notifications"]], MessageBody="x"
    ),
    "read another function's logs": lambda w: client("logs").filter_log_events(
        logGroupName="/aws/lambda/someone-else"
    ),
}


@pytest.mark.parametrize("what", sorted(NEGATIVE))
def test_the_function_is_denied(world, as_role, what):
    as_role("function")
    _denied(lambda: NEGATIVE[what](world))


def test_a_missing_key_outside_the_listed_prefixes_is_403_not_404(world, as_role):
    """AWS's rule: without s3:ListBucket for it, a missing key is Access Denied, not Not Found."""
    as_role("function")
    _denied(lambda: client("s3").get_object(Bucket=world["bucket"], Key="bls"))


# --------------------------------------------------------------------------- the worker's minimal policy


def test_the_workers_calls_are_allowed(world, as_role):
    as_role("function")
    with enforcing():
        _deliver(world)
    enforcer = as_role("worker")
    with enforcing():
        _poll_path(world, deliver=False)
    assert enforcer.decisions and enforcer.denied() == []


WORKER_NEGATIVE = {
    "the bucket": lambda w: client("s3").list_objects_v2(Bucket=w["bucket"], Prefix="bls/"),
    "the secret": lambda w: client("secretsmanager").get_secret_value(SecretId=w["secret_arn"]),
    "invoke another function": NEGATIVE["invoke another function"],
    "send to the on-failure queue": lambda w: client("sqs").send_message(
        QueueUrl=w["urls"][w["failures"]], MessageBody="x"
    ),
    "the notification queue": lambda w: client("sqs").receive_message(QueueUrl=w["urls"][w["notifications"]]),
    "read another function's logs": NEGATIVE["read another function's logs"],
}


@pytest.mark.parametrize("what", sorted(WORKER_NEGATIVE))
def test_the_worker_is_denied(world, as_role, what):
    as_role("worker")
    _denied(lambda: WORKER_NEGATIVE[what](world))
