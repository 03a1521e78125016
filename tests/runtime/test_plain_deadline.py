"""The entries without a Prefect API keep Lambda's deadline (issue 28).

The first two tests call the handler in a process of its own as the zip does (tests/runtime/
zip_entry_probe.py: `prefect.server` not importable, so the plain path is taken on its own
decision), with a Lambda context whose deadline is near; the third runs the zip itself on Python
3.12 under AWS's runtime client (tests/lambda_code.py), whose deadline comes from the Runtime API's
`Lambda-Runtime-Deadline-Ms` and whose timeout really kills. All against moto's S3 as a server and
a loopback upstream. Lambda would kill the process at the deadline; the handler must end before it
with one error naming the limit, and publish nothing half-written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from lambda_code import runtime_client, stack_function
from lambda_emulator import LambdaEmulator
from reports_data import seed_store
from tool_cache import ToolUnavailable, skip_unavailable

from flows.core.names import DEADLINE_MARGIN_SECONDS
from flows.devkit.samples import population_body
from flows.devkit.upstream_server import GeneratedFile, UpstreamServer
from flows.io.store import S3Store

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
PROBE = Path(__file__).with_name("zip_entry_probe.py")
# The function's configured timeout (the stack's QUEST_FUNCTION_TIMEOUT_SECONDS) and the context's
# time left: the margin plus a few seconds for the work itself.
LIMIT = 19
SECONDS = DEADLINE_MARGIN_SECONDS + 4
# How long past Lambda's deadline the probe may run before the test calls it what Lambda would do.
KILL_AFTER = 20
MIB = 1024 * 1024
SCHEDULED = {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}


@pytest.fixture(scope="module")
def upstream():
    """One survey: a big file that streams slower than the budget (multipart uploads in flight at
    the deadline) and one whose peer has stalled (1 byte a second: no read timeout fires)."""
    files = {"pr.big": GeneratedFile(96 * MIB, seed=5), "pr.stalled": b"s" * 4096, "pr.txt": b"a\tb\n"}
    with UpstreamServer({"pr": files}, population_body()) as up:
        up.trickle("/pub/time.series/pr/pr.big", bytes_per_second=4 * MIB)
        up.trickle("/pub/time.series/pr/pr.stalled", bytes_per_second=1)
        yield up


def _invoke(moto_server: str, up: UpstreamServer, bucket: str, event: dict, seconds: float, tmp: Path) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PYTHONPATH=os.pathsep.join([str(ROOT), str(TESTS)]),
        PREFECT_HOME=str(tmp / "prefect"),
        AWS_ENDPOINT_URL=moto_server,
        AWS_LAMBDA_FUNCTION_NAME="quest-test-runner",
        QUEST_STORE=f"s3://{bucket}",
        QUEST_BLS_BASE_URL=up.bls_base_url,
        QUEST_POPULATION_URL=up.population_url,
        QUEST_BLS_SURVEYS="pr",
        QUEST_CONTACT="quest-tests@example.com",
        QUEST_FUNCTION_TIMEOUT_SECONDS=str(LIMIT),
        QUEST_MULTIPART_THRESHOLD_BYTES=str(5 * MIB),
        QUEST_MULTIPART_CHUNK_BYTES=str(5 * MIB),
    )
    try:
        done = subprocess.run(
            [sys.executable, str(PROBE), json.dumps(event), str(seconds)],
            env=env,
            capture_output=True,
            text=True,
            timeout=seconds + KILL_AFTER,
        )
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else str(exc.stderr or "")
        pytest.fail(
            f"the handler was still running {KILL_AFTER} s after Lambda's deadline (Lambda kills it "
            f"at the deadline, with no message): {err[-2000:]}"
        )
    lines = [line for line in done.stdout.splitlines() if line.startswith("OUTCOME ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    return json.loads(lines[-1].removeprefix("OUTCOME ")), done.stderr


def _gets_of(up: UpstreamServer, suffix: str) -> list[Any]:
    """The upstream's GETs of a file; one cut off mid-body is logged once its handler notices."""
    deadline = time.monotonic() + 60
    while not (gets := [r for r in up.file_gets("pr") if r.path.endswith(suffix)]):
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    return gets


def _s3(moto_server: str, bucket: str) -> Any:
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    return s3


def _keys(s3: Any, bucket: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def test_a_stalled_upstream_ends_the_scheduled_ingest_before_lambdas_deadline(
    moto_server, upstream, tmp_path
):
    bucket = "plain-deadline-ingest"
    s3 = _s3(moto_server, bucket)

    outcome, stderr = _invoke(moto_server, upstream, bucket, SCHEDULED, SECONDS, tmp_path)

    assert outcome["prefect_server_loaded"] == []
    assert not outcome["ok"], outcome
    assert outcome["error_type"] == "LambdaTimeLimitReached", outcome
    assert outcome["error"].startswith(f"ingest: Lambda time limit {LIMIT} s reached (request req-"), outcome
    assert "nothing half-written was published" in outcome["error"]
    # It ended before Lambda would have killed it (the margin is 15 s: not a race on a busy machine).
    assert outcome["remaining_ms"] > 0, outcome
    assert "running ingest without orchestration" in stderr
    assert "not in the main thread" not in stderr  # the alarm, not only the checks between steps
    keys = _keys(s3, bucket)
    # Neither file in flight was published, nor anything of an upload; no snapshot was started.
    assert not [k for k in keys if k in ("bls/pr/pr.big", "bls/pr/pr.stalled") or k.startswith("population/")]
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads"), "a multipart upload was left open"
    big = _gets_of(upstream, "/pr.big")
    assert big, "the deadline fell before the transfers started: the test proves less than it says"


def test_sqs_reports_with_too_little_time_left_start_nothing_and_fail_their_messages(moto_server, tmp_path):
    bucket = "plain-deadline-reports"
    s3 = _s3(moto_server, bucket)
    key, _bls, _body = seed_store(S3Store(bucket, client=s3), ts="20300101T000000Z")
    record = {
        "eventSource": "aws:s3",
        "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": bucket}, "object": {"key": key, "size": 10, "eTag": "e1"}},
    }
    event = {
        "Records": [
            {
                "messageId": "m-1",
                "receiptHandle": "r-1",
                "body": json.dumps({"Records": [record]}),
                "eventSource": "aws:sqs",
            }
        ]
    }
    before = _keys(s3, bucket)
    # Less than the margin plus a second: the reports must not start.
    with UpstreamServer({}) as up:
        outcome, stderr = _invoke(moto_server, up, bucket, event, DEADLINE_MARGIN_SECONDS - 5, tmp_path)

    assert outcome["prefect_server_loaded"] == []
    assert outcome["ok"], outcome  # the SQS path reports failed messages, it does not raise
    assert outcome["result"] == {"batchItemFailures": [{"itemIdentifier": "m-1"}]}
    assert f"reports: Lambda time limit {LIMIT} s: request req-" in stderr
    assert "the reports run was not started" in stderr
    assert _keys(s3, bucket) == before  # no reports written


# The zip's function: its budget after the margin, as the in-process probe's.
RIC_LIMIT = DEADLINE_MARGIN_SECONDS + 5


def _warm_bytecode(runtime: Any, tmp: Path) -> None:
    """The bytecode a previous environment of this zip leaves in the harness's cache beside it
    (tests/lambda_code.py): the zip ships none, and compiling Prefect and pandas on this machine
    takes longer than the short timeout this test needs."""
    code = "import flows.runtime.handler, flows.runtime.plain, flows.runtime.sqs, prefect"
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(runtime.task_root),
        "PYTHONPYCACHEPREFIX": str(runtime.pycache),
        "PREFECT_HOME": str(tmp / "prefect"),
    }
    subprocess.run([str(runtime.python), "-c", code], env=env, check=True, timeout=600)


def _invoke_ric(lam: LambdaEmulator, event: dict) -> tuple[Any, dict, Any]:
    client = boto3.client(
        "lambda",
        endpoint_url=lam.endpoint_url,
        region_name="us-east-1",
        config=Config(retries={"total_max_attempts": 1}, read_timeout=RIC_LIMIT + 60),
    )
    response = client.invoke(FunctionName="plain", Payload=json.dumps(event).encode())
    body = json.loads(response["Payload"].read())
    (call,) = lam.calls(response["ResponseMetadata"]["RequestId"])
    return response, body, call


def test_from_the_zip_under_the_runtime_client_a_stalled_ingest_is_an_error_not_a_timeout(
    moto_server, upstream, tmp_path
):
    try:
        runtime = runtime_client()
    except ToolUnavailable as exc:
        skip_unavailable(exc)
        raise
    _warm_bytecode(runtime, tmp_path)
    bucket = "plain-deadline-ric"
    s3 = _s3(moto_server, bucket)
    handler, env = stack_function(
        runtime,
        bucket=bucket,
        timeout_seconds=RIC_LIMIT,
        surveys=("pr",),
        bls_base_url=upstream.bls_base_url,
        population_url=upstream.population_url,
        bls_max_concurrent_requests=8,
        bls_requests_per_second=100.0,
        extra_env={
            "AWS_ENDPOINT_URL": moto_server,
            "QUEST_MULTIPART_THRESHOLD_BYTES": str(5 * MIB),
            "QUEST_MULTIPART_CHUNK_BYTES": str(5 * MIB),
        },
    )
    assert "PREFECT_API_URL" not in env
    with LambdaEmulator(runtime_client=runtime) as lam:
        lam.add_function("plain", env=env, handler=handler, timeout_seconds=RIC_LIMIT)
        # A first event warms the environment (a survey the upstream does not have: a quick error,
        # or too little time left after the cold imports), so the stalled one's time is its own.
        _response, warm, call = _invoke_ric(lam, {"ingest": {"surveys": ["nosuch"]}})
        assert call.outcome == "error", (call.outcome, warm)  # an error keeps the environment
        response, body, call = _invoke_ric(lam, SCHEDULED)
        assert call.warm_starts == 1, "the stalled ingest ran in a cold environment"

    # Lambda's timeout would be `Task timed out after 24.00 seconds` (Sandbox.Timedout): not that.
    assert call.outcome == "error", (call.outcome, call.result, call.logs[-3000:])
    assert response.get("FunctionError") == "Unhandled"
    assert body["errorType"] == "LambdaTimeLimitReached", body
    assert body["errorMessage"].startswith(f"ingest: Lambda time limit {RIC_LIMIT} s reached (request "), body
    assert "running ingest without orchestration" in call.logs  # prefect-client: no local server
    assert "not in the main thread" not in call.logs  # the runtime client calls it in the main thread
    keys = _keys(s3, bucket)
    assert not [k for k in keys if k in ("bls/pr/pr.big", "bls/pr/pr.stalled") or k.startswith("population/")]
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads"), "a multipart upload was left open"
