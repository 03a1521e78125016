"""End to end: ingest writes a snapshot → S3 notifies SQS → the function runs the reports flow.

The function is the zip under AWS's runtime client (tests/lambda_code.py), configured as the Pulumi
program configures it, with moto's server for S3/SQS and the session's Prefect API.
"""

from __future__ import annotations

import asyncio
import json

import boto3
import pytest
from lambda_code import stack_function
from lambda_pool import aws, runtime_emulator
from reports_data import BLS_KEY, artifacts_of, expected, receive_all, reports_runs_for

from flows.devkit.emulator import wire
from flows.devkit.samples import sample_upstream
from flows.devkit.upstream_server import UpstreamServer
from flows.ingest import ingest
from flows.io.store import S3Store
from flows.runtime.sqs import lambda_shaped_event

BUCKET = "quest-e2e"
TIMEOUT = 120


@pytest.mark.slow
def test_snapshot_to_reports_through_s3_sqs_and_the_function(prefect_harness, moto_server, monkeypatch):
    from prefect.settings import PREFECT_API_URL

    s3, sqs = aws("s3", moto_server), aws("sqs", moto_server)
    wiring = wire(s3, sqs, BUCKET)
    store = S3Store(BUCKET, client=s3)
    surveys, population = sample_upstream(seed=11)
    with UpstreamServer(surveys, population) as upstream:
        monkeypatch.setenv("QUEST_STORE", f"s3://{BUCKET}")
        monkeypatch.setenv("QUEST_BLS_BASE_URL", upstream.bls_base_url)
        monkeypatch.setenv("QUEST_POPULATION_URL", upstream.population_url)
        monkeypatch.setenv("QUEST_RETRY_DELAY_SECONDS", "0")
        monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
        summary = ingest()
    key = summary.population.key

    messages = receive_all(sqs, wiring.queue_url)
    bodies = [json.loads(m["Body"]) for m in messages]
    # Only the snapshot passed the notification filter (the mirrored BLS files did not), + S3's TestEvent.
    created = [r["s3"]["object"]["key"] for b in bodies for r in b.get("Records", [])]
    assert created == [key.replace("/", "%2F")]
    assert sum(b.get("Event") == "s3:TestEvent" for b in bodies) == 1

    event = lambda_shaped_event(messages, wiring.queue_arn, "us-east-1")
    with runtime_emulator() as lam:
        assert lam.runtime_client is not None
        handler, env = stack_function(
            lam.runtime_client,
            bucket=BUCKET,
            timeout_seconds=TIMEOUT,
            prefect_api_url=PREFECT_API_URL.value(),
            extra_env={"AWS_ENDPOINT_URL": moto_server},
        )
        lam.add_function("runner", env=env, handler=handler, timeout_seconds=TIMEOUT)
        client = boto3.client("lambda", endpoint_url=lam.endpoint_url, region_name="us-east-1")
        answer = client.invoke(FunctionName="runner", Payload=json.dumps(event).encode())
        response = json.loads(answer["Payload"].read())
        assert "FunctionError" not in answer, (response, lam.invocations[-1].logs[-3000:])
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
