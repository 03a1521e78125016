"""The function side of the work pool: entrypoints, the run's env, the API key from its secret."""

from __future__ import annotations

import json

import pytest

from flows.core.errors import FlowRunEntryError
from flows.core.names import ENV_PREFECT_API_KEY_SECRET_ARN
from flows.io.environ import patched_environ
from flows.runtime.flow_run import (
    api_key_from_secret_string,
    check_prefect_api_target,
    event_run_env,
    load_prefect_api_key,
    module_entrypoint,
    run_flow_run,
)
from flows.runtime.handler import prepare_runtime


@pytest.mark.parametrize(
    ("entrypoint", "expected"),
    [
        ("flows/ingest.py:ingest", "flows.ingest:ingest"),
        ("./flows/reports.py:reports", "flows.reports:reports"),
        ("flows.ingest:ingest", "flows.ingest:ingest"),
    ],
)
def test_module_entrypoint(entrypoint, expected):
    assert module_entrypoint(entrypoint) == expected


@pytest.mark.parametrize("bad", [None, "", "flows/ingest.py", "/abs/flows/x.py:f", "../x.py:f", "a-b/x.py:f"])
def test_module_entrypoint_rejects(bad):
    with pytest.raises(FlowRunEntryError):
        module_entrypoint(bad)


def test_event_env_applies_only_run_settings():
    env = {
        "quest_bls_surveys": "pr",
        "PREFECT__FLOW_RUN_ID": "x",
        "PREFECT_API_URL": "http://elsewhere",
        "prefect_api_url": "http://elsewhere",
        "PREFECT_API_KEY": "k",
        "PREFECT_HOME": "/var/task",
        "AWS_ACCESS_KEY_ID": "a",
        "LAMBDA_TASK_ROOT": "/",
        "_HANDLER": "x",
        "QUEST_STORE": "s3://other",
        "UNSET": None,
    }
    result = event_run_env(env)
    assert result.accepted == {"QUEST_BLS_SURVEYS": "pr"}
    assert len(result.refused) == 9
    assert event_run_env(None).accepted == {} and event_run_env(None).refused == ()
    # Not an object: refused as a whole, the run proceeds without it.
    (refusal,) = event_run_env(["QUEST_STORE=s3://other"]).refused
    assert "JSON object" in refusal.message()


def test_applied_env_restores_for_the_next_warm_invocation():
    environ = {"KEEP": "1", "OVERRIDE": "old"}
    with patched_environ({"OVERRIDE": "new", "ADDED": "2"}, environ=environ):
        assert environ == {"KEEP": "1", "OVERRIDE": "new", "ADDED": "2"}
    assert environ == {"KEEP": "1", "OVERRIDE": "old"}


def test_bad_flow_run_id_is_a_clear_error():
    with pytest.raises(FlowRunEntryError, match="not a UUID"):
        run_flow_run("nope")


def test_secret_string_forms():
    assert api_key_from_secret_string(" pnu_abc \n", "s") == "pnu_abc"
    assert api_key_from_secret_string(json.dumps({"api_key": "pnu_j"}), "s") == "pnu_j"
    assert api_key_from_secret_string(json.dumps({"PREFECT_API_KEY": "pnu_k"}), "s") == "pnu_k"
    for bad in ("", "{not json", json.dumps({"other": 1})):
        with pytest.raises(FlowRunEntryError):
            api_key_from_secret_string(bad, "s")


def test_prepare_runtime_reads_the_api_key_from_secrets_manager(aws):
    import boto3

    sm = boto3.client("secretsmanager", region_name="us-east-1")
    arn = sm.create_secret(Name="quest/prefect-api-key", SecretString="pnu_from_secret")["ARN"]
    environ = {
        "AWS_LAMBDA_FUNCTION_NAME": "runner",
        ENV_PREFECT_API_KEY_SECRET_ARN: arn,
        "PREFECT_API_URL": "https://api.prefect.cloud/api/accounts/a/workspaces/w",
    }
    prepare_runtime(environ)
    assert environ["PREFECT_API_KEY"] == "pnu_from_secret"
    assert environ["PREFECT_HOME"] == "/tmp/prefect"
    # Warm start / explicit key: no second read.
    sm.put_secret_value(SecretId=arn, SecretString="pnu_rotated")
    assert load_prefect_api_key(environ) is False
    assert environ["PREFECT_API_KEY"] == "pnu_from_secret"
    # No secret configured: nothing happens.
    assert load_prefect_api_key({}) is False


def test_missing_secret_is_a_clear_error(aws):
    environ = {
        ENV_PREFECT_API_KEY_SECRET_ARN: "arn:aws:secretsmanager:us-east-1:123456789012:secret:gone",
        "PREFECT_API_URL": "http://127.0.0.1:4200/api",
    }
    with pytest.raises(FlowRunEntryError, match="secret .*gone.*ResourceNotFoundException"):
        load_prefect_api_key(environ)
    assert "PREFECT_API_KEY" not in environ


@pytest.mark.parametrize(
    "url",
    [
        None,
        "http://prefect.example/api",
        "HTTP://prefect.example/api",
        "http://127.0.0.1.evil.com/api",
        "http://localhost.evil.com/api",
        "https://evil@127.0.0.1/api",
        "http://127.0.0.1@evil.com/api",
    ],
)
def test_the_key_is_never_loaded_for_an_unsafe_api_url(aws, url):
    import boto3

    sm = boto3.client("secretsmanager", region_name="us-east-1")
    arn = sm.create_secret(Name="quest/key", SecretString="pnu_from_secret")["ARN"]
    environ = {ENV_PREFECT_API_KEY_SECRET_ARN: arn}
    if url is not None:
        environ["PREFECT_API_URL"] = url
    with pytest.raises(FlowRunEntryError, match="refusing to send the Prefect API key"):
        prepare_runtime(environ)
    assert "PREFECT_API_KEY" not in environ
    # A key given directly (no secret) is held to the same rule.
    with pytest.raises(FlowRunEntryError, match="refusing"):
        load_prefect_api_key({"PREFECT_API_KEY": "pnu_direct", "PREFECT_API_URL": url or ""})


@pytest.mark.parametrize(
    ("url", "safe"),
    [
        ("https://api.prefect.cloud/api", True),
        ("http://127.0.0.1:4200/api", True),
        ("http://prefect.example/api", False),
        ("http://localhost.evil.com/api", False),
    ],
)
def test_what_prefect_loaded_is_checked_too(url, safe):
    """Profiles or any-case names could set the URL Prefect really uses: that one is checked."""
    from prefect.settings import PREFECT_API_KEY, PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: url, PREFECT_API_KEY: "pnu_x"}):
        if safe:
            check_prefect_api_target()
        else:
            with pytest.raises(FlowRunEntryError, match="refusing"):
                check_prefect_api_target()
    with temporary_settings({PREFECT_API_URL: "http://prefect.example/api"}):
        check_prefect_api_target()  # no credential configured: nothing to leak


def test_refused_env_is_logged_by_name_never_by_value(prefect_harness, caplog):
    import logging
    import uuid

    from prefect.exceptions import ObjectNotFound

    caplog.set_level(logging.WARNING, logger="flows.runtime.flow_run")
    with pytest.raises(ObjectNotFound):  # no such run: only the logging before it matters here
        run_flow_run(str(uuid.uuid4()), env={"Prefect_Api_Url": "http://value-canary.example"})
    assert "'Prefect_Api_Url' not applied" in caplog.text
    assert "value-canary" not in caplog.text


# --------------------------------------------------------------------------- real runs (issue 11)
# Deployments of the flows below (entrypoint `test_flow_run:<flow>`, this very module), run by
# `run_flow_run` in the test's main thread as the handler runs them in Lambda's, with a small
# stand-in for Lambda's context. Every flow appends a line to `marks` each time its body starts.

import contextvars  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

from prefect import flow  # noqa: E402

from flows.core.invocation import MIN_RUN_SECONDS  # noqa: E402

MARGIN = 2.5  # DEADLINE_MARGIN_SECONDS, scaled down
CHECK = 0.5  # CANCEL_CHECK_SECONDS, scaled down


class FakeContext:
    """What the handler reads from Lambda's context object."""

    def __init__(self, request_id: str = "req-1", seconds: float = 60.0) -> None:
        self.aws_request_id = request_id
        self.log_group_name = "/aws/lambda/quest-test-runner"
        self.log_stream_name = "2025/01/02/[$LATEST]0123abcd"
        self._deadline = time.monotonic() + seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def _mark(marks: str) -> None:
    with Path(marks).open("a") as f:
        f.write("ran\n")


def _runs(marks: Path) -> int:
    return len(marks.read_text().splitlines()) if marks.exists() else 0


@flow(name="lambda-quick")
def quick(marks: str) -> str:
    _mark(marks)
    return "ok"


@flow(name="lambda-blocked")
def blocked(marks: str, seconds: float = 60.0, how: str = "sleep") -> str:
    """Blocks the way a run waits on work: in a sleep, or on a lock (a mirror waiting on transfers)."""
    _mark(marks)
    if how == "sleep":
        time.sleep(seconds)
    else:
        threading.Event().wait(seconds)
    return "woke up"


def _deploy(flow_name: str, entry: str, parameters: dict | None = None, pid: str | None = None) -> uuid.UUID:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name(flow_name)
        deployment_id = client.create_deployment(
            flow_id=flow_id, name=f"{flow_name}-{uuid.uuid4().hex[:8]}", entrypoint=entry
        )
        run = client.create_flow_run_from_deployment(deployment_id, parameters=parameters or {})
        if pid:
            client.update_flow_run(run.id, infrastructure_pid=pid)
    return run.id


def _states(run_id):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return sorted(client.read_flow_run_states(run_id), key=lambda state: state.timestamp)


def _read(run_id):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id)


def _run_logs(run_id) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    from flows.runtime.handler import flush_prefect

    flush_prefect()
    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
    return "\n".join(log.message for log in logs)


def _in_thread(target, *args):
    """A helper thread that sees this test's Prefect settings (the harness's API)."""
    thread = threading.Thread(target=contextvars.copy_context().run, args=(target, *args), daemon=True)
    thread.start()
    return thread


def _cancel_when_running(run_id, times: dict, after: float = 0.3) -> None:
    """What the UI's Cancel button does, once the run is RUNNING: propose CANCELLING."""
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling

    deadline = time.monotonic() + 60
    with get_client(sync_client=True) as client:
        while client.read_flow_run(run_id).state.type.value != "RUNNING":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(after)
        times["cancelled"] = time.monotonic()
        client.set_flow_run_state(run_id, Cancelling(message="cancelled from the UI"))


def test_the_run_page_says_where_the_logs_are(prefect_harness, tmp_path):
    marks = tmp_path / "marks"
    run_id = _deploy("lambda-quick", "test_flow_run:quick", {"marks": str(marks)})
    result = run_flow_run(str(run_id), env={"HTTPS_PROXY": "http://x:1"}, context=FakeContext("req-logs"))
    assert result["state_type"] == "COMPLETED" and _runs(marks) == 1
    logs = _run_logs(run_id)
    assert "run env 'HTTPS_PROXY' not applied" in logs, logs
    assert "Lambda request req-logs" in logs and "/aws/lambda/quest-test-runner" in logs
    assert (
        "https://us-east-1.console.aws.amazon.com/cloudwatch/home?region=us-east-1#logsV2:log-groups/log-group/"
        "$252Faws$252Flambda$252Fquest-test-runner/log-events/2025$252F01$252F02$252F$255B$2524LATEST$255D0123abcd"
    ) in logs
    # A local caller (no context) runs as before.
    run_id = _deploy("lambda-quick", "test_flow_run:quick", {"marks": str(marks)})
    assert run_flow_run(str(run_id))["state_type"] == "COMPLETED" and _runs(marks) == 2


@pytest.mark.parametrize("how", ["sleep", "lock"])
def test_a_run_past_the_deadline_ends_crashed_before_lambda_kills_it(prefect_harness, tmp_path, how, capsys):
    marks = tmp_path / "marks"
    run_id = _deploy("lambda-blocked", "test_flow_run:blocked", {"marks": str(marks), "how": how})
    seconds = MARGIN + 2.0  # Lambda would kill the invocation this long after the start
    context = FakeContext("req-late", seconds)
    started = time.monotonic()
    result = run_flow_run(str(run_id), context=context, margin_seconds=MARGIN, check_seconds=CHECK)
    ended = time.monotonic() - started
    run = _read(run_id)
    message = (
        f"Lambda time limit 5 s reached (request req-late): stopped {MARGIN:g} s before Lambda would "
        "have killed the invocation"
    )
    assert run.state.type.value == "CRASHED", run.state
    assert message in run.state.message and result["message"] == run.state.message
    assert result["state_type"] == "CRASHED"
    # One transition to the end: never a Failed "TimedOut" first (automations on Failed would fire).
    assert [s.type.value for s in _states(run_id)][-2:] == ["RUNNING", "CRASHED"]
    # The flow stopped at the margin (its timeout), not when its blocking wait would have ended.
    with capsys.disabled():
        print(f"\n[deadline/{how}] timeout at {seconds - MARGIN:.1f} s, final state after {ended:.2f} s")
    assert seconds - MARGIN - 0.2 < ended < seconds - 0.25, ended
    assert context.get_remaining_time_in_millis() > 250  # time left to flush the logs
    assert _runs(marks) == 1
    assert message in _run_logs(run_id)


def test_a_run_with_its_own_shorter_timeout_keeps_it(prefect_harness, tmp_path):
    """The flow's own timeout is shorter than Lambda's: a normal TimedOut failure, not a crash."""
    from flows.runtime.flow_run import execute_flow_run
    from flows.runtime.watch import Invocation

    marks = tmp_path / "marks"
    run_id = _deploy("lambda-blocked", "test_flow_run:blocked", {"marks": str(marks)})
    flow_run = _read(run_id)
    short = blocked.with_options(timeout_seconds=1)
    result = execute_flow_run(
        short, flow_run, _logger(flow_run), Invocation(request_id="r"), 1.0, MARGIN, CHECK
    )
    assert result["state_type"] == "FAILED" and result["state"] == "TimedOut"


def _logger(flow_run):
    from prefect.logging.loggers import flow_run_logger

    return flow_run_logger(flow_run=flow_run)


def test_too_little_time_left_does_not_start_the_run(prefect_harness, tmp_path):
    marks = tmp_path / "marks"
    run_id = _deploy("lambda-quick", "test_flow_run:quick", {"marks": str(marks)})
    result = run_flow_run(
        str(run_id), context=FakeContext("req-short", MARGIN + MIN_RUN_SECONDS / 2), margin_seconds=MARGIN
    )
    run = _read(run_id)
    assert run.state.type.value == "CRASHED" and result["state_type"] == "CRASHED"
    assert "request req-short" in run.state.message and "not started" in run.state.message
    assert _runs(marks) == 0


@pytest.mark.parametrize("how", ["sleep", "lock"])
def test_a_cancel_mid_run_ends_it_cancelled(prefect_harness, tmp_path, how, capsys):
    import signal

    marks = tmp_path / "marks"
    run_id = _deploy("lambda-blocked", "test_flow_run:blocked", {"marks": str(marks), "how": how})
    times: dict[str, float] = {}
    canceller = _in_thread(_cancel_when_running, run_id, times)
    handler_before = signal.getsignal(signal.SIGTERM)
    result = run_flow_run(
        str(run_id), context=FakeContext("req-cancel"), margin_seconds=MARGIN, check_seconds=CHECK
    )
    returned = time.monotonic()
    canceller.join(5)
    run = _read(run_id)
    assert run.state.type.value == "CANCELLED", run.state
    assert result["state_type"] == "CANCELLED"
    took = returned - times["cancelled"]
    with capsys.disabled():
        print(
            f"\n[cancel/{how}] CANCELLING → run_flow_run returned CANCELLED after {took:.2f} s "
            f"(check every {CHECK} s)"
        )
    assert took < 2 * CHECK + 1.0, took
    assert _runs(marks) == 1
    # Nothing of the cancel stays behind for the next run of a warm process.
    from prefect._internal import control_listener

    assert control_listener.get_intent() is None
    assert signal.getsignal(signal.SIGTERM) is handler_before
    assert not [t for t in threading.enumerate() if t.name.startswith("cancel-watch-")]


def test_a_run_cancelled_before_it_started_ends_cancelled(prefect_harness, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling

    marks = tmp_path / "marks"
    run_id = _deploy("lambda-quick", "test_flow_run:quick", {"marks": str(marks)}, pid="req-early")
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run_id, Cancelling(), force=True)
    result = run_flow_run(str(run_id), context=FakeContext("req-early"))
    assert result["state_type"] == "CANCELLED" and _read(run_id).state.type.value == "CANCELLED"
    assert "before Lambda request req-early started it" in _read(run_id).state.message
    assert _runs(marks) == 0


def test_a_watcher_that_cannot_reach_the_api_does_not_fail_the_run(prefect_harness, tmp_path, monkeypatch):
    from flows.runtime import watch

    marks = tmp_path / "marks"
    run_id = _deploy("lambda-blocked", "test_flow_run:blocked", {"marks": str(marks), "seconds": 1.5})
    loop = watch.CancelWatch._loop

    def unreachable(self):
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
            loop(self)

    monkeypatch.setattr(watch.CancelWatch, "_loop", unreachable)
    result = run_flow_run(str(run_id), context=FakeContext("req-offline"), check_seconds=0.2)
    assert result["state_type"] == "COMPLETED"


# --------------------------------------------------------------------------- duplicates


def test_a_run_of_another_request_is_not_run(prefect_harness, tmp_path):
    marks = tmp_path / "marks"
    run_id = _deploy("lambda-quick", "test_flow_run:quick", {"marks": str(marks)}, pid="req-worker-invoked")
    result = run_flow_run(str(run_id), context=FakeContext("req-other"))
    assert result["started"] is False and "req-worker-invoked" in result["message"]
    assert _read(run_id).state.type.value == "SCHEDULED" and _runs(marks) == 0


def test_a_second_delivery_runs_nothing(prefect_harness, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.states import Running

    marks = tmp_path / "marks"
    run_id = _deploy("lambda-quick", "test_flow_run:quick", {"marks": str(marks)}, pid="req-twice")
    assert run_flow_run(str(run_id), context=FakeContext("req-twice"))["state_type"] == "COMPLETED"
    again = run_flow_run(str(run_id), context=FakeContext("req-twice"))  # Lambda's at-least-once
    assert again["started"] is False and again["state_type"] == "COMPLETED"
    assert _runs(marks) == 1
    assert "not started by Lambda request req-twice" in _run_logs(run_id)
    # While the first delivery still runs it (RUNNING): nothing either.
    run_id = _deploy("lambda-quick", "test_flow_run:quick", {"marks": str(marks)}, pid="req-busy")
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run_id, Running(), force=True)
    assert run_flow_run(str(run_id), context=FakeContext("req-busy"))["started"] is False
    assert _runs(marks) == 1


def test_concurrent_deliveries_claim_the_run_once(prefect_harness, tmp_path):
    """Both deliveries read the run PENDING; only the first claim is accepted by Prefect."""
    from prefect.client.orchestration import get_client
    from prefect.states import Pending

    from flows.runtime.flow_run import _claim

    marks = tmp_path / "marks"
    run_id = _deploy("lambda-quick", "test_flow_run:quick", {"marks": str(marks)}, pid="req-dup")
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run_id, Pending(), force=True)  # the worker's
        assert _claim(client, run_id, "req-dup") is None  # the first delivery
        second = _claim(client, run_id, "req-dup")  # the second, a moment later
    assert second and ("ABORT" in second or "REJECT" in second), second
    # A later delivery meets the claimed run: Prefect aborts its claim, nothing runs.
    again = run_flow_run(str(run_id), context=FakeContext("req-dup"))
    assert again["state_type"] == "ABORTED" and again["started"] is False
    assert _runs(marks) == 0


def test_a_claim_of_a_running_run_is_aborted(prefect_harness, tmp_path):
    """What a delivery racing past the state check meets: Prefect's Abort, the run left alone."""
    from prefect.client.orchestration import get_client
    from prefect.states import Pending, Running

    from flows.runtime import flow_run as module

    marks = tmp_path / "marks"
    run_id = _deploy("lambda-quick", "test_flow_run:quick", {"marks": str(marks)}, pid="req-race")
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run_id, Pending(), force=True)
        stale = client.read_flow_run(run_id)

    reads = iter([stale])

    def read_flow_run_once_stale(self, flow_run_id):  # the state check sees PENDING ...
        try:
            return next(reads)
        except StopIteration:
            return original(self, flow_run_id)

    from prefect.client.orchestration import SyncPrefectClient

    original = SyncPrefectClient.read_flow_run
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run_id, Running(), force=True)  # ... but the first delivery runs it
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(SyncPrefectClient, "read_flow_run", read_flow_run_once_stale)
        result = module.run_flow_run(str(run_id), context=FakeContext("req-race"))
    assert result["state_type"] == "ABORTED" and result["started"] is False, result
    assert "ABORT" in result["message"]
    assert _runs(marks) == 0 and _read(run_id).state.type.value == "RUNNING"


def test_prefect_itself_does_not_stop_a_duplicate_start(prefect_harness, tmp_path):
    """Pins why the claim exists: Prefect 3.8.8 accepts RUNNING → RUNNING, so a stale start runs
    the flow body again. Should this ever end ABORTED, Prefect stops duplicates on its own."""
    from prefect.client.orchestration import get_client
    from prefect.states import Pending, Running

    from flows.runtime.flow_run import execute_flow_run
    from flows.runtime.watch import Invocation

    marks = tmp_path / "marks"
    run_id = _deploy("lambda-quick", "test_flow_run:quick", {"marks": str(marks)})
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run_id, Pending(), force=True)
        stale = client.read_flow_run(run_id)
        client.set_flow_run_state(run_id, Running(), force=True)
    result = execute_flow_run(quick, stale, _logger(stale), Invocation(request_id="r2"), None)
    assert result["state_type"] == "COMPLETED" and _runs(marks) == 1


# --------------------------------------------------------------------------- heartbeats


def test_a_run_in_this_path_sends_heartbeats(prefect_harness, tmp_path):
    """PREFECT_FLOWS_HEARTBEAT_FREQUENCY=30 (the stack's) makes the engine beat at the run's start."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from flows.core.names import HEARTBEAT_FREQUENCY_SECONDS
    from flows.runtime.handler import flush_prefect

    marks = tmp_path / "marks"
    run_id = _deploy("lambda-quick", "test_flow_run:quick", {"marks": str(marks)})
    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: HEARTBEAT_FREQUENCY_SECONDS}):
        assert run_flow_run(str(run_id), context=FakeContext("req-beat"))["state_type"] == "COMPLETED"
    flush_prefect()
    query = {
        "filter": {
            "event": {"name": ["prefect.flow-run.heartbeat"]},
            "any_resource": {"id": [f"prefect.flow-run.{run_id}"]},
            "occurred": {"since": "2000-01-01T00:00:00Z"},
        },
        "limit": 10,
    }
    deadline = time.monotonic() + 20
    with get_client(sync_client=True) as client:
        while True:
            events = client.request("POST", "/events/filter", json=query).json()["events"]
            if events or time.monotonic() > deadline:
                break
            time.sleep(0.3)
    assert events, "no prefect.flow-run.heartbeat event for the run"


# --------------------------------------------------------------------------- a mirror cancelled


@pytest.mark.slow
def test_a_cancelled_mirror_publishes_nothing(prefect_harness, moto_server, tmp_path, monkeypatch, capsys):
    """`mirror-survey` with multipart uploads in flight and a trickling peer, cancelled from the UI."""
    import boto3

    from flows.devkit.upstream_server import GeneratedFile, UpstreamServer

    bucket = "cancel-mirror"
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    files = {"pr.big": GeneratedFile(64 * 1024 * 1024, seed=3), "pr.slow": b"x" * 200}
    with UpstreamServer({"pr": files}) as up:
        up.trickle("/pub/time.series/pr/pr.big", bytes_per_second=4 * 1024 * 1024)
        up.trickle("/pub/time.series/pr/pr.slow", bytes_per_second=1)
        for name, value in {
            "QUEST_STORE": f"s3://{bucket}",
            "QUEST_BLS_BASE_URL": up.bls_base_url,
            "QUEST_MULTIPART_THRESHOLD_BYTES": str(5 * 1024 * 1024),
            "QUEST_MULTIPART_CHUNK_BYTES": str(5 * 1024 * 1024),
            "AWS_ENDPOINT_URL": moto_server,
        }.items():
            monkeypatch.setenv(name, value)
        run_id = _deploy("mirror-survey", "flows/ingest.py:mirror_survey", {"survey": "pr"})
        times: dict[str, float] = {}

        def cancel_once_uploading() -> None:
            deadline = time.monotonic() + 60
            while not s3.list_multipart_uploads(Bucket=bucket).get("Uploads"):
                assert time.monotonic() < deadline, "no multipart upload started"
                time.sleep(0.1)
            _cancel_when_running(run_id, times, after=0.5)

        canceller = _in_thread(cancel_once_uploading)
        result = run_flow_run(
            str(run_id), context=FakeContext("req-mirror", seconds=180), check_seconds=CHECK
        )
        returned = time.monotonic()
        canceller.join(5)
    took = returned - times["cancelled"]
    with capsys.disabled():
        print(f"\n[cancel/mirror] CANCELLING → CANCELLED, transfers aborted, returned after {took:.2f} s")
    assert result["state_type"] == "CANCELLED" and _read(run_id).state.type.value == "CANCELLED"
    assert took < 2 * CHECK + 3.0, took
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert not [k for k in keys if ".quest-lease" not in k], keys  # no new object, no temp object
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")  # every upload aborted
