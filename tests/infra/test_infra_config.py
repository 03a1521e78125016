"""Stack config (pure parsing) and the IAM documents (pure functions): no Pulumi runtime needed."""

from __future__ import annotations

import re

import pytest
from pulumi_mocks import ROOT, stack_yaml_config

from flows.core.names import DATA_PREFIXES, DLQ_MAX_RECEIVE_COUNT_DEFAULT
from infra_pulumi import iam
from infra_pulumi.config import (
    PREFECT_API_KEY,
    StackConfigError,
    field_keys,
    parse,
    reserved_concurrency,
    visibility_timeout,
)

BUCKET = "arn:aws:s3:::quest-dev-bucket"
QUEUE = "arn:aws:sqs:us-east-1:123456789012:quest-queue"
LOGS = "arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/quest-dev-runner"
SECRET = "arn:aws:secretsmanager:us-east-1:123456789012:secret:quest-key-AbCdEf"
KEY = "arn:aws:kms:us-east-1:123456789012:key/1234"


def test_defaults_live_in_code():
    cfg = parse({"contact": "me@example.com"})
    assert cfg.bls_surveys == ["pr"]
    assert cfg.dlq_max_receive_count == DLQ_MAX_RECEIVE_COUNT_DEFAULT == 5
    assert cfg.schedule_expression == "cron(0 6 * * ? *)"  # 06:00 UTC daily
    assert cfg.encryption == "sse-s3" and not cfg.uses_work_pool
    assert cfg.queue_visibility_timeout_seconds >= 6 * cfg.function_timeout_seconds
    assert cfg.max_concurrent_runs == 10 and cfg.function_reserved_concurrency == 10 + 2 + 1


def test_values_arrive_as_strings_like_the_cli_passes_them():
    cfg = parse(
        {
            "contact": "me@example.com",
            "blsSurveys": "PR, ce",
            "functionTimeoutSeconds": "900",
            "batchSize": "20",
            "batchingWindowSeconds": "5",
            "forceDestroy": "true",
            "prefectApiUrl": "https://prefect.example/api",
            "maxConcurrentRuns": "40",
        }
    )
    assert cfg.max_concurrent_runs == 40 and cfg.function_reserved_concurrency == 43
    assert cfg.bls_surveys == ["pr", "ce"]
    assert cfg.function_timeout_seconds == 900 and cfg.force_destroy is True
    assert cfg.queue_visibility_timeout_seconds == 6 * 900 + 5
    assert cfg.uses_work_pool
    assert parse({"contact": "a@b.c", "blsSurveys": '["pr", "jt"]'}).bls_surveys == ["pr", "jt"]


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({}, "contact"),
        ({"contact": "a@b.c", "logRetentionDays": "13"}, "logRetentionDays"),
        ({"contact": "a@b.c", "batchSize": "50"}, "batchingWindowSeconds"),
        ({"contact": "a@b.c", "kmsKeyArn": KEY}, "sse-kms"),
        ({"contact": "a@b.c", "functionTimeoutSeconds": "901"}, "functionTimeoutSeconds"),
        ({"contact": "a@b.c", "blsSurveys": "pr,../x"}, "blsSurveys"),
        ({"contact": "a@b.c", "scheduleExpression": "0 6 * * *"}, "scheduleExpression"),
        ({"contact": "a@b.c", "functionTimoutSeconds": "60"}, "functionTimoutSeconds"),  # a typo
        # The function sends its Prefect API key there: https only (plain http to loopback only).
        ({"contact": "a@b.c", "prefectApiUrl": "http://prefect.example/api"}, "prefectApiUrl"),
        ({"contact": "a@b.c", "prefectApiUrl": "HTTP://prefect.example/api"}, "https://"),
        ({"contact": "a@b.c", "prefectApiUrl": "http://127.0.0.1.evil.com/api"}, "prefectApiUrl"),
        ({"contact": "a@b.c", "prefectApiUrl": "http://localhost.evil.com/api"}, "prefectApiUrl"),
        ({"contact": "a@b.c", "prefectApiUrl": "https://evil@127.0.0.1/api"}, "user information"),
        ({"contact": "a@b.c", "prefectApiUrl": "prefect.example/api"}, "prefectApiUrl"),
        # Runs at once: at least one, and the reservation must leave Lambda's 100 unreserved.
        ({"contact": "a@b.c", "maxConcurrentRuns": "0"}, "maxConcurrentRuns"),
        ({"contact": "a@b.c", "maxConcurrentRuns": "898"}, "maxConcurrentRuns"),
        ({"contact": "a@b.c", "maxConcurrentRuns": "ten"}, "maxConcurrentRuns"),
    ],
)
def test_invalid_config_is_refused_with_the_key_named(raw, needle):
    with pytest.raises(StackConfigError, match=re.escape(needle)):
        parse(raw)


@pytest.mark.parametrize(
    "url",
    [
        "https://api.prefect.cloud/api/accounts/a/workspaces/w",
        "HTTPS://x.example/api",
        "http://127.0.0.1:4200/api",
    ],
)
def test_prefect_api_url_https_or_loopback(url):
    assert parse({"contact": "a@b.c", "prefectApiUrl": url}).prefect_api_url == url


def _project_keys(text: str) -> set[str]:
    return set(re.findall(r"^\s*#?\s*quest:(\w+):", text, flags=re.MULTILINE))


@pytest.mark.parametrize("name", ["Pulumi.dev.yaml", "Pulumi.prod.yaml.example"])
def test_stack_files_use_only_known_keys(name):
    known = set(field_keys()) | {PREFECT_API_KEY}
    keys = _project_keys((ROOT / name).read_text())
    assert keys and keys <= known, keys - known


def test_dev_stack_sets_every_setting_and_parses():
    config = stack_yaml_config(ROOT / "Pulumi.dev.yaml")
    assert config["aws:region"]
    set_keys = {k.split(":", 1)[1] for k in config if k.startswith("quest:")}
    optional = {
        "blsBaseUrl",
        "populationUrl",
        "kmsKeyArn",
        "alarmTopicArn",
        "lambdaPackagePath",
        "prefectApiUrl",
    }
    assert set(field_keys()) - optional <= set_keys
    cfg = parse({k: str(v) for k, v in ((k.split(":", 1)[1], v) for k, v in config.items()) if k in set_keys})
    assert cfg.contact and not cfg.uses_work_pool


def test_reserved_concurrency_is_runs_plus_reports_plus_poll():
    assert reserved_concurrency(1) == 4
    assert reserved_concurrency(897) == 900  # the most an account with 1000 can reserve
    assert parse({"contact": "a@b.c", "maxConcurrentRuns": "897"}).function_reserved_concurrency == 900


def test_invalid_config_is_one_line():
    with pytest.raises(StackConfigError) as info:
        parse({"contact": "a@b.c", "maxConcurrentRuns": "0"})
    assert "\n" not in str(info.value) and "greater than or equal to 1" in str(info.value)


def test_visibility_timeout_is_six_times_the_function_timeout():
    assert visibility_timeout(600) == 3600
    assert visibility_timeout(900, 10) == 5410


# --------------------------------------------------------------------------- IAM documents


def _allows(doc: dict) -> list[dict]:
    return [s for s in doc["Statement"] if s["Effect"] == "Allow"]


def test_runner_policy_is_least_privilege():
    doc = iam.runner_policy(iam.RunnerGrants(bucket_arn=BUCKET, queue_arn=QUEUE, log_group_arn=LOGS))
    for stmt in _allows(doc):
        for action in stmt["Action"]:
            assert action != "*" and not action.endswith(":*"), action
        assert "*" not in stmt["Resource"]
    by_sid = {s["Sid"]: s for s in doc["Statement"]}
    objects = by_sid["DataObjects"]
    assert set(objects["Action"]) >= {"s3:GetObject", "s3:PutObject"}
    assert "s3:DeleteObject" not in objects["Action"]  # snapshots and reports are never deleted
    assert by_sid["DeleteMirrorObjects"]["Action"] == ["s3:DeleteObject"]
    assert by_sid["DeleteMirrorObjects"]["Resource"] == [f"{BUCKET}/bls/*"]
    assert objects["Resource"] == [f"{BUCKET}/{prefix}*" for prefix in DATA_PREFIXES]
    listing = by_sid["ListDataPrefixes"]
    assert listing["Action"] == ["s3:ListBucket"] and listing["Resource"] == [BUCKET]
    assert set(listing["Condition"]["StringLike"]["s3:prefix"]) == {
        p for prefix in DATA_PREFIXES for p in (prefix, f"{prefix}*")
    }
    assert by_sid["FindInterruptedUploads"]["Action"] == ["s3:ListBucketMultipartUploads"]
    assert by_sid["FindInterruptedUploads"]["Resource"] == [BUCKET]
    assert by_sid["ConsumeNotifications"]["Resource"] == [QUEUE]
    assert set(by_sid["ConsumeNotifications"]["Action"]) == {
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
    }
    assert by_sid["WriteOwnLogs"]["Resource"] == [f"{LOGS}:*"]
    assert "ReadPrefectApiKey" not in by_sid and "UseBucketKey" not in by_sid


def test_runner_policy_reads_only_its_secret_and_uses_the_key_through_s3():
    grants = iam.RunnerGrants(BUCKET, QUEUE, LOGS, secret_arn=SECRET, kms_key_arn=KEY, region="eu-west-1")
    by_sid = {s["Sid"]: s for s in iam.runner_policy(grants)["Statement"]}
    assert by_sid["ReadPrefectApiKey"]["Action"] == ["secretsmanager:GetSecretValue"]
    assert by_sid["ReadPrefectApiKey"]["Resource"] == [SECRET]
    assert by_sid["UseBucketKey"]["Resource"] == [KEY]
    assert (
        by_sid["UseBucketKey"]["Condition"]["StringEquals"]["kms:ViaService"] == "s3.eu-west-1.amazonaws.com"
    )


def test_queue_policy_admits_only_this_bucket_of_this_account():
    doc = iam.s3_notification_queue_policy(QUEUE, BUCKET, "123456789012")
    (stmt,) = doc["Statement"]
    assert stmt["Principal"] == {"Service": "s3.amazonaws.com"}
    assert stmt["Action"] == ["sqs:SendMessage"] and stmt["Resource"] == [QUEUE]
    assert stmt["Condition"]["ArnEquals"]["aws:SourceArn"] == BUCKET
    assert stmt["Condition"]["StringEquals"]["aws:SourceAccount"] == "123456789012"


def test_tls_and_secret_policies_are_conditional_denies():
    (tls,) = iam.tls_only_bucket_policy(BUCKET)["Statement"]
    assert tls["Effect"] == "Deny" and tls["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert tls["Resource"] == [BUCKET, f"{BUCKET}/*"]
    role = "arn:aws:iam::123456789012:role/runner"
    (only,) = iam.secret_reader_policy(SECRET, role)["Statement"]
    assert only["Effect"] == "Deny" and only["Resource"] == [SECRET]
    assert only["Condition"] == {"StringNotEquals": {"aws:PrincipalArn": role}}


def test_work_pool_grants_read_the_destination_and_own_logs_only():
    failures = "arn:aws:sqs:us-east-1:123456789012:quest-invoke-failures"
    grants = iam.RunnerGrants(BUCKET, QUEUE, LOGS, invoke_failure_queue_arn=failures, read_own_logs=True)
    by_sid = {s["Sid"]: s for s in iam.runner_policy(grants)["Statement"]}
    assert by_sid["SendInvokeFailures"]["Action"] == ["sqs:SendMessage"]
    assert by_sid["SendInvokeFailures"]["Resource"] == [failures]
    assert set(by_sid["ReadInvokeFailures"]["Action"]) == {
        "sqs:ReceiveMessage",
        "sqs:ChangeMessageVisibility",  # reconcile hides a record it leaves
        "sqs:DeleteMessage",
    }
    assert by_sid["ReadInvokeFailures"]["Resource"] == [failures]
    assert by_sid["ReadOwnLogs"]["Action"] == ["logs:FilterLogEvents", "logs:GetLogEvents"]
    assert by_sid["ReadOwnLogs"]["Resource"] == [LOGS, f"{LOGS}:*"]
    role = "arn:aws:iam::123456789012:role/runner"
    only, tls = iam.invoke_failure_queue_policy(failures, role)["Statement"]
    assert (only["Effect"], only["Action"], only["Resource"]) == ("Deny", ["sqs:SendMessage"], [failures])
    assert only["Condition"] == {"StringNotEquals": {"aws:PrincipalArn": role}}
    assert tls["Effect"] == "Deny" and tls["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
