"""A Lambda work pool on loopback, for end-to-end tests: a real `prefect server start`, the Lambda
stand-in (tests/lambda_emulator.py; `runtime_emulator`: the zip under AWS's runtime client) with
the stack's async settings, moto for SQS / CloudWatch Logs
/ S3, and the real `aws-lambda` worker submitting in this process (`get_and_submit_flow_runs`).

`prefect_server(home)` starts and stops the server; `LambdaPool` holds the rest and the small
operations the tests share (a pool and a deployment, a worker round, a run's state and logs).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aio import run_async
from lambda_emulator import LambdaEmulator

PREFECT = str(Path(sys.executable).with_name("prefect"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def quiet_env(home: Path, **extra: str) -> dict[str, str]:
    """This process's environment without Prefect or quest settings, with a private PREFECT_HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "QUEST_"))}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        PREFECT_UI_ENABLED="false",
        **extra,
    )
    return env


def release_prefect_services(timeout: float = 30) -> None:
    """Send what this process buffered for Prefect now, and let its senders go.

    Prefect's events and log workers are process-wide singletons bound to the API that was current
    when first used (the events one is keyed without the URL): once a test pointed this process at
    its own server, every later event of the session went there. After that server stopped,
    Prefect retried each buffered item at interpreter exit, one reconnect at a time: a full run
    hung for hours after "passed". Draining stops them while the server is up; the next use builds
    new ones for the API current then.
    """
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for service in (EventsWorker, APILogWorker):
        service.drain_all(timeout=timeout)


@contextlib.contextmanager
def prefect_server(
    home: Path, startup_seconds: float = 120, database_url: str | None = None, **extra_env: str
) -> Iterator[str]:
    """`prefect server start` on loopback (its own home; a SQLite database there unless
    `database_url` names another, e.g. `postgresql+asyncpg://...`); yields the API URL."""
    port = free_port()
    database = database_url or f"sqlite+aiosqlite:///{home}/server.db"
    env = quiet_env(home, PREFECT_SERVER_DATABASE_CONNECTION_URL=database, **extra_env)
    log_path = home / "server.log"
    with open(log_path, "wb") as server_log:
        proc = subprocess.Popen(
            [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=server_log,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + startup_seconds
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prefect server did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.5)
        release_prefect_services()  # this process starts clean, not bound to an earlier API
        yield url
    finally:
        release_prefect_services()  # while the server still answers
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def runtime_emulator(**options: Any) -> LambdaEmulator:
    """The end-to-end tier's Lambda: execution environments running the zip `pulumi up` ships under
    AWS's runtime client on Python 3.12 (tests/lambda_code.py). `options` go to `LambdaEmulator`.
    Skips (one line naming it) where Python 3.12 or the runtime client cannot be had."""
    from lambda_code import runtime_client
    from tool_cache import ToolUnavailable, skip_unavailable

    try:
        runtime = runtime_client()
    except ToolUnavailable as exc:
        skip_unavailable(exc)
        raise
    return LambdaEmulator(runtime_client=runtime, **options)


def aws(service: str, endpoint_url: str) -> Any:
    import boto3

    return boto3.client(service, endpoint_url=endpoint_url, region_name="us-east-1")


def invoke(lam: LambdaEmulator, function: str, event: dict[str, Any], read_timeout: float) -> tuple[Any, Any]:
    """A synchronous Invoke through the emulator's Invoke API, as boto3 sends it (one attempt):
    the emulator's record of the call (`Invocation`) and the function's answer."""
    import json

    import boto3
    from botocore.config import Config

    client = boto3.client(
        "lambda",
        endpoint_url=lam.endpoint_url,
        region_name="us-east-1",
        config=Config(retries={"total_max_attempts": 1}, read_timeout=read_timeout),
    )
    response = client.invoke(FunctionName=function, Payload=json.dumps(event).encode())
    body = json.loads(response["Payload"].read())
    (call,) = lam.calls(response["ResponseMetadata"]["RequestId"])
    assert call.function_error == response.get("FunctionError")
    return call, body


def scheduled_event() -> dict[str, Any]:
    """EventBridge's `Scheduled Event`, as the stack's ingest schedule sends it."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": "2026-01-02T06:00:00Z",
        "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/quest-ingest"],
        "detail": {},
    }


def wait_for(check: Callable[[], Any], timeout: float, interval: float = 0.25, what: str = "it") -> Any:
    """Poll `check` until it returns something truthy; that value. TimeoutError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout} s")
        time.sleep(interval)


@dataclass
class LambdaPool:
    """The API, the emulator and moto, and what the tests do with them."""

    api_url: str
    lam: LambdaEmulator
    moto_url: str
    failure_queue_url: str
    bucket: str
    # Defaults of every pool's job variables (the stack's pool has its on-failure queue URL).
    pool_defaults: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ Prefect

    def client(self) -> Any:
        from prefect.client.orchestration import SyncPrefectClient

        return SyncPrefectClient(self.api_url)

    def deployment(
        self,
        entrypoint: str,
        function: str,
        flow_name: str,
        pool_variables: dict[str, Any] | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> tuple[str, Any]:
        """A fresh aws-lambda pool on `function` and one deployment of `entrypoint` (whose flow is
        named `flow_name`) on it; `pool_variables` set defaults of the pool's job variables."""
        from prefect.client.schemas.actions import WorkPoolCreate

        from flows.worker import base_job_template_for

        pool = f"faults-{uuid.uuid4().hex[:8]}"
        template = base_job_template_for(
            self.lam.function_arn(function), region="us-east-1", endpoint_url=self.lam.endpoint_url
        )
        props = template["variables"]["properties"]
        for name, value in {**self.pool_defaults, **(pool_variables or {})}.items():
            props[name]["default"] = value
        with self.client() as client:
            client.create_work_pool(WorkPoolCreate(name=pool, type="aws-lambda", base_job_template=template))
            flow_id = client.create_flow_from_name(flow_name)
            deployment_id = client.create_deployment(
                flow_id=flow_id,
                name=f"{flow_name}-{pool}",
                entrypoint=entrypoint,
                work_pool_name=pool,
                parameters=parameters or {},
            )
        return pool, deployment_id

    def create_run(self, deployment_id: Any, parameters: dict[str, Any] | None = None) -> Any:
        with self.client() as client:
            return client.create_flow_run_from_deployment(deployment_id, parameters=parameters or {}).id

    def worker_round(self, pool: str) -> list[Any]:
        """One polling round of the real worker in this process: the flow runs it submitted."""
        from prefect.settings import PREFECT_API_URL, temporary_settings

        from flows.worker import LambdaWorker

        async def poll() -> list[Any]:
            async with LambdaWorker(work_pool_name=pool, create_pool_if_not_found=False) as worker:
                return await worker.get_and_submit_flow_runs()

        with temporary_settings({PREFECT_API_URL: self.api_url}):
            return [run.id for run in run_async(poll())]

    def run(self, run_id: Any) -> Any:
        with self.client() as client:
            return client.read_flow_run(run_id)

    def states(self, run_id: Any) -> list[Any]:
        with self.client() as client:
            return client.read_flow_run_states(run_id)

    def logs(self, run_id: Any) -> str:
        from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

        with self.client() as client:
            logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
        return "\n".join(log.message for log in logs)

    def wait_state(
        self, run_id: Any, types: tuple[str, ...], timeout: float, between: Callable[[], None] | None = None
    ) -> Any:
        """Poll the run until its state type is one of `types`; the run. `between` runs each poll."""

        def check() -> Any:
            if between is not None:
                between()
            run = self.run(run_id)
            return run if run.state is not None and run.state.type.value in types else None

        try:
            return wait_for(check, timeout, 0.25, f"flow run {run_id} in {types}")
        except TimeoutError as exc:
            run = self.run(run_id)
            raise AssertionError(f"{exc}; it is {run.state!r}\n{self.invocation_logs(run_id)}") from None

    # ------------------------------------------------------------------ Lambda

    def invocations(self, run_id: Any) -> list[Any]:
        return [c for c in self.lam.invocations if c.event.get("flow_run_id") == str(run_id)]

    def invocation_logs(self, run_id: Any, tail: int = 4000) -> str:
        calls = self.invocations(run_id)
        return "\n".join(f"--- request {c.request_id}: {c.outcome}\n{c.logs[-tail:]}" for c in calls)
