"""End to end: ingest writes a snapshot → S3 notifies SQS → the Lambda handler runs the reports flow."""

from __future__ import annotations

import asyncio
import json

import boto3
from reports_data import BLS_KEY, artifacts_of, expected, receive_all, reports_runs_for

from flows.devkit.emulator import wire
from flows.devkit.samples import sample_upstream
from flows.devkit.upstream_server import UpstreamServer
from flows.ingest import ingest
from flows.io.store import S3Store
from flows.runtime.handler import handler
from flows.runtime.sqs import lambda_shaped_event

BUCKET = "quest-e2e"


def test_snapshot_to_reports_through_s3_sqs_and_the_lambda_handler(prefect_harness, aws, monkeypatch):
    s3 = boto3.client("s3", region_name="us-east-1")
    sqs = boto3.client("sqs", region_name="us-east-1")
    wiring = wire(s3, sqs, BUCKET)
    store = S3Store(BUCKET, client=s3)
    surveys, population = sample_upstream(seed=11)
    with UpstreamServer(surveys, population) as upstream:
        monkeypatch.setenv("QUEST_STORE", f"s3://{BUCKET}")
        monkeypatch.setenv("QUEST_BLS_BASE_URL", upstream.bls_base_url)
        monkeypatch.setenv("QUEST_POPULATION_URL", upstream.population_url)
        monkeypatch.setenv("QUEST_RETRY_DELAY_SECONDS", "0")
        summary = ingest()
    key = summary.population.key

    messages = receive_all(sqs, wiring.queue_url)
    bodies = [json.loads(m["Body"]) for m in messages]
    # Only the snapshot passed the notification filter (the mirrored BLS files did not), + S3's TestEvent.
    created = [r["s3"]["object"]["key"] for b in bodies for r in b.get("Records", [])]
    assert created == [key.replace("/", "%2F")]
    assert sum(b.get("Event") == "s3:TestEvent" for b in bodies) == 1

    response = handler(lambda_shaped_event(messages, wiring.queue_arn, "us-east-1"), None)
    assert response == {"batchItemFailures": []}

    [run] = asyncio.run(reports_runs_for(key))
    assert run.state.is_completed()
    [prefix] = {k.rsplit("/", 1)[0] for k in store.list_keys("reports/")}
    files = {k.rsplit("/", 1)[1]: store.read_bytes(k) for k in store.list_keys(prefix + "/")}
    assert set(files) == {
        "population_stats.json",
        "best_year_by_series.csv",
        "series_PRS30006032_Q01.csv",
        "summary.md",
        "population_by_year.svg",
        "series_PRS30006032_Q01.svg",
    }
    want = expected(surveys["pr"]["pr.data.0.Current"], population, key)
    assert json.loads(files["population_stats.json"]) == want["population_stats"]
    assert store.read_bytes(BLS_KEY) == surveys["pr"]["pr.data.0.Current"]
    artifacts = asyncio.run(artifacts_of(run.id))
    assert {a.key for a in artifacts} == {
        "reports-headline",
        "reports-charts",
        "population-stats",
        "best-year-by-series",
        "series-prs30006032-q01",
        "reports-summary",
    }
    table = next(a for a in artifacts if a.key == "best-year-by-series")
    assert json.loads(table.data) == want["best_year_by_series"]
