"""The S3 → SQS wiring documents, built the same way by the Pulumi stack and the local emulator.

Pure functions of ARNs: the stack (`infra_pulumi`) deploys them and `flows.devkit.emulator` applies
them to moto, so the demo is wired exactly like a deployed stack without the flows importing infra.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

Document = dict[str, Any]  # an IAM/resource policy document or one of its statements

VERSION = "2012-10-17"


def statement(
    sid: str,
    actions: Sequence[str],
    resources: Sequence[str] | str,
    effect: str = "Allow",
    condition: Document | None = None,
    principal: Document | str | None = None,
) -> Document:
    stmt: Document = {"Sid": sid, "Effect": effect}
    if principal is not None:
        stmt["Principal"] = principal
    stmt["Action"] = list(actions)
    stmt["Resource"] = resources if isinstance(resources, str) else list(resources)
    if condition:
        stmt["Condition"] = condition
    return stmt


def document(*statements: Document) -> Document:
    return {"Version": VERSION, "Statement": list(statements)}


def s3_notification_queue_policy(queue_arn: str, bucket_arn: str, account_id: str) -> Document:
    """Only S3, only for this bucket, only in this account, may send to the notification queue."""
    return document(
        statement(
            "S3BucketNotifications",
            ["sqs:SendMessage"],
            [queue_arn],
            principal={"Service": "s3.amazonaws.com"},
            condition={
                "ArnEquals": {"aws:SourceArn": bucket_arn},
                "StringEquals": {"aws:SourceAccount": account_id},
            },
        )
    )


def redrive_policy(dlq_arn: str, max_receive_count: int) -> str:
    return json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count})


def redrive_allow_policy(source_queue_arn: str) -> str:
    """The DLQ accepts dead letters from the notification queue only."""
    return json.dumps({"redrivePermission": "byQueue", "sourceQueueArns": [source_queue_arn]})
