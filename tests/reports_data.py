"""Helpers for the reports, consumer, Lambda SQS and end-to-end tests: seeded stores, wired queues."""

from __future__ import annotations

from typing import Any

from flows.core import names
from flows.core.population import normalise_population
from flows.core.report_maths import compute_reports, population_by_year, read_bls
from flows.devkit.samples import bls_data_rows, format_bls_data, population_body

BLS_KEY = names.bls_key(names.REPORT_SURVEY, names.REPORT_BLS_FILE)


def sample_bls(seed: int = 3) -> bytes:
    return format_bls_data(bls_data_rows("pr", seed=seed, n_series=8, years=range(2008, 2025)))


def seed_store(
    store: Any, ts: str = "20250101T000000Z", generation: str = "tesseract", bls: bytes | None = None
) -> tuple[str, bytes, bytes]:
    """Put a BLS file and one population snapshot; returns (population key, bls bytes, body)."""
    bls = sample_bls() if bls is None else bls
    body = population_body(generation)  # type: ignore[arg-type]
    store.put_bytes(BLS_KEY, bls)
    key = names.population_key(ts)
    store.put_bytes(key, body, content_type="application/json")
    return key, bls, body


def expected(bls: bytes, body: bytes, population_key: str, quarters_only: bool = False) -> dict[str, Any]:
    """The contract object straight from the pure maths (tested on its own in test_report_maths)."""
    return compute_reports(
        read_bls(bls),
        population_by_year(normalise_population(body)),
        quarters_only=quarters_only,
        inputs={"bls_key": BLS_KEY, "population_key": population_key},
    ).to_json()


def receive_all(sqs: Any, queue_url: str, visibility_timeout: int | None = None) -> list[dict[str, Any]]:
    kwargs: dict[str, Any] = {"QueueUrl": queue_url, "MaxNumberOfMessages": 10, "WaitTimeSeconds": 0}
    if visibility_timeout is not None:
        kwargs["VisibilityTimeout"] = visibility_timeout
    return sqs.receive_message(**kwargs).get("Messages", [])


def queue_depth(sqs: Any, queue_url: str) -> int:
    attrs = sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


async def artifacts_of(flow_run_id: Any) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    async with get_client() as client:
        return await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )


async def reports_runs_for(population_key: str) -> list[Any]:
    """The reports flow runs whose parameter names this snapshot."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    async with get_client() as client:
        runs = await client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["reports"])))
    return [r for r in runs if r.parameters.get("population_key") == population_key]
