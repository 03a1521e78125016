"""The long-polling consumer against moto's S3 + SQS, wired like the Pulumi program wires AWS."""

from __future__ import annotations

import json

import boto3
import pytest
from reports_data import expected, queue_depth, receive_all, seed_store

from flows.core.names import NOTIFICATION_EVENTS, POPULATION_PREFIX, POPULATION_SUFFIX
from flows.devkit.emulator import notification_configuration, wire
from flows.io.store import S3Store
from flows.runtime.sqs import consume, process_sqs_batch
from flows.settings import Settings

BUCKET = "quest-consumer"


@pytest.fixture
def wired(aws, monkeypatch):
    """Bucket + queue + DLQ (maxReceiveCount 2) + notification; QUEST_STORE points at the bucket."""
    s3 = boto3.client("s3", region_name="us-east-1")
    sqs = boto3.client("sqs", region_name="us-east-1")
    wiring = wire(s3, sqs, BUCKET, max_receive_count=2)
    monkeypatch.setenv("QUEST_STORE", f"s3://{BUCKET}")
    monkeypatch.setenv("QUEST_RETRY_DELAY_SECONDS", "0")
    store = S3Store(BUCKET, client=s3, multipart_threshold=5 * 1024 * 1024, part_size=5 * 1024 * 1024)
    return wiring, s3, sqs, store


def test_wiring_matches_the_shared_names(wired):
    wiring, s3, sqs, _ = wired
    config = s3.get_bucket_notification_configuration(Bucket=BUCKET)["QueueConfigurations"][0]
    assert config["QueueArn"] == wiring.queue_arn
    assert config["Events"] == list(NOTIFICATION_EVENTS)
    rules = {r["Name"].lower(): r["Value"] for r in config["Filter"]["Key"]["FilterRules"]}
    assert rules == {"prefix": POPULATION_PREFIX, "suffix": POPULATION_SUFFIX}
    assert (
        notification_configuration(wiring.queue_arn)["QueueConfigurations"][0]["Events"] == config["Events"]
    )
    attrs = sqs.get_queue_attributes(QueueUrl=wiring.queue_url, AttributeNames=["All"])["Attributes"]
    assert json.loads(attrs["RedrivePolicy"]) == {"deadLetterTargetArn": wiring.dlq_arn, "maxReceiveCount": 2}
    policy = json.loads(attrs["Policy"])["Statement"][0]
    assert policy["Condition"]["ArnEquals"]["aws:SourceArn"] == f"arn:aws:s3:::{BUCKET}"


def test_test_event_is_deleted_without_a_run(wired):
    wiring, _, sqs, _ = wired
    stats = consume(wiring.queue_url, once=True, wait_seconds=0, client=sqs)
    assert (stats.received, stats.deleted, stats.failed, stats.reports) == (1, 1, 0, [])
    assert queue_depth(sqs, wiring.queue_url) == 0


def test_snapshot_runs_the_reports_and_deletes_its_message(prefect_harness, wired):
    wiring, _, sqs, store = wired
    key, bls, body = seed_store(store)  # also notifies: a BLS key is filtered out by S3, the snapshot is not
    stats = consume(wiring.queue_url, once=True, wait_seconds=0, client=sqs)
    assert (stats.received, stats.deleted, stats.failed) == (2, 2, 0)  # TestEvent + snapshot
    [report] = stats.reports
    assert report.result == expected(bls, body, key)
    assert report.location.startswith(f"s3://{BUCKET}/reports/")
    ts = report.location.rstrip("/").rsplit("/", 1)[-1]
    assert len(store.list_keys(f"reports/{ts}/")) == 6  # four reports and two charts
    assert queue_depth(sqs, wiring.queue_url) == 0


def test_large_snapshot_events_make_one_run(prefect_harness, wired):
    wiring, s3, sqs, store = wired
    receive_all(sqs, wiring.queue_url)  # drop the TestEvent (it becomes invisible for 30 s)
    key, bls, _ = seed_store(store)
    # A 6 MiB snapshot (JSON padded with spaces) goes up through the S3 store as a multipart upload
    # onto its key: S3 notifies once, at the completion, with the whole object there.
    from flows.devkit.samples import population_body

    big = population_body() + b" " * (6 * 1024 * 1024)
    store.put_stream(key, iter([big]), expected_size=len(big))
    messages = receive_all(sqs, wiring.queue_url)
    records = [r for m in messages for r in json.loads(m["Body"])["Records"]]
    names = [r["eventName"] for r in records]
    assert names.count("ObjectCreated:CompleteMultipartUpload") == 1 and len(records) >= 2, names
    assert all(".quest-" not in r["s3"]["object"]["key"] for r in records)
    event = {
        "Records": [
            {"messageId": m["MessageId"], "body": m["Body"], "eventSource": "aws:sqs"} for m in messages
        ]
    }
    outcome = process_sqs_batch(event, Settings())
    assert outcome.failures == [] and outcome.report is not None
    assert outcome.report.result == expected(bls, big, key)


def test_malformed_message_reaches_the_dlq_and_spares_its_neighbours(prefect_harness, wired):
    wiring, _, sqs, store = wired
    sqs.send_message(QueueUrl=wiring.queue_url, MessageBody="this is not JSON")
    sqs.send_message(QueueUrl=wiring.queue_url, MessageBody=json.dumps({"Records": [{"eventSource": "x"}]}))
    seed_store(store)
    first = consume(wiring.queue_url, once=True, wait_seconds=0, client=sqs, visibility_timeout=0)
    assert first.received == 4  # TestEvent, two poison messages, the snapshot
    assert (first.deleted, first.failed, len(first.reports)) == (2, 2, 1)
    # The poison messages come back; the redrive policy (maxReceiveCount 2) moves them on the next try.
    second = consume(wiring.queue_url, once=True, wait_seconds=0, client=sqs, visibility_timeout=0)
    assert (second.received, second.failed) == (2, 2)
    third = consume(wiring.queue_url, once=True, wait_seconds=0, client=sqs, visibility_timeout=0)
    assert third.received == 0
    dead = receive_all(sqs, wiring.dlq_url)
    assert sorted(m["Body"][:10] for m in dead) == sorted(["this is no", '{"Records"'])
    assert queue_depth(sqs, wiring.queue_url) == 0


def test_failed_run_keeps_the_snapshot_message_for_a_retry(prefect_harness, wired):
    wiring, _, sqs, store = wired
    from flows.devkit.samples import population_body

    store.put_bytes("population/20250101T000000Z.json", population_body())  # but no BLS file yet
    stats = consume(wiring.queue_url, once=True, wait_seconds=0, client=sqs, visibility_timeout=0)
    assert (stats.received, stats.deleted, stats.failed, stats.reports) == (2, 1, 1, [])
    assert queue_depth(sqs, wiring.queue_url) == 1  # retried later, dead-lettered if it keeps failing
