"""A local S3 + SQS emulator (moto's server on 127.0.0.1) wired like the Pulumi program wires AWS.

Or, given an endpoint, the same wiring on an S3 + SQS server the user already runs (LocalStack):
created on start, removed on stop.

The bucket, the notification queue with its dead-letter queue (redrive policy), the queue policy
admitting only this bucket of this account, and the S3 → SQS notification filtered to
`population/` + `.json` all come from the same shared definitions the Pulumi program uses
(`flows.core.names`, `flows.core.wiring`), so the demo exercises the deployed
wiring, not a look-alike.
moto does not enforce queue policies; the policy is set so the wiring is complete and inspectable.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

from flows.core import names
from flows.core.errors import QuestError

MOTO_ACCOUNT_ID = "123456789012"  # moto's default account
DEMO_REGION = "us-east-1"
# The demo consumer deletes or fails a message within seconds; redelivery after 30 s is plenty.
DEMO_VISIBILITY_TIMEOUT_SECONDS = 30


@dataclass(frozen=True)
class Wiring:
    endpoint_url: str
    region: str
    bucket: str
    queue_url: str
    queue_arn: str
    dlq_url: str
    dlq_arn: str


def notification_configuration(queue_arn: str) -> dict[str, Any]:
    """The S3 → SQS notification in PutBucketNotificationConfiguration's shape (shared filter names)."""
    return {
        "QueueConfigurations": [
            {
                "Id": "population-snapshots",
                "QueueArn": queue_arn,
                "Events": list(names.NOTIFICATION_EVENTS),
                "Filter": {
                    "Key": {
                        "FilterRules": [
                            {"Name": "prefix", "Value": names.POPULATION_PREFIX},
                            {"Name": "suffix", "Value": names.POPULATION_SUFFIX},
                        ]
                    }
                },
            }
        ]
    }


def wire(
    s3: Any,
    sqs: Any,
    bucket: str,
    region: str = DEMO_REGION,
    account_id: str | None = None,
    max_receive_count: int = names.DLQ_MAX_RECEIVE_COUNT_DEFAULT,
    visibility_timeout: int = DEMO_VISIBILITY_TIMEOUT_SECONDS,
    endpoint_url: str = "",
) -> Wiring:
    """Create bucket, DLQ, queue (redrive + policy) and the notification, as the Pulumi program does.

    The account in the queue policy is the queue's own (its ARN's fifth field) unless given: moto's
    and LocalStack's default accounts differ, and on AWS it is the caller's."""
    # The Pulumi program's own policy builders (pure functions of ARNs; importing them is cheap).
    from flows.core.wiring import redrive_allow_policy, redrive_policy, s3_notification_queue_policy

    if region == "us-east-1":
        s3.create_bucket(Bucket=bucket)
    else:
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
    dlq_url = sqs.create_queue(
        QueueName=f"{bucket}-population-events-dlq",
        Attributes={"MessageRetentionPeriod": str(names.DLQ_RETENTION_SECONDS)},
    )["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    queue_url = sqs.create_queue(
        QueueName=f"{bucket}-population-events",
        Attributes={
            "VisibilityTimeout": str(visibility_timeout),
            "RedrivePolicy": redrive_policy(dlq_arn, max_receive_count),
        },
    )["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    account_id = account_id or queue_arn.split(":")[4]
    policy = s3_notification_queue_policy(queue_arn, f"arn:aws:s3:::{bucket}", account_id)
    sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"Policy": json.dumps(policy)})
    sqs.set_queue_attributes(
        QueueUrl=dlq_url, Attributes={"RedriveAllowPolicy": redrive_allow_policy(queue_arn)}
    )
    s3.put_bucket_notification_configuration(
        Bucket=bucket, NotificationConfiguration=notification_configuration(queue_arn)
    )
    return Wiring(endpoint_url, region, bucket, queue_url, queue_arn, dlq_url, dlq_arn)


class LocalAws:
    """moto's ThreadedMotoServer on a random 127.0.0.1 port, with the pipeline's wiring created.

    With `endpoint_url`, no server is started: the wiring is created on that S3 + SQS endpoint (a
    LocalStack the user runs) under a fresh bucket name, and removed again on stop.
    Use as a context manager; `env()` gives the variables boto3 needs to talk to it.
    """

    def __init__(
        self,
        bucket: str | None = None,
        region: str = DEMO_REGION,
        endpoint_url: str | None = None,
        **wire_options: Any,
    ):
        self.bucket = bucket or f"quest-demo-{uuid.uuid4().hex[:10]}"
        self.region = region
        self.external_endpoint = endpoint_url.rstrip("/") if endpoint_url else None
        self._wire_options = wire_options
        self._server: Any = None
        self.wiring: Wiring | None = None

    @property
    def endpoint_url(self) -> str:
        if self.external_endpoint is not None:
            return self.external_endpoint
        if self._server is None:
            raise RuntimeError("emulator not started")
        host, port = self._server.get_host_and_port()
        return f"http://{host}:{port}"

    def env(self) -> dict[str, str]:
        """boto3's own settings for the emulator (fake credentials: nothing real is ever sent)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ACCESS_KEY_ID": "quest-demo",
            "AWS_SECRET_ACCESS_KEY": "quest-demo",
        }

    def client(self, service: str) -> Any:
        import boto3

        return boto3.session.Session().client(
            service,
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id="quest-demo",
            aws_secret_access_key="quest-demo",
        )

    def start(self) -> LocalAws:
        if self.external_endpoint is None:
            from moto.server import ThreadedMotoServer

            self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            self._server.start()
        try:
            self.wiring = wire(
                self.client("s3"),
                self.client("sqs"),
                self.bucket,
                self.region,
                endpoint_url=self.endpoint_url,
                **self._wire_options,
            )
        except BaseException as exc:
            self.stop()
            if self.external_endpoint is not None and _is_aws_error(exc):
                raise QuestError(
                    f"cannot wire S3 + SQS at {self.external_endpoint}: {type(exc).__name__}: {exc}"
                ) from exc
            raise
        return self

    def stop(self) -> None:
        if self.external_endpoint is not None:
            self._remove_wiring()
        if self._server is not None:
            server, self._server = self._server, None
            server.stop()
            with contextlib.suppress(Exception):  # moto's stop() leaves the listening socket open
                server._server.server_close()

    def _remove_wiring(self) -> None:
        """Remove what `start` created on the user's endpoint: the bucket with every object and
        upload in it, and both queues (each step on its own: a partial wiring is removed too)."""
        s3, sqs = self.client("s3"), self.client("sqs")
        with contextlib.suppress(Exception):
            for page in s3.get_paginator("list_object_versions").paginate(Bucket=self.bucket):
                doomed = [
                    {"Key": v["Key"], "VersionId": v["VersionId"]}
                    for v in page.get("Versions", []) + page.get("DeleteMarkers", [])
                ]
                if doomed:
                    s3.delete_objects(Bucket=self.bucket, Delete={"Objects": doomed, "Quiet": True})
        with contextlib.suppress(Exception):
            for upload in s3.list_multipart_uploads(Bucket=self.bucket).get("Uploads", []):
                s3.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        with contextlib.suppress(Exception):
            s3.delete_bucket(Bucket=self.bucket)
        for name in (f"{self.bucket}-population-events", f"{self.bucket}-population-events-dlq"):
            with contextlib.suppress(Exception):
                sqs.delete_queue(QueueUrl=sqs.get_queue_url(QueueName=name)["QueueUrl"])
        self.wiring = None

    def __enter__(self) -> LocalAws:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _is_aws_error(exc: BaseException) -> bool:
    from botocore.exceptions import BotoCoreError, ClientError

    return isinstance(exc, BotoCoreError | ClientError)
