"""prefect.yaml end to end on a real `prefect server start` (the harness runs no scheduler service).

`prefect deploy --all` → the cron schedule makes scheduled runs on the server (the check that
catches the SQLAlchemy 2.1 scheduler breakage) → a deployment run of the real `ingest` flow goes
worker `run()` → Lambda emulator → handler in a Lambda-like subprocess → COMPLETED in the API, with
the mirror and the population snapshot in moto S3 (a `ThreadedMotoServer` the subprocess reaches).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from aio import run_async
from lambda_emulator import REPO, LambdaEmulator
from lambda_pool import PREFECT, prefect_server, quiet_env
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

from flows.core.names import LAMBDA_RUN_TAG, MIRROR_DEPLOYMENT, population_key
from flows.devkit.samples import population_body, sample_bls_survey
from flows.devkit.upstream_server import UpstreamServer
from flows.worker import LambdaWorker
from infra_pulumi.config import StackConfig
from infra_pulumi.work_pool import WorkPoolProvider

BUCKET = "quest-e2e"
POOL = "quest-lambda"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`prefect server start` on loopback with its scheduler (every 2 s), stopped afterwards."""
    home = tmp_path_factory.mktemp("prefect-server")
    with prefect_server(home, PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="2") as url:
        yield url


@pytest.fixture(scope="module")
def stack(server, moto_server, tmp_path_factory):
    """What `pulumi up` + `prefect deploy --all` leave behind, on loopback."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    survey = sample_bls_survey("pr", seed=5)
    with (
        UpstreamServer({"pr": survey}, population_body(), require_contact=True) as upstream,
        LambdaEmulator() as lam,
    ):
        arn = lam.add_function(
            "quest-dev-runner",
            env={
                "PREFECT_API_URL": server,
                "AWS_ENDPOINT_URL": moto_server,
                "QUEST_STORE": f"s3://{BUCKET}/data",
                "QUEST_CONTACT": "tests@example.com",
                "QUEST_BLS_BASE_URL": upstream.bls_base_url,
                "QUEST_POPULATION_URL": upstream.population_url,
                "QUEST_BLS_SURVEYS": "pr",
            },
        )
        # The pool exactly as the Pulumi component creates it, pointed at the emulator.
        provider = WorkPoolProvider()
        from flows.worker import base_job_template_for

        template = base_job_template_for(arn, region="us-east-1", endpoint_url=lam.endpoint_url)
        provider.create({"name": POOL, "api_url": server, "api_key": None, "base_job_template": template})

        home = tmp_path_factory.mktemp("prefect-cli")
        deploy = subprocess.run(
            [PREFECT, "--no-prompt", "deploy", "--all"],
            cwd=REPO,
            env=quiet_env(home, PREFECT_API_URL=server),
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:]
        yield {"api_url": server, "lam": lam, "s3": s3, "survey": survey, "upstream": upstream}


def _client(api_url: str):
    from prefect.client.orchestration import SyncPrefectClient

    return SyncPrefectClient(api_url)


def test_prefect_yaml_deploys_every_deployment_on_the_lambda_pool(stack):
    with _client(stack["api_url"]) as client:
        ingest = client.read_deployment_by_name("ingest/ingest")
        reports = client.read_deployment_by_name("reports/reports")
        mirror = client.read_deployment_by_name(MIRROR_DEPLOYMENT)
    assert ingest.work_pool_name == reports.work_pool_name == mirror.work_pool_name == POOL
    assert ingest.tags == reports.tags == mirror.tags == [LAMBDA_RUN_TAG]  # the zombie automation's scope
    assert ingest.entrypoint == "flows/ingest.py:ingest"
    # The ingest's fan-out starts one run of it per changed survey; it has no schedule of its own.
    assert mirror.entrypoint == "flows/ingest.py:mirror_survey" and not mirror.schedules
    assert set(mirror.parameter_openapi_schema["properties"]) >= {"survey", "snapshot_population"}
    (schedule,) = ingest.schedules
    assert schedule.schedule.cron == "0 6 * * *" and schedule.schedule.timezone == "UTC"
    assert schedule.active
    assert reports.parameters == {"population_key": "", "quarters_only": False}
    assert set(reports.parameter_openapi_schema["properties"]) >= {"population_key", "quarters_only"}


def test_cron_schedule_creates_scheduled_runs_at_six_utc(stack):
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    deadline = time.monotonic() + 60
    runs = []
    with _client(stack["api_url"]) as client:
        while not runs and time.monotonic() < deadline:
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["ingest"]))
            )
            runs = [r for r in runs if r.state and r.state.is_scheduled()]
            time.sleep(1)
    assert runs, "the server's scheduler created no runs for the daily cron"
    for run in runs:
        start = run.expected_start_time.astimezone(UTC)
        assert (start.hour, start.minute) == (6, 0) and start > datetime.now(UTC)


def test_ingest_deployment_runs_on_lambda_and_fills_s3(stack):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    lam, s3 = stack["lam"], stack["s3"]
    with temporary_settings({PREFECT_API_URL: stack["api_url"]}):
        with _client(stack["api_url"]) as client:
            deployment = client.read_deployment_by_name("ingest/ingest")
            run = client.create_flow_run_from_deployment(deployment.id)

        async def poll():
            async with LambdaWorker(work_pool_name=POOL, create_pool_if_not_found=False) as worker:
                return await worker.get_and_submit_flow_runs()

        assert run.id in {r.id for r in run_async(poll())}
        lam.wait_idle(180)
        # The ingest fanned out: pr changed, so it started pr's mirror run (its child) and did not
        # wait; the next worker round submits it, and that run writes the population snapshot.
        with _client(stack["api_url"]) as client:
            done = client.read_flow_run(run.id)
            children = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run.id]))
            )
        call = [c for c in lam.invocations if c.event.get("flow_run_id") == str(run.id)][-1]
        assert done.state.is_completed(), f"{done.state}\n{call.logs[-4000:]}"
        (child,) = [r for r in children if r.deployment_id is not None]
        assert child.parameters["survey"] == "pr" and child.parameters["snapshot_population"] is True
        assert child.id in {r.id for r in run_async(poll())}
    lam.wait_idle(180)
    with _client(stack["api_url"]) as client:
        child = client.read_flow_run(child.id)
        subflows = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[child.id]))
        )
    child_call = [c for c in lam.invocations if c.event.get("flow_run_id") == str(child.id)][-1]
    assert child.state.is_completed(), f"{child.state}\n{child_call.logs[-4000:]}"
    # The zombie automation watches runs with the tag: the deployment runs and their subflows have it.
    assert LAMBDA_RUN_TAG in done.tags and LAMBDA_RUN_TAG in child.tags
    assert {r.name for r in subflows} and all(LAMBDA_RUN_TAG in r.tags for r in subflows), subflows
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="data/").get("Contents", [])}
    assert {f"data/bls/pr/{name}" for name in stack["survey"]} <= keys
    assert any(k.startswith("data/population/") and k.endswith(".json") for k in keys), keys
    assert population_key("x").startswith("population/")


def test_local_prefect_file_mirrors_the_lambda_one():
    lam_file = yaml.safe_load((REPO / "prefect.yaml").read_text())
    local_file = yaml.safe_load((REPO / "prefect.local.yaml").read_text())
    # prefect.local.yaml has no mirror-survey deployment yet: locally the ingest mirrors in-process.
    lam_file["deployments"] = [d for d in lam_file["deployments"] if d["name"] in {"ingest", "reports"}]
    assert [d["work_pool"]["name"] for d in lam_file["deployments"]] == [POOL, POOL]
    assert [d["work_pool"]["name"] for d in local_file["deployments"]] == ["local", "local"]
    # Only runs in the function carry the tag the zombie automation watches (they heartbeat every
    # 30 s); local runs keep Prefect's 180 s heartbeat and must never be crashed by it.
    assert [d.get("tags") for d in lam_file["deployments"]] == [[LAMBDA_RUN_TAG]] * 2
    assert [d.get("tags") for d in local_file["deployments"]] == [None, None]
    for deployment in (*lam_file["deployments"], *local_file["deployments"]):
        deployment.pop("work_pool")
        deployment.pop("tags", None)
    assert lam_file["deployments"] == local_file["deployments"]
    # The pool name in prefect.yaml is the stack's default `workPoolName`.
    assert StackConfig.model_fields["work_pool_name"].default == POOL
    assert shutil.which(PREFECT) or Path(PREFECT).exists()
