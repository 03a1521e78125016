"""The function's role enforced on what the zip does under AWS's runtime client (issue 28, part 2).

The entry paths run as in tests/runtime/test_runtime_client.py (the zip `pulumi up` ships, Python
3.12, `awslambdaric`, the program's handler and environment), against moto's server in this
process, so tests/iam_enforcement.py decides every request it serves the way AWS would. The
function's environment carries the credentials of the program's role, assumed through STS, as
Lambda passes them (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN); the role has
exactly the documents the program emits, and the bucket's and queues' policies are enforced too:
they deny plain HTTP, so moto serves HTTPS (tests/loopback_tls.py).

A stack without a Prefect API: the scheduled ingest, then an SQS batch of the snapshot's S3
notification to the reports (the event source mapping's receive and delete with the role, as
Lambda makes them). Nothing may be denied. Then one grant less, derived from the emitted document
(PutObject on reports/), and the same batch fails with AccessDenied in its answer and its logs.
A work-pool stack (named `pool`, so its role is another): `poll_work_pool` reads the on-failure
queue back and its worker Invokes the function with the due deployment run, which mirrors.
Not enforced here: the Invoke itself (it goes to the emulator, not moto; lambda:InvokeFunction is
enforced in-process, tests/infra/test_policy_enforced.py) and CloudWatch Logs (the emulator keeps
the lines; Lambda's own log writes are not the function's calls).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from enforced_role import add_resource_policies, assume, create_role, trust_policy, without_grant
from iam_enforcement import Decision, Enforcer, enforcing, installed
from lambda_code import loopback_upstream, runtime_client, stack_function
from lambda_emulator import Invocation, LambdaEmulator
from lambda_pool import LambdaPool, invoke, prefect_server, scheduled_event
from loopback_tls import TlsMotoServer, self_signed
from reports_data import receive_all
from stack_policies import emitted_policies, stack
from tool_cache import ToolUnavailable, cache_root, skip_unavailable

from flows.core.names import REPORTS_PREFIX
from flows.devkit.emulator import notification_configuration
from flows.devkit.samples import population_body, sample_bls_survey
from flows.devkit.upstream_server import UpstreamServer
from flows.runtime.sqs import lambda_shaped_event
from infra_pulumi.iam import object_arns

pytestmark = pytest.mark.slow

REGION = "us-east-1"
TIMEOUT = 90
# Decisions per entry path, for the closing note (printed at the end of the module).
TABLE: dict[str, tuple[int, int, int]] = {}


@pytest.fixture(scope="module")
def world(_moto_conditional_puts_are_atomic, tmp_path_factory) -> Iterator[dict[str, Any]]:
    try:
        runtime = runtime_client()
    except ToolUnavailable as exc:
        skip_unavailable(exc)
        raise
    mocks = stack(tmp_path_factory.mktemp("stack"), prefect=False)
    emitted = emitted_policies(mocks)
    bucket = mocks.one("aws:s3/bucket:Bucket").id
    queue = next(q for q in mocks.of_type("aws:sqs/queue:Queue") if q.name.endswith("notifications-queue"))
    role = mocks.one("aws:iam/role:Role")
    reports_put = ("s3:PutObject", *object_arns(f"arn:aws:s3:::{bucket}", (REPORTS_PREFIX,)))
    # Outside /tmp: each execution environment has a /tmp of its own.
    tls = tempfile.mkdtemp(prefix="moto-tls-", dir=cache_root())
    cert, key = self_signed(Path(tls))
    server = TlsMotoServer(cert, key)
    server.start()
    url = server.endpoint_url

    def client(service: str, credentials: dict[str, str] | None = None) -> Any:
        keys = {k.lower(): v for k, v in (credentials or {}).items()}  # boto3's argument names
        return boto3.client(service, endpoint_url=url, region_name=REGION, verify=str(cert), **keys)

    surveys = {"pr": sample_bls_survey("pr", seed=1)}
    try:
        with (
            installed(Enforcer()) as enforcer,
            UpstreamServer(surveys, population_body(), require_contact=True) as upstream,
            LambdaEmulator(runtime_client=runtime) as lam,
        ):
            # Set up as moto's default identity (IAM is off outside `enforcing()`).
            s3, sqs = client("s3"), client("sqs")
            s3.create_bucket(Bucket=bucket)
            queue_url = sqs.create_queue(QueueName=queue.outputs["name"])["QueueUrl"]
            s3.put_bucket_notification_configuration(
                Bucket=bucket, NotificationConfiguration=notification_configuration(queue.arn)
            )
            iam, sts = client("iam"), client("sts")
            trust = trust_policy(emitted, role.name)
            role_name = role.outputs["name"]
            role_arn = create_role(iam, role_name, trust, emitted)
            create_role(iam, f"{role_name}-minus", trust, without_grant(emitted, *reports_put))
            add_resource_policies(enforcer, emitted)

            def function(name: str, credentials: dict[str, str], **settings: Any) -> None:
                """The program's handler and environment; the role's credentials as Lambda passes them."""
                handler, env = stack_function(
                    runtime,
                    timeout_seconds=TIMEOUT,
                    surveys=("pr",),
                    extra_env={"AWS_ENDPOINT_URL": url, "AWS_CA_BUNDLE": str(cert)},
                    **loopback_upstream(upstream),
                    **settings,
                )
                lam.add_function(name, env={**env, **credentials}, handler=handler, timeout_seconds=TIMEOUT)

            function("runner", assume(sts, role_name), bucket=bucket)
            function("minus", assume(sts, f"{role_name}-minus"), bucket=bucket)
            yield {
                "lam": lam,
                "enforcer": enforcer,
                "client": client,
                "s3": s3,
                "bucket": bucket,
                "queue_url": queue_url,
                "queue_arn": queue.arn,
                "role_arn": role_arn,
                "function": function,
                "sts": sts,
                "runner": assume(sts, role_name),
                "reports_put": reports_put,
            }
    finally:
        server.stop()
        shutil.rmtree(tls, ignore_errors=True)
        print("\nentry path (zip, runtime client, role enforced) | invocations | decisions | denied")
        for path, row in TABLE.items():
            print(" | ".join([path, *map(str, row)]))


def _as_role(
    world: dict[str, Any], function: str, event: dict[str, Any], then: Callable[[], None] = lambda: None
) -> tuple[Invocation, Any, list[Decision]]:
    """Invoke `function` with IAM on (until `then` returns): its call, its answer, and every
    decision moto's server made meanwhile."""
    enforcer: Enforcer = world["enforcer"]
    enforcer.decisions.clear()
    with enforcing():
        call, body = invoke(world["lam"], function, event, read_timeout=TIMEOUT + 30)
        then()
    return call, body, list(enforcer.decisions)


def _record(path: str, calls: int, decisions: list[Decision]) -> None:
    TABLE[path] = (calls, len(decisions), sum(not d.allowed for d in decisions))


def _all_allowed(decisions: list[Decision], role_arn: str) -> None:
    assert decisions, "moto's server made no IAM decision: enforcement was not on"
    assert [d for d in decisions if not d.allowed] == []
    # Every request was signed with the assumed role's credentials, not moto's default identity.
    assert {d.request.context["aws:PrincipalArn"] for d in decisions} == {role_arn}


def _keys(world: dict[str, Any], prefix: str) -> list[str]:
    listed = world["s3"].list_objects_v2(Bucket=world["bucket"], Prefix=prefix).get("Contents", [])
    return sorted(o["Key"] for o in listed)


@pytest.fixture(scope="module")
def ingested(world) -> tuple[Invocation, Any, list[Decision]]:
    return _as_role(world, "runner", scheduled_event())


@pytest.fixture(scope="module")
def snapshot_batch(world, ingested) -> dict[str, Any]:
    """The event source mapping's receive (with the function's role): the snapshot's notification."""
    sqs = world["client"]("sqs", world["runner"])
    world["enforcer"].decisions.clear()
    with enforcing():
        messages = receive_all(sqs, world["queue_url"])
    _all_allowed(world["enforcer"].decisions, world["role_arn"])
    event = lambda_shaped_event(messages, world["queue_arn"], REGION)
    assert any("ObjectCreated" in r["body"] for r in event["Records"]), event
    return {"event": event, "messages": messages, "sqs": sqs}


def test_scheduled_ingest_as_the_role(world, ingested):
    call, body, decisions = ingested

    assert call.outcome == "ok", f"{call.result}\n{call.logs}"
    assert [s["survey"] for s in body["surveys"]] == ["pr"]
    _all_allowed(decisions, world["role_arn"])
    assert {"s3:ListBucket", "s3:GetObject", "s3:PutObject"} <= {d.request.action for d in decisions}
    assert _keys(world, "bls/pr/") and len(_keys(world, "population/")) == 1
    _record("scheduled ingest (no Prefect API)", 1, decisions)


def test_sqs_batch_to_the_reports_as_the_role(world, snapshot_batch):
    call, body, decisions = _as_role(world, "runner", snapshot_batch["event"])

    assert call.outcome == "ok", f"{call.result}\n{call.logs}"
    assert body == {"batchItemFailures": []}
    _all_allowed(decisions, world["role_arn"])
    reports = [d for d in decisions if d.request.action == "s3:PutObject"]
    assert reports and all(d.request.resource.startswith(world["reports_put"][1][:-1]) for d in reports)
    assert any(k.endswith("/population_stats.json") for k in _keys(world, "reports/"))
    # The mapping deletes what succeeded, with the function's role.
    entries = [
        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(snapshot_batch["messages"])
    ]
    world["enforcer"].decisions.clear()
    with enforcing():
        snapshot_batch["sqs"].delete_message_batch(QueueUrl=world["queue_url"], Entries=entries)
    _all_allowed(world["enforcer"].decisions, world["role_arn"])
    _record("SQS batch -> reports", 1, decisions)


def test_without_put_on_reports_the_batch_fails_with_access_denied(world, snapshot_batch):
    """The program's policy minus one grant it needs: the reports write is denied, the batch's
    snapshot message fails (to be retried, then dead-lettered), and the logs say AccessDenied."""
    call, body, decisions = _as_role(world, "minus", snapshot_batch["event"])

    assert call.outcome == "ok", f"{call.result}\n{call.logs}"
    snapshot_ids = [
        r["messageId"] for r in snapshot_batch["event"]["Records"] if "ObjectCreated" in r["body"]
    ]
    assert body == {"batchItemFailures": [{"itemIdentifier": i} for i in snapshot_ids]}
    assert "AccessDenied" in call.logs, call.logs
    denied = [d for d in decisions if not d.allowed]
    action, reports_arn = world["reports_put"]
    assert denied and all(d.request.action == action for d in denied), denied
    assert all(d.request.resource.startswith(reports_arn[:-1]) for d in denied), denied
    _record("SQS batch -> reports, role minus PutObject on reports/", 1, decisions)


# --------------------------------------------------------------------------- the work-pool stack


@pytest.fixture(scope="module")
def pool(world, tmp_path_factory) -> Iterator[dict[str, Any]]:
    """The work-pool stack (its own names: stack `pool`) beside the first: its role (the Prefect API
    key's secret, the on-failure queue, invoking itself), its function and a Prefect server."""
    mocks = stack(tmp_path_factory.mktemp("pool-stack"), prefect=True, name="pool")
    emitted = emitted_policies(mocks)
    client = world["client"]
    bucket = mocks.one("aws:s3/bucket:Bucket").id
    client("s3").create_bucket(Bucket=bucket)
    failures = next(q for q in mocks.of_type("aws:sqs/queue:Queue") if q.name.endswith("invoke-failures"))
    failure_url = client("sqs").create_queue(QueueName=failures.outputs["name"])["QueueUrl"]
    secret = mocks.one("aws:secretsmanager/secret:Secret")  # moto picks the ARN's suffix itself
    secret_arn = client("secretsmanager").create_secret(Name=secret.outputs["name"], SecretString="pnu_k")[
        "ARN"
    ]

    def concrete(text: str) -> str:
        return text.replace(secret.arn, secret_arn)

    role = mocks.one("aws:iam/role:Role")
    role_arn = create_role(
        client("iam"), role.outputs["name"], trust_policy(emitted, role.name), emitted, concrete
    )
    add_resource_policies(world["enforcer"], emitted, concrete)
    name = mocks.one("aws:lambda/function:Function").outputs["name"]
    with prefect_server(tmp_path_factory.mktemp("prefect-server")) as api_url:
        world["function"](
            name,
            assume(world["sts"], role.outputs["name"]),
            bucket=bucket,
            prefect_api_url=api_url,
            secret_arn=secret_arn,
            invoke_failure_queue_url=failure_url,
        )
        yield {
            "lp": LambdaPool(api_url, world["lam"], "", "", bucket),
            "function": name,
            "role_arn": role_arn,
        }


def _completed(pool: dict[str, Any], run_id: Any) -> None:
    lp: LambdaPool = pool["lp"]
    lp.lam.wait_idle(TIMEOUT + 30)
    run = lp.wait_state(run_id, ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"), 30)
    assert run.state.type.value == "COMPLETED", f"{run.state}\n{lp.invocation_logs(run_id)}"


def test_poll_work_pool_and_the_run_it_invokes_as_the_role(world, pool):
    """The poll reads the on-failure queue back (reconcile) and its worker Invokes the function with
    the due run, which runs the deployment (the mirror): two entry paths, both as the role."""
    lp: LambdaPool = pool["lp"]
    work_pool, deployment = lp.deployment(
        "flows/ingest.py:mirror_survey", pool["function"], "mirror-survey", parameters={"survey": "pr"}
    )
    run_id = lp.create_run(deployment)
    before = len(world["lam"].invocations)
    call, body, decisions = _as_role(
        world, pool["function"], {"poll_work_pool": work_pool}, then=lambda: _completed(pool, run_id)
    )

    assert call.outcome == "ok", f"{call.result}\n{call.logs}"
    assert body == {"work_pool": work_pool, "submitted": [str(run_id)]}
    (flow_run,) = [c for c in world["lam"].invocations[before:] if c.event.get("flow_run_id") == str(run_id)]
    assert flow_run.invocation_type == "Event" and flow_run.outcome == "ok", flow_run.result
    _all_allowed(decisions, pool["role_arn"])
    assert {"sqs:ReceiveMessage", "secretsmanager:GetSecretValue", "s3:PutObject"} <= {
        d.request.action for d in decisions
    }
    _record(
        "poll_work_pool -> worker Invoke -> deployment run (mirror-survey)",
        len(world["lam"].invocations) - before,
        decisions,
    )
