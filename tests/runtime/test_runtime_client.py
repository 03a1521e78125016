"""The function as Lambda runs it: the zip `pulumi up` ships, on Python 3.12, under AWS's runtime
interface client (`awslambdaric`), through the emulator's execution environments.

Every entry path runs end to end from the zip: the scheduled ingest without a Prefect API (the zip
has only prefect-client, so this is the path `flows/runtime/plain.py` takes), an SQS batch with a
poison message (partial batch failure) to the reports, the worker's Invoke of a deployment flow
run, and `poll_work_pool`. Then Lambda's rules as the runtime client meets them: a warm
environment is reused, a timeout and running out of memory kill it, an unhandled error keeps it,
and a handler module the zip lacks is an init error. The handler string and the environment are
the Pulumi program's own (`infra_pulumi.runner`); upstreams are the loopback BLS/DataUSA server,
S3/SQS moto's server, the Prefect API a real `prefect server`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lambda_code import RuntimeClient, runtime_client, stack_function
from lambda_emulator import Invocation, LambdaEmulator
from lambda_pool import LambdaPool, aws, invoke, prefect_server, scheduled_event
from reports_data import receive_all
from tool_cache import ToolUnavailable, skip_unavailable

from flows.devkit.emulator import wire
from flows.devkit.samples import population_body, sample_bls_survey
from flows.devkit.upstream_server import UpstreamServer
from flows.runtime.sqs import lambda_shaped_event

pytestmark = pytest.mark.slow

BUCKET = "quest-ric"
TIMEOUT = 90
# The probe (beside the zip's code) does what a rule test needs: sleep, hold memory, report.
PROBE = """
import os, sys, time

def handler(event, context):
    action = event.get("action")
    print(f"probe {action} {context.aws_request_id}", flush=True)
    if action == "sleep":
        time.sleep(event["seconds"])
    elif action == "hog":
        hoard = []
        while True:
            hoard.append(b"x" * (8 << 20))
            time.sleep(0.01)
    import awslambdaric, boto3, botocore, prefect, pydantic, flows
    return {
        "pid": os.getpid(),
        "python": "%d.%d" % sys.version_info[:2],
        "files": {m.__name__: m.__file__ for m in (awslambdaric, boto3, botocore, prefect, pydantic, flows)},
        "task_root": os.environ["LAMBDA_TASK_ROOT"],
        "timeout_variable": os.environ.get("AWS_LAMBDA_FUNCTION_TIMEOUT"),
        "remaining_ms": context.get_remaining_time_in_millis(),
        "writable_task_root": os.access(os.environ["LAMBDA_TASK_ROOT"], os.W_OK)
        and _can_write(os.environ["LAMBDA_TASK_ROOT"]),
        "tmp_writable": _can_write("/tmp"),
    }

def _can_write(folder):
    try:
        with open(os.path.join(folder, ".probe-write"), "w") as f:
            f.write("x")
    except OSError:
        return False
    os.remove(os.path.join(folder, ".probe-write"))
    return True
"""
# Invocations per entry path, for the table of the closing note (printed at the end).
TABLE: dict[str, dict[str, Any]] = {}


@pytest.fixture(scope="module")
def runtime() -> RuntimeClient:
    try:
        return runtime_client()
    except ToolUnavailable as exc:
        skip_unavailable(exc)
        raise


@pytest.fixture(scope="module")
def world(runtime: RuntimeClient, moto_server: str, tmp_path_factory) -> Iterator[dict[str, Any]]:
    s3, sqs = aws("s3", moto_server), aws("sqs", moto_server)
    wiring = wire(s3, sqs, BUCKET)  # the bucket's snapshot notifications go to the reports queue
    surveys = {"pr": sample_bls_survey("pr", seed=1), "ce": sample_bls_survey("ce", seed=2)}
    with (
        UpstreamServer(surveys, population_body(), require_contact=True) as upstream,
        prefect_server(tmp_path_factory.mktemp("prefect-server")) as api_url,
        LambdaEmulator(
            runtime_client=runtime, extra_files={"probe.py": PROBE}, sqs=sqs, cloudwatch_logs=moto_server
        ) as lam,
    ):
        common = {
            "bucket": BUCKET,
            "timeout_seconds": TIMEOUT,
            "surveys": ("pr", "ce"),
            "bls_base_url": upstream.bls_base_url,
            "population_url": upstream.population_url,
            "bls_max_concurrent_requests": 8,
            "bls_requests_per_second": 100.0,
            "extra_env": {"AWS_ENDPOINT_URL": moto_server},
        }
        handler, plain_env = stack_function(runtime, **common)
        _, runner_env = stack_function(runtime, prefect_api_url=api_url, **common)
        lam.add_function("plain", env=plain_env, handler=handler, timeout_seconds=TIMEOUT)
        lam.add_function("runner", env=runner_env, handler=handler, timeout_seconds=TIMEOUT)
        yield {
            "lam": lam,
            "s3": s3,
            "sqs": sqs,
            "wiring": wiring,
            "api_url": api_url,
            "pool": LambdaPool(api_url, lam, moto_server, "", BUCKET),
            "handler": handler,
            "env": plain_env,
        }
    _print_table()


@pytest.fixture(autouse=True)
def _this_api(world, tmp_path) -> Iterator[None]:
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    with temporary_settings({PREFECT_API_URL: world["api_url"], PREFECT_HOME: tmp_path / "prefect"}):
        yield


def _invoke(lam: LambdaEmulator, function: str, event: dict[str, Any]) -> tuple[Invocation, Any]:
    return invoke(lam, function, event, read_timeout=TIMEOUT + 30)


def _record(path: str, calls: list[Invocation], state: str) -> None:
    TABLE[path] = {
        "invocations": len(calls),
        "cold": sum(c.cold_starts for c in calls),
        "warm": sum(c.warm_starts for c in calls),
        "state": state,
        "max_mb": max(a.max_memory_mb for c in calls for a in c.attempts),
    }


def _print_table() -> None:
    print("\nentry path | invocations | cold | warm | final Prefect state | max memory MB")
    for path, row in TABLE.items():
        cells = [path, *(str(row[k]) for k in ("invocations", "cold", "warm", "state", "max_mb"))]
        print(" | ".join(cells))


def _keys(world: dict[str, Any], prefix: str) -> list[str]:
    listed = world["s3"].list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return sorted(o["Key"] for o in listed)


# --------------------------------------------------------------------------- the four entry paths


def test_scheduled_ingest_runs_without_a_prefect_api(world):
    """EventBridge's `Scheduled Event` on a stack without a Prefect API: the plain entry, from the zip."""
    call, body = _invoke(world["lam"], "plain", scheduled_event())

    assert call.outcome == "ok", call.result
    assert sorted(s["survey"] for s in body["surveys"]) == ["ce", "pr"]
    assert "running ingest without orchestration" in call.logs, "prefect-client has no local server"
    # The plain entry's progress reaches the log stream: Lambda's root logger is at WARNING.
    assert "\tmirror pr done: " in call.logs and "[INFO]\t" in call.logs
    assert _keys(world, "bls/pr/") and _keys(world, "bls/ce/")
    assert len(_keys(world, "population/")) == 1
    _record("scheduled ingest (no Prefect API)", [call], "none (no API)")


def test_sqs_batch_makes_the_reports_and_fails_only_the_poison(world):
    """The snapshot's S3 notification (from moto's queue) plus a poison message, in one batch."""
    sqs, wiring = world["sqs"], world["wiring"]
    sqs.send_message(QueueUrl=wiring.queue_url, MessageBody="<html>not an S3 event</html>")
    messages = receive_all(sqs, wiring.queue_url)
    event = lambda_shaped_event(messages, wiring.queue_arn, "us-east-1")
    poison = [r["messageId"] for r in event["Records"] if r["body"].startswith("<html>")]
    assert len(poison) == 1 and any("ObjectCreated" in r["body"] for r in event["Records"])

    call, body = _invoke(world["lam"], "runner", event)

    assert call.outcome == "ok", call.result
    assert body == {"batchItemFailures": [{"itemIdentifier": poison[0]}]}
    (run,) = _runs_of(world, "reports")
    assert run.state.type.value == "COMPLETED", run.state
    assert any(k.endswith("/population_stats.json") for k in _keys(world, "reports/"))
    _record("SQS batch -> reports", [call], run.state.type.value)


def test_the_workers_invoke_runs_a_deployment_flow_run(world):
    lp: LambdaPool = world["pool"]
    before = len(world["lam"].invocations)
    pool, deployment = lp.deployment(
        "flows/ingest.py:mirror_survey", "runner", "mirror-survey", parameters={"survey": "ce"}
    )
    run_id = lp.create_run(deployment)
    assert lp.worker_round(pool) == [run_id]
    world["lam"].wait_idle(TIMEOUT + 30)

    run = lp.wait_state(run_id, ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"), 30)
    assert run.state.type.value == "COMPLETED", f"{run.state}\n{lp.invocation_logs(run_id)}"
    calls = world["lam"].invocations[before:]
    assert [c.event.get("flow_run_id") for c in calls] == [str(run_id)]
    assert calls[0].invocation_type == "Event" and calls[0].outcome == "ok"
    _record("worker Invoke -> deployment run (mirror-survey)", calls, run.state.type.value)


def test_poll_work_pool_submits_the_due_run_to_the_function(world):
    lp: LambdaPool = world["pool"]
    lam: LambdaEmulator = world["lam"]
    pool, deployment = lp.deployment(
        "flows/ingest.py:mirror_survey", "runner", "mirror-survey", parameters={"survey": "pr"}
    )
    run_id = lp.create_run(deployment)
    before = len(lam.invocations)

    call, body = _invoke(lam, "runner", {"poll_work_pool": pool})
    lam.wait_idle(TIMEOUT + 30)

    assert call.outcome == "ok", call.result
    assert body == {"work_pool": pool, "submitted": [str(run_id)]}
    run = lp.wait_state(run_id, ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"), 30)
    assert run.state.type.value == "COMPLETED", f"{run.state}\n{lp.invocation_logs(run_id)}"
    calls = lam.invocations[before:]
    (flow_run_call,) = [c for c in calls if c.event.get("flow_run_id") == str(run_id)]
    assert flow_run_call.invocation_type == "Event" and flow_run_call.outcome == "ok"
    # The poll was busy when its own invoke arrived: the run took another environment.
    assert flow_run_call.attempts[0].environment != call.attempts[0].environment
    _record("poll_work_pool (+ the run it submitted)", calls, run.state.type.value)


def _runs_of(world: dict[str, Any], flow_name: str) -> list[Any]:
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with world["pool"].client() as client:
        return client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])))


# --------------------------------------------------------------------------- Lambda's rules


def _probe(world: dict[str, Any], **options: Any) -> str:
    name = f"probe-{uuid.uuid4().hex[:8]}"
    world["lam"].add_function(name, env=world["env"], handler="probe.handler", **options)
    return name


def test_a_warm_environment_takes_the_next_invocation_and_imports_come_from_the_zip(world, runtime):
    function = _probe(world, timeout_seconds=30)
    first, one = _invoke(world["lam"], function, {"action": "report"})
    second, two = _invoke(world["lam"], function, {"action": "report"})

    assert first.attempts[0].cold is True and second.attempts[0].cold is False
    assert one["pid"] == two["pid"] == first.attempts[0].pid == second.attempts[0].pid
    assert one["python"] == "3.12"
    task_root = Path(one["task_root"])
    for module in ("boto3", "botocore", "prefect", "pydantic", "flows"):
        assert Path(one["files"][module]).is_relative_to(task_root), (module, one["files"][module])
    assert Path(one["files"]["awslambdaric"]).is_relative_to(runtime.python.parent.parent)
    assert one["timeout_variable"] is None, "Lambda does not set AWS_LAMBDA_FUNCTION_TIMEOUT"
    assert 20_000 < one["remaining_ms"] <= 30_000, "the deadline is Lambda-Runtime-Deadline-Ms"
    assert one["writable_task_root"] is False and one["tmp_writable"] is True


def test_the_timeout_kills_the_environment_and_answers_like_lambda(world):
    function = _probe(world, timeout_seconds=3)
    call, body = _invoke(world["lam"], function, {"action": "sleep", "seconds": 60})
    again, _ = _invoke(world["lam"], function, {"action": "report"})

    assert call.function_error == "Unhandled" and call.outcome == "timeout"
    assert body == {
        "errorType": "Sandbox.Timedout",
        "errorMessage": f"RequestId: {call.request_id} Error: Task timed out after 3.00 seconds",
    }
    assert again.attempts[0].cold is True and again.attempts[0].pid != call.attempts[0].pid


def test_memory_over_the_limit_is_an_out_of_memory_kill(world):
    function = _probe(world, memory_mb=160, timeout_seconds=30)
    call, body = _invoke(world["lam"], function, {"action": "hog"})

    assert call.function_error == "Unhandled" and call.outcome == "oom"
    assert body == {
        "errorType": "Runtime.OutOfMemory",
        "errorMessage": f"RequestId: {call.request_id} Error: Runtime exited with error: signal: killed",
    }
    assert call.attempts[0].max_memory_mb > 160


def test_an_unhandled_error_is_the_runtime_clients_body_and_the_environment_stays(world):
    lam: LambdaEmulator = world["lam"]
    name = f"real-{uuid.uuid4().hex[:8]}"
    lam.add_function(name, env=world["env"], handler=world["handler"], timeout_seconds=30)
    call, body = _invoke(lam, name, {"not": "an event of ours"})
    again, _ = _invoke(lam, name, {"not": "an event of ours"})

    assert call.function_error == "Unhandled" and call.outcome == "error"
    assert body["errorType"] == "UnknownEvent" and body["requestId"] == call.request_id
    assert body["errorMessage"] == "unrecognised event with keys ['not']"
    assert any("flows/runtime/handler.py" in line for line in body["stackTrace"])
    assert "[ERROR] UnknownEvent: unrecognised event" in call.logs
    assert again.attempts[0].cold is False and again.attempts[0].pid == call.attempts[0].pid


def test_a_handler_module_the_zip_lacks_is_an_init_error(world):
    lam: LambdaEmulator = world["lam"]
    name = f"missing-{uuid.uuid4().hex[:8]}"
    lam.add_function(name, env=world["env"], handler="flows.runtime.lambda_function.handler")
    call, body = _invoke(lam, name, {})
    again, _ = _invoke(lam, name, {})

    assert call.function_error == "Unhandled" and call.outcome == "init_error"
    assert body == {
        "errorMessage": (
            "Unable to import module 'flows.runtime.lambda_function': "
            "No module named 'flows.runtime.lambda_function'"
        ),
        "errorType": "Runtime.ImportModuleError",
        "requestId": "",
        "stackTrace": [],
    }
    assert again.attempts[0].cold is True, "a failed init leaves no environment to reuse"
