"""Notification queue under Pulumi mocks: DLQ, encryption, queue policy, notification filter, alarm."""

from __future__ import annotations

import json

import pulumi
from pulumi_mocks import ACCOUNT, install, policy_doc, run

from flows.core.names import (
    DLQ_RETENTION_SECONDS,
    NOTIFICATION_EVENTS,
    POPULATION_PREFIX,
    POPULATION_SUFFIX,
    is_population_key,
)
from infra_pulumi.queue import NotificationQueue, NotificationQueueArgs

BUCKET_ARN = "arn:aws:s3:::quest-data"


def _queue(**overrides):
    mocks = install({"contact": "me@example.com"})
    kwargs = dict(
        bucket_name="quest-data",
        bucket_arn=BUCKET_ARN,
        account_id=ACCOUNT,
        visibility_timeout_seconds=3600,
        max_receive_count=5,
    )
    kwargs.update(overrides)
    urls = run(
        lambda: pulumi.Output.all(*_urls(NotificationQueue("notify", NotificationQueueArgs(**kwargs))))
    )
    return mocks, urls


def _urls(q: NotificationQueue):
    return q.queue_url, q.dlq_url, q.queue_arn


def _queues(mocks):
    by_name = {q.name: q for q in mocks.of_type("aws:sqs/queue:Queue")}
    return by_name["notify-queue"], by_name["notify-dlq"]


def test_queue_and_dlq_are_encrypted_and_wired():
    mocks, (queue_url, dlq_url, queue_arn) = _queue(max_receive_count=3)
    queue, dlq = _queues(mocks)
    assert queue_url == queue.id and dlq_url == dlq.id and queue_arn == queue.arn
    for q in (queue, dlq):
        assert q.inputs["sqsManagedSseEnabled"] is True  # SSE-SQS: S3 can publish to it
        assert "kmsMasterKeyId" not in q.inputs
    assert dlq.inputs["messageRetentionSeconds"] == DLQ_RETENTION_SECONDS == 14 * 24 * 3600
    assert queue.inputs["visibilityTimeoutSeconds"] == 3600
    assert json.loads(queue.inputs["redrivePolicy"]) == {"deadLetterTargetArn": dlq.arn, "maxReceiveCount": 3}
    allow = json.loads(
        mocks.one("aws:sqs/redriveAllowPolicy:RedriveAllowPolicy").inputs["redriveAllowPolicy"]
    )
    assert allow == {"redrivePermission": "byQueue", "sourceQueueArns": [queue.arn]}


def test_queue_policy_names_the_bucket_and_the_account():
    mocks, _ = _queue()
    queue, _dlq = _queues(mocks)
    policy = mocks.one("aws:sqs/queuePolicy:QueuePolicy")
    assert policy.inputs["queueUrl"] == queue.id
    (stmt,) = policy_doc(policy)["Statement"]
    assert stmt["Principal"] == {"Service": "s3.amazonaws.com"}
    assert stmt["Action"] == ["sqs:SendMessage"] and stmt["Resource"] == [queue.arn]
    assert stmt["Condition"]["ArnEquals"] == {"aws:SourceArn": BUCKET_ARN}
    assert stmt["Condition"]["StringEquals"] == {"aws:SourceAccount": ACCOUNT}


def test_notification_filter_is_the_flows_shared_names():
    mocks, _ = _queue()
    queue, _dlq = _queues(mocks)
    note = mocks.one("aws:s3/bucketNotification:BucketNotification").inputs
    assert note["bucket"] == "quest-data"
    (target,) = note["queues"]
    assert target["queueArn"] == queue.arn
    assert target["events"] == list(NOTIFICATION_EVENTS) == ["s3:ObjectCreated:*"]
    assert (target["filterPrefix"], target["filterSuffix"]) == (POPULATION_PREFIX, POPULATION_SUFFIX)
    # The filter S3 applies admits exactly the keys the flows treat as snapshots.
    for key in ("population/20240101T000000Z.json", "bls/pr/pr.data.0.Current", "reports/x/summary.json"):
        s3_admits = key.startswith(target["filterPrefix"]) and key.endswith(target["filterSuffix"])
        assert s3_admits == is_population_key(key), key


def test_notification_is_created_after_the_queue_policy():
    mocks, _ = _queue()
    # S3 validates the destination when the notification is saved: the policy must exist first.
    assert mocks.depends_on("notify-bucket-notification", "notify-s3-may-send")
    assert not mocks.depends_on("notify-bucket-notification", "notify-dlq-not-empty")


def test_dlq_alarm_watches_visible_messages_and_notifies_the_topic():
    topic = f"arn:aws:sns:us-east-1:{ACCOUNT}:alerts"
    mocks, _ = _queue(alarm_topic_arn=topic)
    _queue_res, dlq = _queues(mocks)
    alarm = mocks.one("aws:cloudwatch/metricAlarm:MetricAlarm").inputs
    assert alarm["namespace"] == "AWS/SQS" and alarm["metricName"] == "ApproximateNumberOfMessagesVisible"
    assert alarm["dimensions"] == {"QueueName": dlq.outputs["name"]}
    assert alarm["comparisonOperator"] == "GreaterThanThreshold" and alarm["threshold"] == 0
    assert alarm["alarmActions"] == [topic]
