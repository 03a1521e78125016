"""Queue: S3 `ObjectCreated` for population snapshots → SQS (with a DLQ and an alarm on it).

The notification filter comes from `flows.core.names`, the same module the flows use to write and
recognise snapshot keys, so the two cannot drift.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from flows.core.names import DLQ_RETENTION_SECONDS, NOTIFICATION_EVENTS, POPULATION_PREFIX, POPULATION_SUFFIX
from flows.core.wiring import redrive_allow_policy, redrive_policy
from infra_pulumi import iam

# Raise the alarm on the first dead letter: one means a snapshot produced no report.
DLQ_ALARM_THRESHOLD = 0
DLQ_ALARM_PERIOD_SECONDS = 300


@dataclass(frozen=True, kw_only=True)
class NotificationQueueArgs:
    """The bucket to listen to (outputs of `Storage`) and the queue's redelivery settings."""

    bucket_name: pulumi.Input[str]
    bucket_arn: pulumi.Input[str]
    account_id: pulumi.Input[str]  # the queue policy admits this account's bucket only
    visibility_timeout_seconds: int
    max_receive_count: int  # receives before a message moves to the DLQ
    alarm_topic_arn: str | None = None


class NotificationQueue(pulumi.ComponentResource):
    """The queue S3 notifies, its DLQ, the queue policy, the bucket notification, a DLQ alarm."""

    queue: aws.sqs.Queue
    dlq: aws.sqs.Queue
    queue_arn: pulumi.Output[str]
    queue_url: pulumi.Output[str]
    dlq_url: pulumi.Output[str]

    def __init__(
        self, name: str, args: NotificationQueueArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("quest:queue:NotificationQueue", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        # SQS-managed encryption (SSE-SQS): S3 cannot publish to a queue encrypted with the
        # AWS-managed KMS key (its key policy cannot grant s3.amazonaws.com).
        self.dlq = aws.sqs.Queue(
            f"{name}-dlq",
            sqs_managed_sse_enabled=True,
            message_retention_seconds=DLQ_RETENTION_SECONDS,
            opts=child,
        )
        self.queue = aws.sqs.Queue(
            f"{name}-queue",
            sqs_managed_sse_enabled=True,
            visibility_timeout_seconds=args.visibility_timeout_seconds,
            redrive_policy=self.dlq.arn.apply(lambda arn: redrive_policy(arn, args.max_receive_count)),
            opts=child,
        )
        aws.sqs.RedriveAllowPolicy(
            f"{name}-dlq-redrive-allow",
            queue_url=self.dlq.url,
            redrive_allow_policy=self.queue.arn.apply(redrive_allow_policy),
            opts=child,
        )
        queue_policy = aws.sqs.QueuePolicy(
            f"{name}-s3-may-send",
            queue_url=self.queue.url,
            policy=pulumi.Output.all(self.queue.arn, args.bucket_arn, args.account_id).apply(
                lambda arns: json.dumps(iam.s3_notification_queue_policy(*arns))
            ),
            opts=child,
        )
        # S3 sends a test event when the notification is saved and refuses to save it when the
        # queue policy does not admit it yet: the policy must exist first.
        aws.s3.BucketNotification(
            f"{name}-bucket-notification",
            bucket=args.bucket_name,
            queues=[
                {
                    "queue_arn": self.queue.arn,
                    "events": list(NOTIFICATION_EVENTS),
                    "filter_prefix": POPULATION_PREFIX,
                    "filter_suffix": POPULATION_SUFFIX,
                }
            ],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[queue_policy]),
        )
        alarm_actions = [args.alarm_topic_arn] if args.alarm_topic_arn else []
        aws.cloudwatch.MetricAlarm(
            f"{name}-dlq-not-empty",
            alarm_description="A population snapshot's notification failed repeatedly and is in the DLQ.",
            namespace="AWS/SQS",
            metric_name="ApproximateNumberOfMessagesVisible",
            dimensions={"QueueName": self.dlq.name},
            statistic="Maximum",
            period=DLQ_ALARM_PERIOD_SECONDS,
            evaluation_periods=1,
            comparison_operator="GreaterThanThreshold",
            threshold=DLQ_ALARM_THRESHOLD,
            treat_missing_data="notBreaching",
            alarm_actions=alarm_actions,
            ok_actions=alarm_actions,
            opts=child,
        )

        self.queue_arn = self.queue.arn
        self.queue_url = self.queue.url
        self.dlq_url = self.dlq.url
        self.register_outputs(
            {"queue_arn": self.queue_arn, "queue_url": self.queue_url, "dlq_url": self.dlq_url}
        )
