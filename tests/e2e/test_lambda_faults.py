"""A Lambda work pool that survives Lambda (issue 11), end to end.

A real `prefect server`, the real `aws-lambda` worker submitting deployment runs in this process
(`get_and_submit_flow_runs`), the Lambda stand-in running the function's zip under AWS's runtime
client in Lambda-like execution environments, with the stack's async settings (no Lambda retries,
an on-failure destination queue, CloudWatch logs; moto for SQS, Logs and S3), and one fault each:

1. a run outliving the function's time limit ends CRASHED naming the limit, before Lambda kills it;
2. an invocation killed with -9 is reconciled CRASHED from its on-failure destination record on the
   next worker round, with the request id, the reason and the function's last log lines;
3. a throttled Invoke puts the run back to Scheduled (AwaitingRetry); a later round runs it;
4. a duplicated async delivery (concurrent, or back to back) executes the flow body once;
5. a cancel from the API (as the UI sends it) stops a mirror of a slow upstream mid multipart upload:
   CANCELLED within 30 s, nothing published, no multipart upload left open. Its run is submitted
   when the module starts (a multipart upload opens only after 10 MiB, ~40 s at the trickle's
   rate), so the other scenarios run meanwhile; the cancel is the module's last test.

Each scenario's time from the fault to the final state is printed and collected in `TIMINGS`
(printed again when the module ends; run with `-s`).
"""

from __future__ import annotations

import re
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from lambda_emulator import REPO
from lambda_pool import LambdaPool, aws, prefect_server, runtime_emulator, wait_for

from flows.core.names import (
    CANCEL_CHECK_SECONDS,
    DEADLINE_MARGIN_SECONDS,
    ENV_FUNCTION_TIMEOUT_SECONDS,
    ENV_INVOKE_FAILURE_QUEUE_URL,
    INVOKE_MAX_EVENT_AGE_SECONDS,
    INVOKE_MAX_RETRY_ATTEMPTS,
)
from flows.devkit.samples import sample_bls_survey
from flows.devkit.upstream_server import GeneratedFile, UpstreamServer

pytestmark = pytest.mark.slow

# The fault probes' flows, beside the zip's code in the task root (their entrypoints name this path).
PROBE_FLOWS = {"tests/worker_flows.py": (REPO / "tests" / "worker_flows.py").read_text()}
BUCKET = "quest-faults"
# The time-limit scenario's function: the run gets what is left after the deadline margin (15 s).
SHORT_TIMEOUT = DEADLINE_MARGIN_SECONDS + 15
# A file the mirror streams at 256 KiB/s (the trickle's rate, one 256 KiB chunk a second): with
# 5 MiB parts its multipart upload opens after 10 MiB (~40 s) and stays open until the end (~160 s).
# The mirror run starts with the module (`mirror_run`), so the other scenarios run meanwhile and
# the cancel, last, lands while the upload is open.
BIG_FILE = "pr.big"
BIG_SIZE = 40 * 1024 * 1024
PART = 5 * 1024 * 1024
MIRROR_TIMEOUT = 300
TRICKLE = 256 * 1024

FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")

TIMINGS: dict[str, str] = {}


def _record(name: str, text: str) -> None:
    TIMINGS[name] = text
    print(f"\n[lambda-faults] {name}: {text}", flush=True)


# --------------------------------------------------------------------------- the stack, on loopback


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamServer]:
    survey: dict[str, Any] = dict(sample_bls_survey("pr", seed=7))
    survey[BIG_FILE] = GeneratedFile(BIG_SIZE, seed=3)
    with UpstreamServer({"pr": survey}, require_contact=True) as server:
        server.trickle(f"*/{BIG_FILE}", bytes_per_second=TRICKLE)
        yield server


@pytest.fixture(scope="module")
def faults(moto_server: str, upstream: UpstreamServer, tmp_path_factory) -> Iterator[LambdaPool]:
    sqs = aws("sqs", moto_server)
    aws("s3", moto_server).create_bucket(Bucket=BUCKET)
    queue_url = sqs.create_queue(QueueName=f"invoke-failures-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    home = tmp_path_factory.mktemp("prefect-server")
    with (
        prefect_server(home) as api_url,
        runtime_emulator(extra_files=PROBE_FLOWS, sqs=sqs, cloudwatch_logs=moto_server) as lam,
        pytest.MonkeyPatch.context() as mp,
    ):
        # The worker (this process) reads the destination queue and the function's logs in moto;
        # it finds the queue in its pool's defaults, as the stack sets them (the variable is for a
        # worker inside the function).
        mp.setenv("AWS_ENDPOINT_URL", moto_server)
        mp.delenv(ENV_INVOKE_FAILURE_QUEUE_URL, raising=False)

        def function(name: str, timeout: float, reserved_concurrency: int | None = None, **env: str) -> None:
            lam.add_function(
                name,
                reserved_concurrency=reserved_concurrency,
                env={
                    "PREFECT_API_URL": api_url,
                    "AWS_ENDPOINT_URL": moto_server,
                    ENV_FUNCTION_TIMEOUT_SECONDS: str(int(timeout)),
                    **env,
                },
                timeout_seconds=timeout,
                maximum_retry_attempts=INVOKE_MAX_RETRY_ATTEMPTS,
                maximum_event_age_seconds=INVOKE_MAX_EVENT_AGE_SECONDS,
                on_failure_queue_url=queue_url,
            )

        function("runner", 60)
        function("queued", 60, reserved_concurrency=1)
        function("short", SHORT_TIMEOUT)
        function(
            "mirror",
            MIRROR_TIMEOUT,
            QUEST_STORE=f"s3://{BUCKET}/data",
            QUEST_CONTACT="tests@example.com",
            QUEST_BLS_BASE_URL=upstream.bls_base_url,
            QUEST_BLS_SURVEYS="pr",
            QUEST_MULTIPART_THRESHOLD_BYTES=str(PART),
            QUEST_MULTIPART_CHUNK_BYTES=str(PART),
            QUEST_RETRIES="0",
        )
        yield LambdaPool(
            api_url, lam, moto_server, queue_url, BUCKET, {"invoke_failure_queue_url": queue_url}
        )
    print("\n[lambda-faults] fault → final state:", flush=True)
    for name, text in TIMINGS.items():
        print(f"  {name}: {text}", flush=True)


@pytest.fixture(scope="module", autouse=True)
def mirror_run(faults: LambdaPool) -> Iterator[Any]:
    """The cancel scenario's mirror run, submitted first: its big file streams meanwhile."""
    pool, deployment = faults.deployment(
        "flows/ingest.py:mirror_survey", "mirror", "mirror-survey", parameters={"survey": "pr"}
    )
    run_id = faults.create_run(deployment, {"survey": "pr"})
    submitted = faults.worker_round(pool)  # the cancel test checks it was
    yield run_id, submitted
    for call in faults.invocations(run_id):  # nothing left streaming when the module ends
        faults.lam.kill(call.request_id, signal.SIGKILL)


@pytest.fixture(autouse=True)
def _this_api(faults: LambdaPool, tmp_path) -> Iterator[None]:
    """Prefect clients and the worker in this process talk to this module's server."""
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    with temporary_settings({PREFECT_API_URL: faults.api_url, PREFECT_HOME: tmp_path / "prefect"}):
        yield


def _flush_logs() -> None:
    """The worker's log lines go to the API in batches from this process: send them now."""
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)


def _epoch(state: Any) -> float:
    return state.timestamp.timestamp()


def _only_call(faults: LambdaPool, run_id: Any, timeout: float = 15) -> Any:
    calls = wait_for(lambda: faults.invocations(run_id), timeout, what=f"an invocation for {run_id}")
    assert len(calls) == 1, [(c.request_id, c.status, c.outcome) for c in calls]
    return calls[0]


# --------------------------------------------------------------------------- 1. the time limit


def test_run_over_the_time_limit_ends_crashed_naming_the_limit(faults: LambdaPool):
    pool, deployment = faults.deployment("tests/worker_flows.py:sleeper", "short", "sleeper")
    run_id = faults.create_run(deployment, {"seconds": 600, "marker": "over-the-limit"})
    assert run_id in faults.worker_round(pool)
    call = _only_call(faults, run_id)
    wait_for(lambda: call.started_at, 15, what="the invocation's start")
    lambda_deadline = call.started_at + SHORT_TIMEOUT
    budget_end = lambda_deadline - DEADLINE_MARGIN_SECONDS  # the fault: the run outlives its budget

    # The engine first ends the run Failed ("TimedOut"); the function then replaces that with the
    # Crashed naming the limit. So the final state is read once the invocation is over.
    assert call.done.wait(SHORT_TIMEOUT + 30), "the invocation outlived Lambda's deadline"
    if call.outcome != "ok":
        # Lambda ended it (the run missed its own deadline): let reconciliation say what the run
        # became (another message, which fails the assertion below, saying which path it took).
        faults.worker_round(pool)
    run = faults.wait_state(run_id, FINAL, 10)
    final = _epoch(run.state)
    assert run.state.type.value in ("CRASHED", "FAILED"), f"{run.state!r}\n{faults.invocation_logs(run_id)}"
    expected = rf"Lambda time limit {SHORT_TIMEOUT} s reached \(request {re.escape(call.request_id)}\)"
    assert re.search(expected, run.state.message or ""), f"{run.state!r}\n{faults.invocation_logs(run_id)}"
    assert final <= lambda_deadline + 60
    assert call.outcome == "ok", f"Lambda ended the invocation ({call.outcome}): the run outlived it"
    assert call.result["state_type"] == run.state.type.value, call.result
    timed_out = [s for s in faults.states(run_id) if s.name == "TimedOut"]
    transient = f"; Failed (TimedOut) shown {final - _epoch(timed_out[-1]):.1f} s before" if timed_out else ""
    # The run's page says which invocation ran it and where its logs are.
    _flush_logs()
    logs = faults.logs(run_id)
    assert call.request_id in logs and "/aws/lambda/short" in logs, logs[-3000:]
    assert call.attempts[0].log_stream in logs and "console.aws.amazon.com" in logs
    _record(
        "time limit",
        f"{final - budget_end:+.1f} s after the run's budget ended "
        f"({lambda_deadline - final:.1f} s before Lambda's {SHORT_TIMEOUT} s deadline{transient})",
    )


# --------------------------------------------------------------------------- 2. kill -9


def test_killed_invocation_is_reconciled_crashed_on_the_next_round(faults: LambdaPool):
    marker = f"kill-probe-{uuid.uuid4().hex[:8]}"
    pool, deployment = faults.deployment("tests/worker_flows.py:sleeper", "runner", "sleeper")
    run_id = faults.create_run(deployment, {"seconds": 45, "marker": marker})
    assert run_id in faults.worker_round(pool)
    faults.wait_state(run_id, ("RUNNING",), 30)
    call = _only_call(faults, run_id)
    time.sleep(1.5)  # a few marker lines in the function's log
    fault = time.time()
    assert faults.lam.kill(call.request_id, signal.SIGKILL) == 1
    assert call.done.wait(30)
    assert call.outcome == "killed" and call.destination_sent, (call.outcome, call.destination_sent)
    assert faults.run(run_id).state.type.value == "RUNNING"  # nothing else knows yet

    faults.worker_round(pool)  # drains the destination queue first
    run = faults.wait_state(run_id, FINAL, 10)
    final = _epoch(run.state)
    assert run.state.type.value == "CRASHED", f"{run.state!r}"
    message = run.state.message or ""
    assert call.request_id in message, message
    assert "signal: killed" in message or "Runtime.ExitError" in message, message

    _flush_logs()
    logs = wait_for(
        lambda: (text := faults.logs(run_id)) and marker in text and text, 15, what="forwarded lines"
    )
    assert f"{marker} tick 0" in logs
    _record("kill -9", f"{final - fault:.1f} s (kill → CRASHED, one worker round)")


# --------------------------------------------------------------------------- 3. throttled


def test_throttled_invoke_goes_back_to_scheduled_and_runs_later(faults: LambdaPool):
    lam = faults.lam
    pool, deployment = faults.deployment("tests/worker_flows.py:echo", "runner", "echo")
    run_id = faults.create_run(deployment)
    lam.throttle(None, function="runner")  # every attempt, botocore's own retries included
    fault = time.time()
    try:
        faults.worker_round(pool)
    finally:
        lam.clear_throttle()
    throttled = [c for c in faults.invocations(run_id) if c.status == 429]
    assert throttled, "the worker did not invoke"
    run = faults.run(run_id)
    assert run.state.type.value == "SCHEDULED", f"{run.state!r}"
    assert run.state.name == "AwaitingRetry", run.state.name
    assert "TooManyRequestsException" in (run.state.message or ""), run.state.message
    delay = run.state.state_details.scheduled_time.timestamp() - _epoch(run.state)
    assert delay > 0, "rescheduled with no delay"
    rescheduled = _epoch(run.state) - fault

    def submitted() -> bool:
        if any(c.status == 202 for c in faults.invocations(run_id)):
            return True
        faults.worker_round(pool)
        return False

    wait_for(submitted, delay + 60, 1.0, what="a second submission")
    run = faults.wait_state(run_id, FINAL, 60)
    final = _epoch(run.state)
    assert run.state.type.value == "COMPLETED", f"{run.state!r}\n{faults.invocation_logs(run_id)}"
    kinds = [s.type.value for s in faults.states(run_id)]
    assert "CRASHED" not in kinds and "FAILED" not in kinds, kinds
    _record(
        "throttled",
        f"{final - fault:.1f} s (throttle → COMPLETED; AwaitingRetry after {rescheduled:.1f} s, "
        f"{len(throttled)} throttled request(s), retry delay {delay:.1f} s)",
    )


# --------------------------------------------------------------------------- 4. duplicate delivery


def _executions(s3: Any, run_id: Any) -> list[str]:
    found = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"executions/{run_id}/").get("Contents", [])
    return [o["Key"] for o in found]


@pytest.mark.parametrize("back_to_back", [False, True], ids=["concurrent", "back-to-back"])
def test_duplicate_delivery_executes_the_flow_once(faults: LambdaPool, back_to_back: bool):
    s3 = aws("s3", faults.moto_url)
    pool, deployment = faults.deployment(
        "tests/worker_flows.py:count_execution", "runner", "count-execution", parameters={"bucket": BUCKET}
    )
    run_id = faults.create_run(deployment, {"bucket": BUCKET, "seconds": 3})
    faults.lam.duplicate_next_events(1, back_to_back=back_to_back)
    fault = time.time()
    assert run_id in faults.worker_round(pool)
    calls = wait_for(lambda: len(faults.invocations(run_id)) == 2 and faults.invocations(run_id), 15)
    assert len({c.request_id for c in calls}) == 1 and [c.duplicate for c in calls] == [False, True]
    for call in calls:
        assert call.done.wait(60)
    settled = max(c.ended_at for c in calls)
    run = faults.wait_state(run_id, FINAL, 30)
    assert run.state.type.value == "COMPLETED", f"{run.state!r}\n{faults.invocation_logs(run_id)}"
    assert len(_executions(s3, run_id)) == 1, faults.invocation_logs(run_id)
    # Neither delivery failed (a failure would reach the destination and be reconciled as a crash).
    assert [c.outcome for c in calls] == ["ok", "ok"], faults.invocation_logs(run_id)
    assert not any(c.destination_sent for c in calls)
    # One of the two says it started nothing.
    assert [c.result.get("started", True) for c in calls].count(False) == 1, [c.result for c in calls]
    faults.worker_round(pool)
    assert faults.run(run_id).state.type.value == "COMPLETED"
    final = max(_epoch(run.state), settled)
    mode = "back to back" if back_to_back else "concurrent"
    _record(f"duplicate ({mode})", f"{final - fault:.1f} s (invoke → COMPLETED and both deliveries over)")


def _marks(s3: Any, run_id: Any) -> set[str]:
    found = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"marks/{run_id}/").get("Contents", [])
    return {o["Key"].rsplit("/", 1)[1] for o in found}


def _gil_loop_size(seconds: float) -> int:
    """How many `sum(range(n))` steps hold the GIL for about `seconds` on this machine."""
    started = time.perf_counter()
    sum(range(2_000_000))
    return int(2_000_000 * seconds / max(time.perf_counter() - started, 1e-6))


def test_duplicate_delivery_during_a_cancel_leaves_the_run_to_its_invocation(faults: LambdaPool):
    from prefect.client.schemas.objects import State, StateType

    s3 = aws("s3", faults.moto_url)
    pool, deployment = faults.deployment("tests/worker_flows.py:busy_then_mark", "queued", "busy-then-mark")
    # The body holds the GIL ~12 s (the first delivery's cancel watcher cannot poll meanwhile).
    run_id = faults.create_run(deployment, {"bucket": BUCKET, "n": _gil_loop_size(12), "seconds": 10})
    faults.lam.duplicate_next_events(1)  # the second delivery waits: reserved concurrency 1
    assert run_id in faults.worker_round(pool)
    wait_for(lambda: "before" in _marks(s3, run_id), 60, 0.2, what="the body's start")
    fault = time.time()
    with faults.client() as client:
        client.set_flow_run_state(run_id, State(type=StateType.CANCELLING))
    faults.lam.update_function("queued", reserved_concurrency=2)  # the duplicate runs now
    calls = faults.invocations(run_id)
    for call in calls:
        assert call.done.wait(90)
    run = faults.wait_state(run_id, FINAL, 10)
    states = [(s.type.value, s.name) for s in faults.states(run_id)]
    assert run.state.type.value == "CANCELLED", (states, [c.result for c in calls])
    assert "started it" not in (run.state.message or ""), run.state.message  # it had started
    assert "end" not in _marks(s3, run_id), "the body ran on after the cancel"
    _record("duplicate during a cancel", f"{_epoch(run.state) - fault:.1f} s (Cancelling → CANCELLED)")


# --------------------------------------------------------------------------- 5. cancel (last)


def _open_uploads(s3: Any) -> list[dict[str, Any]]:
    return s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])


def test_cancel_mid_upload_stops_the_mirror_without_publishing(faults: LambdaPool, mirror_run: Any):
    from prefect.client.schemas.objects import State, StateType

    s3 = aws("s3", faults.moto_url)
    run_id, submitted = mirror_run
    assert run_id in submitted
    call = _only_call(faults, run_id)
    uploads = wait_for(
        lambda: _open_uploads(s3) or call.done.is_set(), 80, 0.5, what="a multipart upload of the big file"
    )
    assert uploads is not True, f"the run ended before any upload opened\n{faults.invocation_logs(run_id)}"
    assert faults.run(run_id).state.type.value == "RUNNING"

    fault = time.time()
    with faults.client() as client:  # what the UI's and the CLI's cancel send
        client.set_flow_run_state(run_id, State(type=StateType.CANCELLING))
    run = faults.wait_state(run_id, FINAL, 30)
    final = _epoch(run.state)
    assert run.state.type.value == "CANCELLED", f"{run.state!r}\n{faults.invocation_logs(run_id)}"
    assert "by worker" not in (run.state.message or ""), run.state.message  # the function stopped it
    assert final - fault <= 30
    assert call.done.wait(30), "the invocation went on after the run was cancelled"
    ended = call.ended_at
    assert call.outcome == "ok", f"{call.outcome}\n{call.logs[-3000:]}"

    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="data/").get("Contents", [])]
    assert f"data/bls/pr/{BIG_FILE}" not in keys, "a half-transferred file was published"
    assert "data/bls/pr/pr.data.0.Current" in keys, keys  # the whole files before it are there
    assert not [k for k in keys if ".quest-tmp" in k], keys
    assert _open_uploads(s3) == []
    # The big file was still streaming when the run stopped (the cancel, not its end, stopped it).
    assert call.started_at + BIG_SIZE / TRICKLE - ended > 10
    _record(
        "cancel",
        f"{final - fault:.1f} s (Cancelling → CANCELLED; check every {CANCEL_CHECK_SECONDS} s), "
        f"invocation ended {ended - fault:.1f} s after the cancel",
    )
