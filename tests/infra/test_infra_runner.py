"""Runner component under Pulumi mocks: function, role, secret, SQS mapping, schedules."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pulumi
import pytest
from pulumi_mocks import ACCOUNT, install, is_secret_value, policy_doc, run

from flows.core.names import (
    DLQ_RETENTION_SECONDS,
    ENV_CONTACT,
    ENV_FUNCTION_TIMEOUT_SECONDS,
    ENV_INVOKE_FAILURE_QUEUE_URL,
    ENV_PREFECT_API_KEY_SECRET_ARN,
    ENV_STORE,
    HEARTBEAT_FREQUENCY_SECONDS,
    INVOKE_MAX_EVENT_AGE_SECONDS,
    INVOKE_MAX_RETRY_ATTEMPTS,
)
from flows.runtime.handler import event_kind
from infra_pulumi.package import DIRECT_UPLOAD_LIMIT_BYTES, describe_zip
from infra_pulumi.runner import (
    CODE_PREFIX,
    HANDLER,
    RUNTIME,
    Runner,
    RunnerArgs,
    RunnerSchedule,
    RunnerScheduleArgs,
)

BUCKET_ARN = "arn:aws:s3:::quest-data"
QUEUE_ARN = f"arn:aws:sqs:us-east-1:{ACCOUNT}:quest-queue"
API_KEY = "pnu_this-is-the-secret-api-key-0123456789"


@pytest.fixture
def package(tmp_path: Path):
    path = tmp_path / "runner.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("flows/__init__.py", "")
    return describe_zip(path)


def _settings(**overrides) -> dict:
    """The runner's plain settings (the non-wiring part of `RunnerArgs`)."""
    values = dict(
        contact="me@example.com",
        bls_surveys=["pr", "ce"],
        timeout_seconds=300,
        memory_mb=2048,
        batch_size=4,
        batching_window_seconds=2,
        log_retention_days=30,
    )
    values.update(overrides)
    return values


def _runner(package, settings=None, api_key=None, **kwargs):
    config = {"contact": "me@example.com"}
    mocks = install({**config, "prefectApiKey": API_KEY} if api_key else config, ["prefectApiKey"])

    def program():
        key = pulumi.Config().require_secret("prefectApiKey") if api_key else None
        args = RunnerArgs(
            package=package,
            bucket_name="quest-data",
            bucket_arn=BUCKET_ARN,
            queue_arn=QUEUE_ARN,
            region="us-east-1",
            prefect_api_key=key,
            **(settings or _settings()),
            **kwargs,
        )
        runner = Runner("run", args)
        return pulumi.Output.all(runner.function_arn, runner.function_name, runner.secret_arn)

    return mocks, run(program)


def _env(mocks) -> dict[str, str]:
    return mocks.one("aws:lambda/function:Function").inputs["environment"]["variables"]


def test_function_runs_the_shared_handler_with_the_flows_settings(package):
    mocks, (arn, name, secret_arn) = _runner(package)
    fn = mocks.one("aws:lambda/function:Function")
    assert fn.inputs["runtime"] == RUNTIME == "python3.12"
    assert fn.inputs["handler"] == HANDLER == "flows.runtime.handler.handler"
    assert fn.inputs["timeout"] == 300 and fn.inputs["memorySize"] == 2048
    assert fn.inputs["sourceCodeHash"] == package.source_code_hash
    assert "code" in fn.inputs and "s3Key" not in fn.inputs  # small: direct upload
    assert arn == fn.arn and name == fn.outputs["name"] and secret_arn is None
    env = _env(mocks)
    assert env[ENV_STORE] == "s3://quest-data"
    assert env[ENV_CONTACT] == "me@example.com"
    assert env["QUEST_BLS_SURVEYS"] == "pr,ce"
    assert env["PREFECT_HOME"] == "/tmp/prefect" and env["DO_NOT_TRACK"] == "1"
    assert "PREFECT_API_URL" not in env and ENV_PREFECT_API_KEY_SECRET_ARN not in env
    assert env[ENV_FUNCTION_TIMEOUT_SECONDS] == "300"
    # Not the work-pool path: no heartbeats, no poll reading the failure destination, nothing
    # reserved. (Its async invokes have a destination all the same: test_infra_async_invokes.py.)
    assert "PREFECT_FLOWS_HEARTBEAT_FREQUENCY" not in env and ENV_INVOKE_FAILURE_QUEUE_URL not in env
    assert fn.inputs.get("reservedConcurrentExecutions") is None
    # The variables are the ones flows/settings.py reads.
    from flows.settings import Settings

    quest = {k: v for k, v in env.items() if k.startswith("QUEST_")}
    settings = Settings(_env_file=None, **{k.removeprefix("QUEST_").lower(): v for k, v in quest.items()})
    assert settings.store == "s3://quest-data" and settings.bls_surveys == ["pr", "ce"]

    group = mocks.one("aws:cloudwatch/logGroup:LogGroup")
    assert group.inputs["retentionInDays"] == 30
    assert fn.inputs["loggingConfig"]["logGroup"] == group.outputs["name"]


def test_role_policy_is_least_privilege_and_precedes_the_function(package):
    mocks, _ = _runner(package)
    role = mocks.one("aws:iam/role:Role")
    (assume,) = json.loads(role.inputs["assumeRolePolicy"])["Statement"]
    assert assume["Principal"] == {"Service": "lambda.amazonaws.com"}
    (policy,) = mocks.of_type("aws:iam/rolePolicy:RolePolicy")
    assert policy.inputs["role"] == role.id
    doc = policy_doc(policy)
    for stmt in doc["Statement"]:
        assert stmt["Effect"] == "Allow"
        assert all(a != "*" and not a.endswith(":*") for a in stmt["Action"])
        assert "*" not in stmt["Resource"]
    resources = {r for s in doc["Statement"] for r in s["Resource"]}
    group_arn = mocks.one("aws:cloudwatch/logGroup:LogGroup").outputs["arn"]
    failures_arn = mocks.one("aws:sqs/queue:Queue").arn  # the async invokes' destination
    assert resources == {
        f"{BUCKET_ARN}/bls/*",
        f"{BUCKET_ARN}/population/*",
        f"{BUCKET_ARN}/reports/*",
        BUCKET_ARN,
        QUEUE_ARN,
        f"{group_arn}:*",
        failures_arn,
    }
    assert mocks.depends_on("run-function", "run-policy")
    assert mocks.depends_on("run-sqs", "run-policy")


def test_sqs_mapping_reports_batch_item_failures(package):
    mocks, (arn, _name, _secret) = _runner(package)
    mapping = mocks.one("aws:lambda/eventSourceMapping:EventSourceMapping").inputs
    assert mapping["functionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["eventSourceArn"] == QUEUE_ARN and mapping["functionName"] == arn
    assert mapping["batchSize"] == 4 and mapping["maximumBatchingWindowInSeconds"] == 2
    # Explicit (the SQS minimum), since the work-pool function's reserved concurrency counts it.
    assert mapping["scalingConfig"] == {"maximumConcurrency": 2}


def test_api_key_lives_in_a_secret_only_the_role_reads(package):
    mocks, (_arn, _name, secret_arn) = _runner(
        package, _settings(prefect_api_url="https://prefect.example/api"), api_key=True
    )
    secret = mocks.one("aws:secretsmanager/secret:Secret")
    assert secret_arn == secret.arn
    env = _env(mocks)
    assert env[ENV_PREFECT_API_KEY_SECRET_ARN] == secret.arn
    assert env["PREFECT_API_URL"] == "https://prefect.example/api"
    # Prefect's flow-run heartbeats, which the zombie-run automation watches.
    assert env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == str(HEARTBEAT_FREQUENCY_SECONDS) == "30"
    version = mocks.one("aws:secretsmanager/secretVersion:SecretVersion")
    assert version.inputs["secretId"] == secret.id
    # It reaches the engine marked secret (encrypted in the state), never as a plain string.
    assert is_secret_value(version.inputs["secretString"])
    assert version.inputs["secretString"]["value"] == API_KEY
    # The value appears nowhere else: not in the environment, not in any policy or other input.
    for resource in mocks.resources:
        if resource is not version:
            assert API_KEY not in json.dumps(resource.inputs, default=str), resource.name
    role = mocks.one("aws:iam/role:Role")
    (deny,) = policy_doc(mocks.one("aws:secretsmanager/secretPolicy:SecretPolicy"))["Statement"]
    assert deny["Condition"]["StringNotEquals"]["aws:PrincipalArn"] == role.arn
    by_sid = {s["Sid"]: s for s in policy_doc(mocks.one("aws:iam/rolePolicy:RolePolicy"))["Statement"]}
    assert by_sid["ReadPrefectApiKey"]["Resource"] == [secret.arn]
    assert mocks.depends_on("run-function", "run-prefect-api-key-value")


def test_large_package_goes_through_an_s3_object(package):
    from dataclasses import replace

    big = replace(package, zipped_bytes=DIRECT_UPLOAD_LIMIT_BYTES + 1)
    mocks, _ = _runner(big)
    obj = mocks.one("aws:s3/bucketObjectv2:BucketObjectv2")
    assert obj.inputs["bucket"] == "quest-data"
    assert obj.inputs["key"] == f"{CODE_PREFIX}runner-{package.sha256[:16]}.zip"
    assert not obj.inputs["key"].startswith(("bls/", "population/", "reports/"))  # role cannot touch it
    fn = mocks.one("aws:lambda/function:Function").inputs
    assert fn["s3Bucket"] == "quest-data" and fn["s3Key"] == obj.inputs["key"] and "code" not in fn


def test_work_pool_path_may_invoke_only_itself(package):
    mocks, (arn, _name, _secret) = _runner(package, _settings(invoke_self=True))
    policies = {p.name: policy_doc(p) for p in mocks.of_type("aws:iam/rolePolicy:RolePolicy")}
    (stmt,) = policies["run-invoke-self"]["Statement"]
    assert stmt["Action"] == ["lambda:InvokeFunction"] and stmt["Resource"] == [arn]


@pytest.mark.parametrize("payload", [None, {"poll_work_pool": "quest-lambda"}])
def test_schedule_invokes_the_function_with_a_routable_event(payload):
    mocks = install({"contact": "me@example.com"})
    fn_arn = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:runner"
    run(
        lambda: (
            RunnerSchedule(
                "sched",
                RunnerScheduleArgs(
                    function_arn=fn_arn, schedule_expression="cron(0 6 * * ? *)", payload=payload
                ),
            ).rule_arn
        )
    )
    rule = mocks.one("aws:cloudwatch/eventRule:EventRule")
    assert rule.inputs["scheduleExpression"] == "cron(0 6 * * ? *)"
    permission = mocks.one("aws:lambda/permission:Permission").inputs
    assert permission["principal"] == "events.amazonaws.com" and permission["sourceArn"] == rule.arn
    assert permission["function"] == fn_arn and permission["action"] == "lambda:InvokeFunction"
    target = mocks.one("aws:cloudwatch/eventTarget:EventTarget").inputs
    assert target["arn"] == fn_arn and target["rule"] == rule.outputs["name"]
    if payload is None:
        # EventBridge delivers its own Scheduled Event, which the handler routes to ingest.
        assert "input" not in target
        assert event_kind({"source": "aws.events", "detail-type": "Scheduled Event"}) == "ingest"
    else:
        assert json.loads(target["input"]) == payload
        assert event_kind(json.loads(target["input"])) == "poll"


def _by_sid(mocks, policy_name: str = "run-policy") -> dict[str, dict]:
    (policy,) = [p for p in mocks.of_type("aws:iam/rolePolicy:RolePolicy") if p.name == policy_name]
    return {s["Sid"]: s for s in policy_doc(policy)["Statement"]}


def test_work_pool_path_sends_failed_async_invokes_to_a_destination_queue(package):
    mocks, (arn, name, _secret) = _runner(package, _settings(invoke_self=True, reserved_concurrency=13))
    (queue,) = mocks.of_type("aws:sqs/queue:Queue")
    assert queue.name == "run-invoke-failures"
    assert queue.inputs["sqsManagedSseEnabled"] is True and "kmsMasterKeyId" not in queue.inputs
    assert queue.inputs["messageRetentionSeconds"] == DLQ_RETENTION_SECONDS == 14 * 24 * 3600
    assert "redrivePolicy" not in queue.inputs  # standard queue, itself the end of the line
    assert "fifoQueue" not in queue.inputs

    config = mocks.one("aws:lambda/functionEventInvokeConfig:FunctionEventInvokeConfig").inputs
    assert config["functionName"] == name
    assert config["maximumRetryAttempts"] == INVOKE_MAX_RETRY_ATTEMPTS == 0
    assert config["maximumEventAgeInSeconds"] == INVOKE_MAX_EVENT_AGE_SECONDS == 3600
    assert config["destinationConfig"] == {"onFailure": {"destination": queue.arn}}
    assert "qualifier" not in config  # the unqualified function the worker invokes
    assert mocks.depends_on("run-async-invokes", "run-policy")  # Lambda checks the role on save

    env = _env(mocks)
    assert env[ENV_INVOKE_FAILURE_QUEUE_URL] == queue.id  # the queue URL
    fn = mocks.one("aws:lambda/function:Function")
    assert fn.inputs["reservedConcurrentExecutions"] == 13


def test_work_pool_path_role_grants_exactly_the_destination_and_its_own_logs(package):
    mocks, (arn, _name, _secret) = _runner(package, _settings(invoke_self=True))
    queue = mocks.one("aws:sqs/queue:Queue")
    group_arn = mocks.one("aws:cloudwatch/logGroup:LogGroup").outputs["arn"]
    by_sid = _by_sid(mocks)
    assert by_sid["SendInvokeFailures"] == {
        "Sid": "SendInvokeFailures",
        "Effect": "Allow",
        "Action": ["sqs:SendMessage"],
        "Resource": [queue.arn],
    }
    assert by_sid["ReadInvokeFailures"] == {
        "Sid": "ReadInvokeFailures",
        "Effect": "Allow",
        "Action": ["sqs:ReceiveMessage", "sqs:ChangeMessageVisibility", "sqs:DeleteMessage"],
        "Resource": [queue.arn],
    }
    assert by_sid["ReadOwnLogs"] == {
        "Sid": "ReadOwnLogs",
        "Effect": "Allow",
        "Action": ["logs:FilterLogEvents", "logs:GetLogEvents"],
        "Resource": [group_arn, f"{group_arn}:*"],
    }
    # The notification queue's grant did not widen: the destination has its own statements.
    assert by_sid["ConsumeNotifications"]["Resource"] == [QUEUE_ARN]
    everything = {r for s in by_sid.values() for r in s["Resource"]}
    assert everything == {
        f"{BUCKET_ARN}/bls/*",
        f"{BUCKET_ARN}/population/*",
        f"{BUCKET_ARN}/reports/*",
        BUCKET_ARN,
        QUEUE_ARN,
        queue.arn,
        group_arn,
        f"{group_arn}:*",
    }
    assert set(by_sid) == {
        "DataObjects",
        "DeleteMirrorObjects",  # bls/ only: snapshots and reports are never deleted
        "ListDataPrefixes",
        "FindInterruptedUploads",
        "ConsumeNotifications",
        "WriteOwnLogs",
        "SendInvokeFailures",
        "ReadInvokeFailures",
        "ReadOwnLogs",
    }
    (invoke,) = _by_sid(mocks, "run-invoke-self").values()
    assert invoke["Action"] == ["lambda:InvokeFunction"] and invoke["Resource"] == [arn]

    # The queue's own policy: only the runner role may send, and only over TLS.
    role = mocks.one("aws:iam/role:Role")
    policy = mocks.one("aws:sqs/queuePolicy:QueuePolicy")
    assert policy.inputs["queueUrl"] == queue.id
    only, tls = policy_doc(policy)["Statement"]
    assert (
        only["Effect"] == "Deny" and only["Action"] == ["sqs:SendMessage"] and only["Resource"] == [queue.arn]
    )
    assert only["Condition"] == {"StringNotEquals": {"aws:PrincipalArn": role.arn}}
    assert tls["Effect"] == "Deny" and tls["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_without_the_work_pool_no_failure_or_log_reading_grants(package):
    mocks, _ = _runner(package)
    by_sid = _by_sid(mocks)
    assert not {"ReadInvokeFailures", "ReadOwnLogs"} & set(by_sid)
    # Lambda delivers the failure record with the function's role: sending is every stack's grant.
    queue = mocks.one("aws:sqs/queue:Queue")
    assert by_sid["SendInvokeFailures"]["Action"] == ["sqs:SendMessage"]
    assert by_sid["SendInvokeFailures"]["Resource"] == [queue.arn]
