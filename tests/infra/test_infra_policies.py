"""The policy rules themselves: each flags the violation it exists for, so passing means something."""

from __future__ import annotations

import json

import pytest

from infra_pulumi import iam, policies
from infra_pulumi.policies import WORK_POOL_TYPE, Resource, check

PROVIDER = "urn:pulumi:dev::quest::pulumi:providers:aws::aws::id-1"
BUCKET_ARN = "arn:aws:s3:::b"
Q_ARN = "arn:aws:sqs:us-east-1:1:q"
DLQ_ARN = "arn:aws:sqs:us-east-1:1:dlq"
FN_ARN = "arn:aws:lambda:us-east-1:1:function:f"


def _r(typ: str, name: str, outputs: dict | None = None, **inputs) -> Resource:
    return Resource(type=f"aws:{typ}", name=name, inputs=inputs, outputs=outputs or {}, provider=PROVIDER)


FAILURES_ARN = "arn:aws:sqs:us-east-1:1:invoke-failures"


def good_stack() -> list[Resource]:
    policy = iam.runner_policy(iam.RunnerGrants(BUCKET_ARN, Q_ARN, "arn:aws:logs:us-east-1:1:log-group:g"))
    return [
        Resource(
            "pulumi:providers:aws",
            "aws",
            {"defaultTags": json.dumps({"tags": {"Project": "p", "Stack": "s"}})},
        ),
        _r("s3/bucket:Bucket", "b", {"arn": BUCKET_ARN}),
        _r(
            "s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
            "pab",
            blockPublicAcls=True,
            blockPublicPolicy=True,
            ignorePublicAcls=True,
            restrictPublicBuckets=True,
        ),
        _r(
            "s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
            "sse",
            rules=[{"applyServerSideEncryptionByDefault": {"sseAlgorithm": "AES256"}}],
        ),
        _r("s3/bucketVersioning:BucketVersioning", "v", versioningConfiguration={"status": "Enabled"}),
        _r("s3/bucketPolicy:BucketPolicy", "tls", policy=json.dumps(iam.tls_only_bucket_policy(BUCKET_ARN))),
        _r(
            "sqs/queue:Queue",
            "q",
            {"arn": Q_ARN},
            sqsManagedSseEnabled=True,
            visibilityTimeoutSeconds=3600,
            redrivePolicy=json.dumps({"deadLetterTargetArn": DLQ_ARN, "maxReceiveCount": 5}),
        ),
        _r("sqs/queue:Queue", "dlq", {"arn": DLQ_ARN}, sqsManagedSseEnabled=True),
        _r("iam/rolePolicy:RolePolicy", "p", policy=json.dumps(policy)),
        _r(
            "lambda/function:Function",
            "f",
            {"arn": FN_ARN},
            timeout=600,
            environment={"variables": {"QUEST_PREFECT_API_KEY_SECRET_ARN": "arn:aws:secretsmanager:x"}},
        ),
        _r(
            "lambda/eventSourceMapping:EventSourceMapping",
            "m",
            functionName=FN_ARN,
            eventSourceArn=Q_ARN,
            functionResponseTypes=["ReportBatchItemFailures"],
        ),
        _r("cloudwatch/logGroup:LogGroup", "g", retentionInDays=14),
        # Every stack's async invokes: no retries, an hour of event age, failures to a stack queue.
        _r("sqs/queue:Queue", "failures", {"arn": FAILURES_ARN}, sqsManagedSseEnabled=True),
        _r(
            "sqs/queuePolicy:QueuePolicy",
            "failures-policy",
            policy=json.dumps(iam.invoke_failure_queue_policy(FAILURES_ARN, "arn:aws:iam::1:role/r")),
        ),
        _r(
            "lambda/functionEventInvokeConfig:FunctionEventInvokeConfig",
            "async",
            functionName=FN_ARN,
            maximumRetryAttempts=0,
            maximumEventAgeInSeconds=3600,
            destinationConfig={"onFailure": {"destination": FAILURES_ARN}},
        ),
    ]


def _replace(stack: list[Resource], name: str, **inputs) -> list[Resource]:
    return [
        Resource(r.type, r.name, {**r.inputs, **inputs}, r.outputs, r.provider, r.id) if r.name == name else r
        for r in stack
    ]


def test_a_good_stack_passes():
    assert check(good_stack()) == []


@pytest.mark.parametrize(
    ("name", "change", "rule"),
    [
        ("pab", {"restrictPublicBuckets": False}, "public-access-block"),
        (
            "sse",
            {"rules": [{"applyServerSideEncryptionByDefault": {"sseAlgorithm": "none"}}]},
            "bucket-encryption",
        ),
        ("v", {"versioningConfiguration": {"status": "Suspended"}}, "bucket-versioning"),
        ("tls", {"policy": json.dumps(iam.document())}, "tls-only"),
        ("q", {"sqsManagedSseEnabled": False}, "queue-encryption"),
        ("q", {"redrivePolicy": None}, "dead-letter-queue"),
        (
            "p",
            {"policy": json.dumps(iam.document(iam.statement("x", ["s3:*"], [BUCKET_ARN])))},
            "iam-no-wildcard-action",
        ),
        (
            "p",
            {"policy": json.dumps(iam.document(iam.statement("x", ["s3:GetObject"], "*")))},
            "iam-no-wildcard-resource",
        ),
        ("f", {"environment": {"variables": {"PREFECT_API_KEY": "pnu_x"}}}, "no-plaintext-secret"),
        ("m", {"functionResponseTypes": []}, "partial-batch-response"),
        ("f", {"timeout": 900}, "visibility-timeout"),
        ("g", {"retentionInDays": None}, "log-retention"),
        ("aws", {"defaultTags": json.dumps({"tags": {"Project": "p"}})}, "default-tags"),
    ],
)
def test_each_rule_flags_its_violation(name, change, rule):
    violations = check(_replace(good_stack(), name, **change))
    assert rule in {v.rule for v in violations}, violations


def test_missing_companions_and_foreign_providers_are_flagged():
    stack = [r for r in good_stack() if r.name not in ("pab", "sse", "v", "tls")]
    rules = {v.rule for v in check(stack)}
    assert {"public-access-block", "bucket-encryption", "bucket-versioning", "tls-only"} <= rules
    stray = Resource("aws:sqs/queue:Queue", "stray", {"sqsManagedSseEnabled": True}, provider="")
    assert any(
        v.resource == "stray" for v in policies.aws_resources_tagged_by_provider([*good_stack(), stray])
    )


def test_deny_statements_may_use_wildcards():
    doc = iam.secret_reader_policy("arn:aws:secretsmanager:x", "arn:aws:iam::1:role/r")
    stack = _replace(good_stack(), "p", policy=json.dumps(doc))
    assert policies.iam_least_privilege(stack) == []


# --------------------------------------------------------------------------- work-pool stacks


def work_pool_stack() -> list[Resource]:
    """good_stack plus what a work pool adds: the pool and the reserved concurrency it needs."""
    stack = _replace(good_stack(), "f", reservedConcurrentExecutions=10 + 2 + 1)
    stack = _replace(stack, "m", scalingConfig={"maximumConcurrency": 2})
    return [*stack, Resource(WORK_POOL_TYPE, "pool", {"name": "quest-lambda", "concurrency_limit": 10})]


def test_a_good_work_pool_stack_passes():
    # The failure queue has no redrive policy: as an on-failure destination it is the end of the line.
    assert check(work_pool_stack()) == []


@pytest.mark.parametrize(
    ("name", "change", "rule"),
    [
        ("async", {"maximumRetryAttempts": 2}, "invoke-failure-destination"),
        ("async", {"maximumEventAgeInSeconds": 21600}, "invoke-failure-destination"),
        ("async", {"destinationConfig": {}}, "invoke-failure-destination"),
        (
            "async",
            {"destinationConfig": {"onFailure": {"destination": "arn:aws:sqs:x:1:elsewhere"}}},
            "invoke-failure-destination",
        ),
        ("async", {"functionName": "another-function"}, "invoke-failure-destination"),
        ("failures", {"sqsManagedSseEnabled": False}, "queue-encryption"),
        ("f", {"reservedConcurrentExecutions": 10}, "concurrency-budget"),
        ("f", {"reservedConcurrentExecutions": None}, "concurrency-budget"),
        ("pool", {"concurrency_limit": None}, "concurrency-budget"),
        ("m", {"scalingConfig": None}, "concurrency-budget"),
        (
            "failures-policy",
            {
                "policy": json.dumps(
                    iam.document(iam.statement("x", ["sqs:*"], [FAILURES_ARN], principal="*"))
                )
            },
            "iam-no-wildcard-action",
        ),
    ],
)
def test_each_work_pool_rule_flags_its_violation(name, change, rule):
    violations = check(_replace(work_pool_stack(), name, **change))
    assert rule in {v.rule for v in violations}, violations


def test_without_its_destination_the_failure_queue_is_a_queue_without_dead_letters():
    stack = [r for r in work_pool_stack() if r.name != "async"]
    rules = {(v.rule, v.resource) for v in check(stack)}
    assert ("dead-letter-queue", "failures") in rules
    assert ("invoke-failure-destination", "f") in rules


def test_the_concurrency_rule_is_silent_without_a_work_pool():
    assert policies.work_pool_concurrency_is_reserved(good_stack()) == []


def test_a_stack_without_a_work_pool_still_needs_its_async_invoke_config():
    stack = [r for r in good_stack() if r.name != "async"]
    assert ("invoke-failure-destination", "f") in {(v.rule, v.resource) for v in check(stack)}
