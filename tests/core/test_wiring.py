"""The S3 → SQS wiring documents the stack deploys and the local emulator applies."""

from __future__ import annotations

import json

from flows.core.wiring import redrive_allow_policy, redrive_policy, s3_notification_queue_policy

QUEUE = "arn:aws:sqs:us-east-1:123456789012:q"
BUCKET = "arn:aws:s3:::b"


def test_only_this_bucket_of_this_account_may_send():
    doc = s3_notification_queue_policy(QUEUE, BUCKET, "123456789012")
    (stmt,) = doc["Statement"]
    assert doc["Version"] == "2012-10-17"
    assert stmt["Principal"] == {"Service": "s3.amazonaws.com"} and stmt["Action"] == ["sqs:SendMessage"]
    assert stmt["Resource"] == [QUEUE]
    assert stmt["Condition"] == {
        "ArnEquals": {"aws:SourceArn": BUCKET},
        "StringEquals": {"aws:SourceAccount": "123456789012"},
    }


def test_redrive_documents():
    assert json.loads(redrive_policy("arn:dlq", 5)) == {
        "deadLetterTargetArn": "arn:dlq",
        "maxReceiveCount": 5,
    }
    assert json.loads(redrive_allow_policy(QUEUE)) == {
        "redrivePermission": "byQueue",
        "sourceQueueArns": [QUEUE],
    }
