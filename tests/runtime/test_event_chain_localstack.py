"""The event chain once on LocalStack, whose S3 really notifies SQS (moto's does too, but it is the
implementation the rest of the suite runs on): snapshot PUT → S3 notification → SQS → `quest
consume` → reports, wired by the Pulumi program's own definitions, S3's test event skipped."""

from __future__ import annotations

import json
import logging
import time
import uuid

import pytest
from reports_data import expected, queue_depth, seed_store

from flows.cli import main
from flows.devkit.emulator import wire
from flows.io.store import S3Store

pytestmark = pytest.mark.slow


def wait_for_depth(sqs, queue_url: str, depth: int, timeout: float = 60.0) -> int:
    """The queue's depth once it reaches `depth` (S3 delivers asynchronously), or what it was at the end."""
    deadline = time.monotonic() + timeout
    while (found := queue_depth(sqs, queue_url)) < depth and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def test_a_snapshot_put_reaches_quest_consume_through_real_notifications(
    localstack_backend, prefect_harness, monkeypatch, capsys, caplog
):
    backend = localstack_backend
    s3, sqs = backend.client("s3"), backend.client("sqs")
    bucket = f"quest-chain-{uuid.uuid4().hex[:10]}"
    wiring = wire(s3, sqs, bucket, region=backend.region, endpoint_url=backend.endpoint_url)
    attrs = sqs.get_queue_attributes(QueueUrl=wiring.queue_url, AttributeNames=["Policy"])["Attributes"]
    policy = json.loads(attrs["Policy"])  # the queue's own account: LocalStack's, not moto's
    assert policy["Statement"][0]["Condition"]["StringEquals"]["aws:SourceAccount"] == backend.account_id
    for name, value in backend.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("QUEST_STORE", f"s3://{bucket}")

    # The BLS file is outside the notification's filter; the snapshot is in it. With S3's
    # s3:TestEvent (sent when the notification was configured), two messages are due.
    key, bls, body = seed_store(S3Store(bucket, client=s3))
    assert wait_for_depth(sqs, wiring.queue_url, 2) == 2

    with caplog.at_level(logging.INFO, logger="flows.runtime.sqs"):
        assert main(["consume", "--queue-url", wiring.queue_url, "--once", "--wait-seconds", "1"]) == 0
    out = capsys.readouterr().out
    assert f"received 2, deleted 2, failed 0; reports written to s3://{bucket}/reports/" in out
    assert any("s3:TestEvent" in r.getMessage() for r in caplog.records)  # skipped, not run, not failed

    location = out.split("reports written to ", 1)[1].split()[0]
    store = S3Store(bucket, client=s3)
    prefix = location.removeprefix(f"s3://{bucket}/")
    assert len(store.list_keys(prefix)) == 6  # four reports and two charts
    stats = json.loads(store.read_bytes(prefix + "population_stats.json"))
    assert stats == expected(bls, body, key)["population_stats"]
    assert queue_depth(sqs, wiring.queue_url) == 0 and queue_depth(sqs, wiring.dlq_url) == 0
