"""The Lambda entry point's SQS path, called in-process with batches received from moto's SQS."""

from __future__ import annotations

import asyncio
import json

import boto3
import pytest
from reports_data import artifacts_of, expected, receive_all, reports_runs_for, seed_store

from flows.core.names import LAMBDA_RUN_TAG
from flows.devkit.emulator import wire
from flows.io.store import S3Store
from flows.runtime.handler import event_kind, handler
from flows.runtime.sqs import lambda_shaped_event

BUCKET = "quest-lambda"


@pytest.fixture
def wired(aws, monkeypatch):
    s3 = boto3.client("s3", region_name="us-east-1")
    sqs = boto3.client("sqs", region_name="us-east-1")
    wiring = wire(s3, sqs, BUCKET)
    monkeypatch.setenv("QUEST_STORE", f"s3://{BUCKET}")
    monkeypatch.setenv("QUEST_RETRY_DELAY_SECONDS", "0")
    return wiring, sqs, S3Store(BUCKET, client=s3)


def batch(sqs, wiring) -> dict:
    event = lambda_shaped_event(receive_all(sqs, wiring.queue_url), wiring.queue_arn, "us-east-1")
    assert event_kind(event) == "sqs"
    return event


def test_batch_with_poison_fails_only_the_poison(prefect_harness, wired):
    wiring, sqs, store = wired
    bad_bodies = ("<html>oops</html>", json.dumps({"Event": "something else"}))
    for bad in bad_bodies:
        sqs.send_message(QueueUrl=wiring.queue_url, MessageBody=bad)
    key, bls, body = seed_store(store, ts="20300101T000000Z")
    event = batch(sqs, wiring)
    poison = [r["messageId"] for r in event["Records"] if r["body"] in bad_bodies]
    assert len(event["Records"]) == 4 and len(poison) == 2  # + the TestEvent and the snapshot

    response = handler(event, None)

    assert sorted(f["itemIdentifier"] for f in response["batchItemFailures"]) == sorted(poison)
    assert set(response) == {"batchItemFailures"}
    [run] = asyncio.run(reports_runs_for(key))
    assert run.state.is_completed()
    assert LAMBDA_RUN_TAG in run.tags  # from its creation: the zombie automation's scope
    assert {a.key for a in asyncio.run(artifacts_of(run.id))} >= {"reports-summary", "population-stats"}
    [stats_key] = [k for k in store.list_keys("reports/") if k.endswith("/population_stats.json")]
    assert json.loads(store.read_bytes(stats_key)) == expected(bls, body, key)["population_stats"]


def test_several_snapshots_in_one_batch_make_one_run_on_the_newest(prefect_harness, wired):
    wiring, sqs, store = wired
    # Timestamps no other test uses: the session's Prefect API keeps every run.
    seed_store(store, ts="20310101T000000Z")
    newest, bls, body = seed_store(store, ts="20310301T000000Z")
    seed_store(store, ts="20310201T000000Z")
    response = handler(batch(sqs, wiring), None)
    assert response == {"batchItemFailures": []}
    assert len(asyncio.run(reports_runs_for(newest))) == 1
    assert asyncio.run(reports_runs_for("population/20310101T000000Z.json")) == []
    assert asyncio.run(reports_runs_for("population/20310201T000000Z.json")) == []


def test_a_failing_run_fails_the_snapshot_messages_not_the_test_event(prefect_harness, wired):
    wiring, sqs, store = wired
    store.put_bytes("population/20250101T000000Z.json", b'{"data": []}')  # junk snapshot, no BLS file
    event = batch(sqs, wiring)
    snapshot_ids = [r["messageId"] for r in event["Records"] if "ObjectCreated" in r["body"]]
    response = handler(event, None)
    assert [f["itemIdentifier"] for f in response["batchItemFailures"]] == snapshot_ids


def test_without_a_prefect_api_the_reports_still_run(wired, monkeypatch):
    """A stack without Prefect: the function has prefect-client and no API, the reports run plain."""
    import flows.runtime.plain as plain

    monkeypatch.setattr(plain, "prefect_api_available", lambda: False)
    wiring, sqs, store = wired
    key, bls, body = seed_store(store, ts="20320101T000000Z")
    response = handler(batch(sqs, wiring), None)
    assert response == {"batchItemFailures": []}
    [stats_key] = [k for k in store.list_keys("reports/") if k.endswith("/population_stats.json")]
    assert json.loads(store.read_bytes(stats_key)) == expected(bls, body, key)["population_stats"]
    assert (
        len([k for k in store.list_keys("reports/") if k.startswith(stats_key.rsplit("/", 1)[0])]) == 6
    )  # four reports and two charts
