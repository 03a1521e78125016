"""IAM and resource policy documents, as pure functions of ARNs (no Pulumi, no I/O).

Kept pure so the tests parse and check the exact documents the program deploys, and so each
grant sits next to the reason it exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from flows.core.names import BLS_PREFIX, DATA_PREFIXES
from flows.core.wiring import Document, document, s3_notification_queue_policy, statement

__all__ = ["document", "statement", "s3_notification_queue_policy"]  # shared with the local emulator

# What the flows do with objects under the data prefixes. AbortMultipartUpload: the S3 store aborts
# a multipart upload whose byte count is wrong (flows/io/store.py); without it the parts linger until
# the lifecycle rule removes them. CopyObject (the sha256 metadata rewrite) needs Get + Put.
OBJECT_ACTIONS: tuple[str, ...] = (
    "s3:GetObject",
    "s3:PutObject",
    "s3:AbortMultipartUpload",
)
# Only the mirror deletes: files gone upstream, a retired survey, its lease, an interrupted sync's
# temp objects, all under bls/. Snapshots and reports are written once and never deleted by the
# function (versioning and the lifecycle rule age them out).
DELETE_PREFIXES: tuple[str, ...] = (BLS_PREFIX,)
# The event source mapping polls on the function's behalf with the function's role.
QUEUE_ACTIONS: tuple[str, ...] = ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes")
# The log group is created by the stack, so the role never needs logs:CreateLogGroup.
LOG_ACTIONS: tuple[str, ...] = ("logs:CreateLogStream", "logs:PutLogEvents")
KMS_ACTIONS: tuple[str, ...] = ("kms:Decrypt", "kms:GenerateDataKey")
# Lambda delivers an async invocation's failure record to the on-failure destination with the
# function's own execution role.
SEND_FAILURE_ACTIONS: tuple[str, ...] = ("sqs:SendMessage",)
# The poll path (in the same function) reads the failure records back, reconciles their runs and
# deletes them; a record it must leave (unreadable, another function's) it hides for a while
# (flows/reconcile.py `_hide`: ChangeMessageVisibility). No GetQueueAttributes: unlike the
# notification queue, no event source mapping reads this one. A worker outside AWS needs the same.
READ_FAILURE_ACTIONS: tuple[str, ...] = (
    "sqs:ReceiveMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:DeleteMessage",
)
# The poll path forwards a crashed request's last log lines to its flow run: its own group only.
# FilterLogEvents is authorised on the log group, GetLogEvents on its log streams.
READ_LOG_ACTIONS: tuple[str, ...] = ("logs:FilterLogEvents", "logs:GetLogEvents")


def object_arns(bucket_arn: str, prefixes: Sequence[str] = DATA_PREFIXES) -> list[str]:
    """`arn:aws:s3:::bucket/bls/*`, ... for each data prefix."""
    return [f"{bucket_arn}/{prefix}*" for prefix in prefixes]


def list_prefix_patterns(prefixes: Sequence[str] = DATA_PREFIXES) -> list[str]:
    """`s3:prefix` values a ListObjectsV2 may use: the prefix itself and anything below it."""
    patterns: list[str] = []
    for prefix in prefixes:
        patterns += [prefix, f"{prefix}*"]
    return patterns


def lambda_assume_role_policy() -> Document:
    return document(
        {
            "Sid": "LambdaAssumes",
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    )


@dataclass(frozen=True)
class RunnerGrants:
    """The resources the runner function touches; every field is a concrete ARN."""

    bucket_arn: str
    queue_arn: str
    log_group_arn: str
    secret_arn: str | None = None
    kms_key_arn: str | None = None
    region: str = ""
    # The work-pool path: the on-failure destination of its async invokes, and reading its own logs.
    invoke_failure_queue_arn: str | None = None
    read_own_logs: bool = False


def runner_policy(grants: RunnerGrants) -> Document:
    """The runner role's inline policy: only the actions it uses, only on its own resources."""
    statements = [
        statement("DataObjects", OBJECT_ACTIONS, object_arns(grants.bucket_arn)),
        statement(
            "DeleteMirrorObjects", ["s3:DeleteObject"], object_arns(grants.bucket_arn, DELETE_PREFIXES)
        ),
        statement(
            "ListDataPrefixes",
            ["s3:ListBucket"],
            [grants.bucket_arn],
            condition={"StringLike": {"s3:prefix": list_prefix_patterns()}},
        ),
        # A sync aborts the multipart uploads a killed sync left open (after a grace period);
        # finding them takes this bucket-level action, which has no prefix condition key.
        statement("FindInterruptedUploads", ["s3:ListBucketMultipartUploads"], [grants.bucket_arn]),
        statement("ConsumeNotifications", QUEUE_ACTIONS, [grants.queue_arn]),
        statement("WriteOwnLogs", LOG_ACTIONS, [f"{grants.log_group_arn}:*"]),
    ]
    if grants.invoke_failure_queue_arn:
        queue = [grants.invoke_failure_queue_arn]
        statements.append(statement("SendInvokeFailures", SEND_FAILURE_ACTIONS, queue))
        statements.append(statement("ReadInvokeFailures", READ_FAILURE_ACTIONS, queue))
    if grants.read_own_logs:
        group = grants.log_group_arn
        statements.append(statement("ReadOwnLogs", READ_LOG_ACTIONS, [group, f"{group}:*"]))
    if grants.secret_arn:
        statements.append(
            statement("ReadPrefectApiKey", ["secretsmanager:GetSecretValue"], [grants.secret_arn])
        )
    if grants.kms_key_arn:
        # SSE-KMS: reading an object decrypts its data key, writing one generates a data key;
        # only through S3 in the bucket's region, never directly.
        via = (
            {"StringEquals": {"kms:ViaService": f"s3.{grants.region}.amazonaws.com"}}
            if grants.region
            else None
        )
        statements.append(statement("UseBucketKey", KMS_ACTIONS, [grants.kms_key_arn], condition=via))
    return document(*statements)


def invoke_self_policy(function_arn: str) -> Document:
    """The work-pool path: a worker poll inside the function invokes the function with a flow run id."""
    return document(statement("InvokeSelfForFlowRuns", ["lambda:InvokeFunction"], [function_arn]))


def worker_policy(function_arn: str, invoke_failure_queue_arn: str, log_group_arn: str) -> Document:
    """The least a long-running `aws-lambda` worker outside AWS needs (README, "Who submits the runs").

    It invokes the pool's function (unqualified: the pool's default), reads the on-failure queue back
    as the poll path does (reconcile: receive, hide a record it leaves, delete), and reads the
    function's logs (a crashed request's last lines; whether a killed run's request has ended).
    """
    return document(
        statement("InvokeThePoolsFunction", ["lambda:InvokeFunction"], [function_arn]),
        statement(
            "ReadInvokeFailures",
            READ_FAILURE_ACTIONS,
            [invoke_failure_queue_arn],
        ),
        statement("ReadFunctionLogs", READ_LOG_ACTIONS, [log_group_arn, f"{log_group_arn}:*"]),
    )


def invoke_failure_queue_policy(queue_arn: str, role_arn: str) -> Document:
    """Resource policy on the on-failure destination: only the runner role may send to it, and
    nothing reaches it without TLS (Denies; the role's own policy grants what it uses)."""
    return document(
        statement(
            "OnlyTheRunnerSends",
            ["sqs:SendMessage"],
            [queue_arn],
            effect="Deny",
            principal="*",
            condition={"StringNotEquals": {"aws:PrincipalArn": role_arn}},
        ),
        statement(
            "DenyInsecureTransport",
            ["sqs:*"],
            [queue_arn],
            effect="Deny",
            principal="*",
            condition={"Bool": {"aws:SecureTransport": "false"}},
        ),
    )


def tls_only_bucket_policy(bucket_arn: str) -> Document:
    """Deny every request that does not use TLS (a Deny: `*` principal and `s3:*` are the point)."""
    return document(
        statement(
            "DenyInsecureTransport",
            ["s3:*"],
            [bucket_arn, f"{bucket_arn}/*"],
            effect="Deny",
            principal="*",
            condition={"Bool": {"aws:SecureTransport": "false"}},
        )
    )


def secret_reader_policy(secret_arn: str, role_arn: str) -> Document:
    """Resource policy on the API-key secret: no principal but the runner role may read its value.

    A Deny for every other principal (`*` with a condition is how a resource policy says "all but
    one"); administrators keep managing the secret, they just cannot read it.
    """
    return document(
        statement(
            "OnlyTheRunnerReads",
            ["secretsmanager:GetSecretValue"],
            [secret_arn],
            effect="Deny",
            principal="*",
            condition={"StringNotEquals": {"aws:PrincipalArn": role_arn}},
        )
    )
