"""The daily ingest on the work pool (issue 12): fan-out, continuation past Lambda's limit, a cheap
no-change day.

A real `prefect server`, the `aws-lambda` pool with the `ingest` and `mirror-survey` deployments,
the Lambda stand-in (the zip under AWS's runtime client) with a SHORT function timeout (40 s: a run
has 25 s), moto S3 (versioned, so every PUT is an object version) and a loopback BLS whose root
lists three surveys, one of them (`pr`) trickled so that its mirror needs more than one
invocation. The worker rounds run here.

1. First day: the ingest starts one `mirror-survey` child per survey and does not wait; `pr`'s
   mirror ends COMPLETED "partial: ..." and continues in follow-up runs until done; the population
   snapshot is written by `pr`'s last run; the store ends byte-identical; nothing Crashed/Failed.
2. No-change day: 1 root GET + 3 listing GETs, 0 file GETs, 0 PUTs under bls/, 1 invocation.
3. One survey changes: exactly one child, and the ingest writes the snapshot itself.
4. Checks that outlast the ingest's own budget: the surveys not checked go to a follow-up ingest.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from lambda_emulator import LambdaEmulator
from lambda_pool import LambdaPool, aws, prefect_server, runtime_emulator

from flows.core.names import DEADLINE_MARGIN_SECONDS, ENV_FUNCTION_TIMEOUT_SECONDS
from flows.devkit.samples import population_body, sample_bls_survey
from flows.devkit.upstream_server import GeneratedFile, UpstreamServer
from flows.io.store import is_internal_key

pytestmark = pytest.mark.slow

BUCKET = "quest-fanout"
TIMEOUT = DEADLINE_MARGIN_SECONDS + 25  # the function's limit: each run has 25 s
KIB = 1024
# pr: 20 files of 512 KiB at 256 KiB/s each, two at a time: ~20 s of transfers, more than a run's.
BIG = {f"pr.part.{i:02d}": GeneratedFile(512 * KIB, seed=i) for i in range(20)}
FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


@pytest.fixture(scope="module")
def stack(moto_server: str, tmp_path_factory) -> Iterator[dict[str, Any]]:
    s3 = aws("s3", moto_server)
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    surveys = {
        "pr": {**sample_bls_survey("pr", seed=1), **BIG},
        "ce": sample_bls_survey("ce", seed=2),
        "la": sample_bls_survey("la", seed=3),
    }
    home = tmp_path_factory.mktemp("prefect-server")
    with (
        UpstreamServer(surveys, population_body(), require_contact=True) as upstream,
        prefect_server(home) as api_url,
        runtime_emulator() as lam,
    ):
        upstream.trickle("*/pr.part.*", bytes_per_second=256 * KIB)
        arn = lam.add_function(
            "runner",
            env={
                "PREFECT_API_URL": api_url,
                "AWS_ENDPOINT_URL": moto_server,
                ENV_FUNCTION_TIMEOUT_SECONDS: str(TIMEOUT),
                "QUEST_STORE": f"s3://{BUCKET}/data",
                "QUEST_CONTACT": "tests@example.com",
                "QUEST_BLS_BASE_URL": upstream.bls_base_url,
                "QUEST_POPULATION_URL": upstream.population_url,
                "QUEST_BLS_SURVEYS": "all",
                "QUEST_CONCURRENCY": "2",
                "QUEST_CONTINUATION_MARGIN_SECONDS": "6",
                "QUEST_RETRIES": "0",
            },
            timeout_seconds=TIMEOUT,
            maximum_retry_attempts=0,
        )
        pool = _pool_with_deployments(api_url, lam, arn)
        yield {
            "pool": pool,
            "lp": LambdaPool(api_url, lam, moto_server, "", BUCKET),
            "s3": s3,
            "upstream": upstream,
            "surveys": surveys,
        }


def _pool_with_deployments(api_url: str, lam: LambdaEmulator, arn: str) -> str:
    """The pool and the two deployments as `pulumi up` + `prefect deploy --all` leave them."""
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.actions import WorkPoolCreate

    from flows.worker import base_job_template_for

    pool = f"fanout-{uuid.uuid4().hex[:8]}"
    template = base_job_template_for(arn, region="us-east-1", endpoint_url=lam.endpoint_url)
    with SyncPrefectClient(api_url) as client:
        client.create_work_pool(WorkPoolCreate(name=pool, type="aws-lambda", base_job_template=template))
        for flow_name, entry in (("ingest", "ingest"), ("mirror-survey", "mirror_survey")):
            client.create_deployment(
                flow_id=client.create_flow_from_name(flow_name),
                name=flow_name,
                entrypoint=f"flows/ingest.py:{entry}",
                work_pool_name=pool,
            )
    return pool


@pytest.fixture(autouse=True)
def _this_api(stack, tmp_path) -> Iterator[None]:
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    with temporary_settings({PREFECT_API_URL: stack["lp"].api_url, PREFECT_HOME: tmp_path / "prefect"}):
        yield


def _pool_runs(lp: LambdaPool) -> list[Any]:
    with lp.client() as client:
        return client.read_flow_runs(limit=200)


def _day(
    stack: dict[str, Any], timeout: float = 300, job_variables: dict[str, Any] | None = None
) -> tuple[Any, list[Any]]:
    """Start the ingest deployment run and drive the pool (worker rounds) until every run is final.
    The ingest run and the runs created meanwhile (children, follow-ups)."""
    lp: LambdaPool = stack["lp"]
    before = {r.id for r in _pool_runs(lp)}
    with lp.client() as client:
        deployment = client.read_deployment_by_name("ingest/ingest").id
        ingest = client.create_flow_run_from_deployment(
            deployment, parameters={}, job_variables=job_variables or {}
        ).id
    deadline = time.monotonic() + timeout
    while True:
        lp.worker_round(stack["pool"])
        lp.lam.wait_idle(TIMEOUT + 30)
        runs = [r for r in _pool_runs(lp) if r.id not in before and r.deployment_id is not None]
        if all(r.state and r.state.type.value in FINAL for r in runs):
            return lp.run(ingest), runs
        assert time.monotonic() < deadline, [(r.name, r.state) for r in runs]


def _children(lp: LambdaPool, parent_id: Any) -> list[Any]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    with lp.client() as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent_id]))
        )
    return [r for r in runs if r.deployment_id is not None]


def _keys(stack: dict[str, Any], prefix: str) -> list[str]:
    listed = stack["s3"].list_objects_v2(Bucket=BUCKET, Prefix=f"data/{prefix}").get("Contents", [])
    return sorted(o["Key"] for o in listed if not is_internal_key(o["Key"]))


def _bls_versions(stack: dict[str, Any]) -> int:
    versions = stack["s3"].list_object_versions(Bucket=BUCKET, Prefix="data/bls/").get("Versions", [])
    return len([v for v in versions if not is_internal_key(v["Key"])])


def test_first_day_fans_out_and_pr_continues_past_the_limit(stack):
    lp: LambdaPool = stack["lp"]
    ingest, runs = _day(stack)
    bad = [r for r in runs if r.state.type.value != "COMPLETED"]
    assert bad == [], "\n".join(f"{r.name}: {r.state.message}\n{lp.invocation_logs(r.id)}" for r in bad)
    # One child per survey, started by the ingest (children of its run in the UI), not waited for.
    children = {r.parameters["survey"]: r for r in _children(lp, ingest.id)}
    assert sorted(children) == ["ce", "la", "pr"]
    assert children["pr"].parameters["snapshot_population"] is True
    assert f"population snapshot written by pr's mirror run {children['pr'].id}" in ingest.state.message
    # pr went over the limit: partial runs, each continuing in a child of its own, the last complete.
    chain, run = [], children["pr"]
    while True:
        chain.append(run)
        match = re.fullmatch(
            r"partial: (\d+) of (\d+) files; continues in run .+? \((\S+)\)", run.state.message or ""
        )
        if match is None:
            break
        (follow,) = _children(lp, run.id)
        assert str(follow.id) == match[3]
        assert {k: follow.parameters[k] for k in run.parameters} == run.parameters
        run = follow
    assert len(chain) >= 2, [(r.name, r.state.message) for r in chain]
    # The day's population snapshot came from pr's last run, after its mirror completed.
    with lp.client() as client:
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

        subflows = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[chain[-1].id])
            )
        )
    assert [r for r in subflows if r.name and r.deployment_id is None]
    assert len(_keys(stack, "population/")) == 1
    for survey, files in stack["surveys"].items():
        assert _keys(stack, f"bls/{survey}/") == sorted(f"data/bls/{survey}/{n}" for n in files)
        for name, body in files.items():
            data = body if isinstance(body, bytes) else b"".join(body.iter_chunks())
            got = stack["s3"].get_object(Bucket=BUCKET, Key=f"data/bls/{survey}/{name}")["Body"].read()
            assert got == data, name


def test_a_no_change_day_costs_one_listing_per_survey_and_one_invocation(stack):
    upstream: UpstreamServer = stack["upstream"]
    lp: LambdaPool = stack["lp"]
    upstream.clear_log()
    invocations, versions = len(lp.lam.invocations), _bls_versions(stack)
    snapshots = len(_keys(stack, "population/"))
    ingest, runs = _day(stack)
    assert ingest.state.type.value == "COMPLETED", ingest.state
    assert [r.id for r in runs] == [ingest.id] and _children(lp, ingest.id) == []
    assert len(upstream.root_gets()) == 1
    assert {s: len(upstream.listing_gets(s)) for s in stack["surveys"]} == {"pr": 1, "ce": 1, "la": 1}
    assert upstream.file_gets() == []
    assert _bls_versions(stack) == versions  # no PUT under bls/
    assert len(lp.lam.invocations) - invocations == 1
    assert len(_keys(stack, "population/")) == snapshots + 1  # the day's snapshot, by the ingest


def test_a_day_where_one_survey_changes_starts_exactly_one_child(stack):
    upstream: UpstreamServer = stack["upstream"]
    lp: LambdaPool = stack["lp"]
    upstream.touch_file("ce", "ce.series")
    invocations = len(lp.lam.invocations)
    snapshots = len(_keys(stack, "population/"))
    ingest, runs = _day(stack)
    (child,) = _children(lp, ingest.id)
    assert child.parameters["survey"] == "ce" and child.parameters["snapshot_population"] is False
    assert sorted(r.id for r in runs) == sorted([ingest.id, child.id])
    assert all(r.state.type.value == "COMPLETED" for r in runs), [(r.name, r.state) for r in runs]
    assert len(lp.lam.invocations) - invocations == 2
    assert len(_keys(stack, "population/")) == snapshots + 1


def test_checks_that_outlast_the_ingest_budget_continue_in_a_follow_up_ingest(stack):
    import httpx

    from flows.core.names import INGEST_CONTINUATION_TAG

    upstream: UpstreamServer = stack["upstream"]
    lp: LambdaPool = stack["lp"]
    upstream.touch_file("la", "la.series")  # la changed: the follow-up must check it and start its mirror
    for survey in ("pr", "ce"):  # the two checks that start at once (QUEST_CONCURRENCY=2): ~8 s each
        url = upstream.survey_url(survey)
        size = len(httpx.get(url, headers={"User-Agent": "tests@example.com"}).content)
        upstream.trickle(f"*/time.series/{survey}/", bytes_per_second=max(1, size // 8), times=1)
    snapshots = len(_keys(stack, "population/"))
    upstream.clear_log()
    # This ingest stops starting checks once less than 20 of its 25 s are left: after pr and ce,
    # which run side by side.
    ingest, runs = _day(stack, job_variables={"env": {"QUEST_CONTINUATION_MARGIN_SECONDS": "20"}})
    assert all(r.state.type.value == "COMPLETED" for r in runs), [(r.name, r.state) for r in runs]
    (pr,), (ce,) = upstream.listing_gets("pr"), upstream.listing_gets("ce")
    assert max(pr.started, ce.started) < min(pr.ended, ce.ended), "pr and ce were checked one after the other"
    match = re.match(
        r"partial: checked 2 of 3 surveys; continues in run .+? \((\S+)\)", ingest.state.message or ""
    )
    assert match, ingest.state.message
    follow = lp.run(uuid.UUID(match[1]))
    assert follow.parameters["surveys"] == ["la"] and INGEST_CONTINUATION_TAG in follow.tags
    assert [c.id for c in _children(lp, ingest.id) if c.parameters.get("survey")] == []
    (child,) = [c for c in _children(lp, follow.id) if c.parameters.get("survey")]
    assert child.parameters["survey"] == "la" and child.state.type.value == "COMPLETED"
    # pr (checked first, unchanged) let the first run write the day's snapshot; the follow-up did not.
    assert (ingest.state.message or "").endswith("population snapshot written")
    assert (follow.state.message or "").endswith("snapshot written by the first ingest run of the day")
    assert len(_keys(stack, "population/")) == snapshots + 1
