"""A loopback emulator of Lambda's Invoke API that runs the project's handler like Lambda would.

moto cannot execute Lambda code without Docker (none here), so the tests use this instead:
a real HTTP server on 127.0.0.1 implementing `POST /2015-03-31/functions/{name}/invocations`
(what boto3's `lambda.invoke` sends), honouring `X-Amz-Invocation-Type`:

- `RequestResponse` runs the handler and answers 200 with its JSON result; a handler exception
  (or a timeout, an out-of-memory kill, a killed runtime) answers 200 with
  `X-Amz-Function-Error: Unhandled` and Lambda's error body;
- `Event` answers 202 at once and runs the handler in the background, with Lambda's async
  machinery: retries of a failed event, an on-failure destination (SQS), a maximum event age,
  a queue for events throttled by reserved concurrency, and optional duplicate delivery;
- `DryRun` answers 204 and runs nothing; an unknown function answers 404
  `ResourceNotFoundException`; a throttled invoke answers 429 `TooManyRequestsException`.

Two ways to run an attempt:

- execution environments (`runtime_client=lambda_code.runtime_client()`): what Lambda runs. The
  zip `pulumi up` ships, unpacked read-only, served by AWS's runtime client (`awslambdaric`) on
  Python 3.12 through a loopback Runtime API (tests/lambda_environment.py). An environment stays
  warm and takes the next invocation; a new one starts (cold) when none is free, up to the
  reserved concurrency; a timeout, an out-of-memory kill, an exit or an init error discards it.
  Each has a private /tmp (bind-mounted over /tmp in its mount namespace) and only Lambda's
  variables (no AWS_LAMBDA_FUNCTION_TIMEOUT: Lambda gives the deadline through the context).
  `Attempt.cold` says whether an attempt started an environment.
- the reduced bootstrap (the default): a fresh Python 3.11 subprocess per attempt running the
  working tree's code, for tests about the project's own logic (fast, no zip build).

In the bootstrap mode each invocation is a fresh subprocess with a Lambda-like environment: the
code is a copy of the package in a read-only task root (LAMBDA_TASK_ROOT, the working directory),
the only writable place is the function's own tmp directory (TMPDIR, PREFECT_HOME under it), the
AWS_LAMBDA_* and AWS_REGION variables are set, and nothing else of the test process's environment
leaks in.
Read-only is enforced with a private mount namespace (`unshare --mount`, the task root bind-mounted
read-only) where the kernel allows it, else with file modes (which bind every user but root);
`code_read_only` says which.

The limits are real, as on Lambda: the process group is SIGKILLed when the invocation outlives the
function's timeout or its resident memory (the whole process group, polled every 100 ms) exceeds
the function's memory size; `kill()` sends a signal to a running invocation (`kill -9` by a test).
Given a CloudWatch Logs client (moto), every attempt's lines go to `/aws/lambda/<function>` with
Lambda's START / END / REPORT framing. `Invocation` records say what happened to each request.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any, Literal
from urllib.parse import unquote

from lambda_code import RuntimeClient, read_only
from lambda_environment import ExecutionEnvironment, Run
from lambda_runtime_api import Event as RuntimeEvent
from tool_cache import cache_root

REPO = Path(__file__).resolve().parent.parent
ACCOUNT = "123456789012"
INVOKE_PREFIX = "/2015-03-31/functions/"
INVOKE_SUFFIX = "/invocations"

# How often a running invocation's deadline, memory and kill requests are checked.
POLL_SECONDS = 0.1
# Lambda waits about a minute, then two, before retrying a failed async event.
LAMBDA_RETRY_DELAYS = (60.0, 120.0)
# Lambda's defaults for an async invoke configuration (6 hours of event age, 2 retries).
DEFAULT_MAX_EVENT_AGE_SECONDS = 6 * 3600.0
DEFAULT_MAX_RETRY_ATTEMPTS = 2
# The reason Lambda gives when a function's reserved concurrency is used up.
RESERVED_CONCURRENCY_REASON = "ReservedFunctionConcurrentInvocationLimitExceeded"

Outcome = Literal["ok", "error", "init_error", "timeout", "oom", "killed", "throttled"]
Condition = Literal["RetriesExhausted", "EventAgeExceeded"]

# The Lambda runtime's bootstrap, reduced: read the event, call the handler, write the outcome
# on the original stdout (the handler's own prints go to stderr, Lambda's log stream).
BOOTSTRAP = r"""
import importlib, json, os, sys, time, traceback
result_out = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
module_name, func_name = sys.argv[1].rsplit(".", 1)
deadline_ms = int(sys.argv[4])  # epoch ms, as Lambda-Runtime-Deadline-Ms (no variable on Lambda)

class Context:
    function_name = os.environ["AWS_LAMBDA_FUNCTION_NAME"]
    function_version = "$LATEST"
    invoked_function_arn = sys.argv[2]
    aws_request_id = sys.argv[3]
    memory_limit_in_mb = os.environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"]
    log_group_name = os.environ["AWS_LAMBDA_LOG_GROUP_NAME"]
    log_stream_name = os.environ["AWS_LAMBDA_LOG_STREAM_NAME"]
    def get_remaining_time_in_millis(self):
        return max(0, deadline_ms - int(time.time() * 1000))

try:
    event = json.loads(sys.stdin.read())
    handler = getattr(importlib.import_module(module_name), func_name)
    outcome = {"ok": True, "result": handler(event, Context())}
    json.dumps(outcome)
except Exception as exc:
    outcome = {"ok": False, "error": {
        "errorMessage": str(exc),
        "errorType": type(exc).__name__,
        "stackTrace": traceback.format_tb(exc.__traceback__),
    }}
sys.stderr.flush()
result_out.write(json.dumps(outcome, default=str))
result_out.flush()
"""


@dataclass
class Function:
    """A function's configuration, its async invoke configuration (`PutFunctionEventInvokeConfig`) too."""

    name: str
    env: dict[str, str] = field(default_factory=dict)
    handler: str = "flows.runtime.handler.handler"
    timeout_seconds: float = 120.0
    memory_mb: int = 1024
    # None: unreserved (no per-function limit); 0 throttles every invoke, as on Lambda.
    reserved_concurrency: int | None = None
    maximum_retry_attempts: int = DEFAULT_MAX_RETRY_ATTEMPTS
    maximum_event_age_seconds: float = DEFAULT_MAX_EVENT_AGE_SECONDS
    on_failure_queue_url: str | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.maximum_retry_attempts <= 2:
            raise ValueError("maximum_retry_attempts is 0, 1 or 2 on Lambda")
        if self.maximum_event_age_seconds <= 0:
            raise ValueError("maximum_event_age_seconds must be positive")


@dataclass
class Attempt:
    """One run of the handler in a fresh process; an async event may take 1 + retries of them."""

    number: int
    log_stream: str
    started_at: float  # epoch seconds
    ended_at: float | None = None
    pid: int | None = None
    outcome: Outcome | None = None
    result: Any = None  # the handler's result, or Lambda's error body
    logs: str = ""
    max_memory_mb: int = 0
    # Execution-environment mode: whether this attempt started its environment, and which one.
    cold: bool | None = None
    environment: int | None = None

    @property
    def seconds(self) -> float:
        return (self.ended_at or time.time()) - self.started_at


@dataclass
class Invocation:
    """One accepted (or throttled) Invoke request, and what became of it.

    `result`, `function_error` and `outcome` are those of the last attempt; a duplicate delivery
    of an async event is a second record with the same `request_id` and `duplicate=True`.
    """

    request_id: str
    function: str
    invocation_type: str
    event: Any
    status: int | None = None  # the HTTP status Invoke answered: 200, 202 or 429
    function_error: str | None = None
    result: Any = None
    logs: str = ""
    seconds: float = 0.0
    done: threading.Event = field(default_factory=threading.Event)
    outcome: Outcome | None = None
    accepted_at: float = field(default_factory=time.time)
    started_at: float | None = None  # the first attempt's start
    ended_at: float | None = None
    attempts: list[Attempt] = field(default_factory=list)
    throttles: int = 0  # times a queued async event found no free concurrency
    duplicate: bool = False
    destination_sent: bool = False
    destination_condition: Condition | None = None
    destination_record: dict[str, Any] | None = None

    @property
    def retries(self) -> int:
        return max(0, len(self.attempts) - 1)

    @property
    def cold_starts(self) -> int:
        return sum(1 for a in self.attempts if a.cold)

    @property
    def warm_starts(self) -> int:
        return sum(1 for a in self.attempts if a.cold is False)


# --------------------------------------------------------------------------- one execution


@dataclass
class _Limits:
    timeout_seconds: float
    memory_mb: int


class Sandbox:
    """One execution environment running one attempt: the process group, its limits, its output.

    Lambda kills the whole environment on a timeout or when memory runs out, so every limit here
    is a SIGKILL of the process group (the handler's own children included).
    """

    def __init__(self, cmd: list[str], env: dict[str, str], cwd: Path, limits: _Limits) -> None:
        self.cmd, self.env, self.cwd, self.limits = cmd, env, cwd, limits
        self.lines: list[tuple[float, str]] = []  # (epoch seconds, stderr line)
        self.stdout = b""
        self.max_rss_mb = 0
        self.killed_for: Literal["timeout", "oom"] | None = None
        self.returncode: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    def run(self, payload: bytes, on_start: Callable[[int], None]) -> None:
        """Run to the end (or to a limit); `on_start(pid)` once the process exists."""
        self.proc = subprocess.Popen(
            self.cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=self.cwd,
            env=self.env,
            start_new_session=True,  # its own process group, killed as one
        )
        on_start(self.proc.pid)
        readers = [
            _thread(_feed, self.proc.stdin, payload),
            _thread(self._read_stdout),
            _thread(self._read_stderr),
        ]
        self._watch()
        self.signal_group(signal.SIGKILL)  # what the handler left running goes with the environment
        for reader in readers:
            reader.join(5)

    def signal_group(self, sig: int) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)

    def _watch(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.limits.timeout_seconds
        while True:
            try:
                self.returncode = self.proc.wait(POLL_SECONDS)
                return
            except subprocess.TimeoutExpired:
                pass
            rss = _group_rss_mb(self.proc.pid)
            self.max_rss_mb = max(self.max_rss_mb, rss)
            if self.killed_for is not None:
                continue
            if time.monotonic() >= deadline:
                self._kill_for("timeout")
            elif rss > self.limits.memory_mb:
                self._kill_for("oom")

    def _kill_for(self, reason: Literal["timeout", "oom"]) -> None:
        self.killed_for = reason
        self.signal_group(signal.SIGKILL)

    def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        self.stdout = self.proc.stdout.read()

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.lines.append((time.time(), raw.decode(errors="replace").rstrip("\n")))


def _thread(target: Callable[..., None], *args: Any) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


def _feed(pipe: IO[bytes] | None, payload: bytes) -> None:
    """Write the event on stdin from its own thread: a large event must not block the watch loop."""
    if pipe is None:
        return
    with contextlib.suppress(BrokenPipeError, OSError):
        pipe.write(payload)
        pipe.close()


_PAGE_MB = os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)


def _group_rss_mb(pgid: int) -> int:
    """Resident memory of every process in a process group, in MB (Lambda counts the sandbox)."""
    total_pages = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            if int(fields[2]) != pgid:  # state, ppid, pgrp, ...
                continue
            with open(f"/proc/{entry.name}/statm", "rb") as f:
                total_pages += int(f.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue  # the process ended while being read
    return math.ceil(total_pages * _PAGE_MB)


def _signal_text(sig: int) -> str:
    """Go's wording, as in Lambda's `Runtime exited with error: signal: killed`."""
    try:
        return (signal.strsignal(sig) or f"signal {sig}").lower()
    except ValueError:
        return f"signal {sig}"


def lambda_ending(
    killed_for: str | None, returncode: int | None, request_id: str, timeout_seconds: float
) -> tuple[Outcome, Any] | None:
    """Lambda's own answer when it ended the environment (timeout, memory) or the runtime died."""
    prefix = f"RequestId: {request_id} Error: "
    if killed_for == "timeout":
        message = f"{prefix}Task timed out after {timeout_seconds:.2f} seconds"
        return "timeout", {"errorType": "Sandbox.Timedout", "errorMessage": message}
    if killed_for == "oom":
        message = f"{prefix}Runtime exited with error: signal: killed"
        return "oom", {"errorType": "Runtime.OutOfMemory", "errorMessage": message}
    if returncode is not None and returncode < 0:
        message = f"{prefix}Runtime exited with error: signal: {_signal_text(-returncode)}"
        return "killed", {"errorType": "Runtime.ExitError", "errorMessage": message}
    return None


def _exit_status(request_id: str, returncode: int | None) -> tuple[Outcome, Any]:
    message = f"RequestId: {request_id} Error: Runtime exited with error: exit status {returncode}"
    return "error", {"errorType": "Runtime.ExitError", "errorMessage": message}


def classify(sandbox: Sandbox, request_id: str, timeout_seconds: float) -> tuple[Outcome, Any]:
    """The attempt's outcome and its result (or Lambda's error body) from how the process ended."""
    ended = lambda_ending(sandbox.killed_for, sandbox.returncode, request_id, timeout_seconds)
    if ended is not None:
        return ended
    try:
        outcome = json.loads(sandbox.stdout)
    except ValueError:
        return _exit_status(request_id, sandbox.returncode)
    if outcome["ok"]:
        return "ok", outcome["result"]
    return "error", outcome["error"]


def classify_run(run: Run, request_id: str, timeout_seconds: float) -> tuple[Outcome, Any]:
    """An execution environment's attempt: what the runtime posted, or Lambda's error for its end."""
    killed_for = run.ending if run.ending in ("timeout", "oom") else None
    if killed_for is None and run.ending == "answered" and run.answer is not None:
        return ("ok" if run.answer.kind == "response" else "error"), run.answer.json()
    if killed_for is None and run.ending == "init_error" and run.answer is not None:
        # Lambda answers the invoke with the body the runtime posted to /init/error.
        return "init_error", run.answer.json()
    ended = lambda_ending(killed_for, run.returncode, request_id, timeout_seconds)
    return ended if ended is not None else _exit_status(request_id, run.returncode)


# --------------------------------------------------------------------------- CloudWatch Logs


def log_stream_name(now: float | None = None) -> str:
    """Lambda's stream name for an execution environment: `YYYY/MM/DD/[$LATEST]<32 hex>`."""
    day = datetime.fromtimestamp(time.time() if now is None else now, UTC).strftime("%Y/%m/%d")
    return f"{day}/[$LATEST]{uuid.uuid4().hex}"


def iso_timestamp(epoch: float) -> str:
    """`2024-05-01T12:00:03.000Z`, the form Lambda writes in log lines and invocation records."""
    return (
        datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(epoch * 1000) % 1000:03d}Z"
    )


def framed_log_lines(
    request_id: str, attempt: Attempt, lines: list[tuple[float, str]], memory_mb: int, timeout_seconds: float
) -> list[tuple[float, str]]:
    """The attempt's log events as Lambda writes them: START, the function's lines, END, REPORT."""
    assert attempt.ended_at is not None
    end = attempt.ended_at
    duration_ms = (end - attempt.started_at) * 1000
    report = (
        f"REPORT RequestId: {request_id}\tDuration: {duration_ms:.2f} ms\t"
        f"Billed Duration: {math.ceil(duration_ms)} ms\tMemory Size: {memory_mb} MB\t"
        f"Max Memory Used: {attempt.max_memory_mb} MB"
    )
    framed = [(attempt.started_at, f"START RequestId: {request_id} Version: $LATEST")]
    framed += [(t, line) for t, line in lines if line.strip()]
    framed += [(end, f"END RequestId: {request_id}"), (end, report)]
    if attempt.outcome == "timeout":
        framed.append(
            (end, f"{iso_timestamp(end)} {request_id} Task timed out after {timeout_seconds:.2f} seconds")
        )
    return framed


class CloudWatchLogs:
    """Writes log events to a (moto) CloudWatch Logs: group `/aws/lambda/<function>`, one stream each."""

    MAX_BATCH_EVENTS = 10_000
    MAX_BATCH_BYTES = 1_048_576
    MAX_EVENT_BYTES = 256 * 1024 - 26  # CloudWatch counts 26 bytes of overhead per event

    def __init__(self, client: Any) -> None:
        self.client = client
        self._groups: set[str] = set()
        self._lock = threading.Lock()

    @staticmethod
    def group_name(function: str) -> str:
        return f"/aws/lambda/{function}"

    def write(self, function: str, stream: str, lines: list[tuple[float, str]]) -> None:
        group = self.group_name(function)
        self._ensure_group(group)
        # One stream per execution environment: a warm one writes to it again.
        with contextlib.suppress(self.client.exceptions.ResourceAlreadyExistsException):
            self.client.create_log_stream(logGroupName=group, logStreamName=stream)
        for batch in self._batches(_chronological(lines)):
            self.client.put_log_events(logGroupName=group, logStreamName=stream, logEvents=batch)

    def _ensure_group(self, group: str) -> None:
        with self._lock:
            if group in self._groups:
                return
            with contextlib.suppress(self.client.exceptions.ResourceAlreadyExistsException):
                self.client.create_log_group(logGroupName=group)
            self._groups.add(group)

    def _batches(self, events: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        """PutLogEvents' limits: at most 10,000 events and 1 MB per call, 256 KB per event."""
        batches: list[list[dict[str, Any]]] = [[]]
        size = 0
        for event in events:
            message = event["message"].encode()[: self.MAX_EVENT_BYTES].decode(errors="ignore")
            cost = len(message.encode()) + 26
            if len(batches[-1]) >= self.MAX_BATCH_EVENTS or size + cost > self.MAX_BATCH_BYTES:
                batches.append([])
                size = 0
            batches[-1].append({"timestamp": event["timestamp"], "message": message})
            size += cost
        return [b for b in batches if b]


def _chronological(lines: list[tuple[float, str]]) -> list[dict[str, Any]]:
    """PutLogEvents refuses a batch out of time order; reader threads may interleave a little."""
    events, last = [], 0
    for at, message in lines:
        last = max(last, int(at * 1000))
        events.append({"timestamp": last, "message": message})
    return events


# --------------------------------------------------------------------------- async failures


def invocation_record(
    call: Invocation, function_arn: str, condition: Condition, now: float | None = None
) -> dict[str, Any]:
    """AWS's invocation record for an on-failure destination (the body of the SQS message)."""
    record: dict[str, Any] = {
        "version": "1.0",
        "timestamp": iso_timestamp(time.time() if now is None else now),
        "requestContext": {
            "requestId": call.request_id,
            "functionArn": f"{function_arn}:$LATEST",
            "condition": condition,
            "approximateInvokeCount": len(call.attempts),
        },
        "requestPayload": call.event,
    }
    if call.attempts:  # an event that never ran (throttled until too old) has no response
        record["responseContext"] = {
            "statusCode": 200,
            "executedVersion": "$LATEST",
            "functionError": "Unhandled",
        }
        record["responsePayload"] = call.attempts[-1].result
    return record


class ThrottleSwitch:
    """Makes Invoke answer 429 for the next `count` requests (None: until cleared).

    A count counts HTTP requests, so botocore's own retries of a throttled call take from it.
    """

    def __init__(self) -> None:
        self._remaining: int | None = 0
        self._reason = RESERVED_CONCURRENCY_REASON
        self._function: str | None = None
        self._lock = threading.Lock()

    def set(self, count: int | None, reason: str, function: str | None) -> None:
        with self._lock:
            self._remaining, self._reason, self._function = count, reason, function

    def clear(self) -> None:
        self.set(0, RESERVED_CONCURRENCY_REASON, None)

    def take(self, function: str) -> str | None:
        """The throttle reason if this request is throttled (using up one of the count)."""
        with self._lock:
            if self._remaining == 0 or self._function not in (None, function):
                return None
            if self._remaining is not None:
                self._remaining -= 1
            return self._reason


def _client(client_or_url: Any, service: str, region: str) -> Any:
    """A boto3 client as given, or one for an endpoint URL (a moto server on loopback)."""
    if client_or_url is None or not isinstance(client_or_url, str):
        return client_or_url
    import boto3

    return boto3.client(
        service,
        endpoint_url=client_or_url,
        region_name=region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


# --------------------------------------------------------------------------- the emulator


class LambdaEmulator:
    """Context manager: `with LambdaEmulator() as lam: lam.add_function("f", env={...})`.

    `sqs` and `cloudwatch_logs` are boto3 clients or endpoint URLs (moto); `retry_delays` are the
    waits before the first and second retry of a failed async event (Lambda: ~1 and ~2 minutes),
    `throttle_retry_seconds` how often a throttled async event is tried again from the queue.
    `runtime_client` (tests/lambda_code.py) switches to execution environments running the zip
    under AWS's runtime client; `extra_files` are then added to a copy of the zip's task root.
    """

    def __init__(
        self,
        code_paths: tuple[str, ...] = ("flows",),
        extra_files: dict[str, str] | None = None,
        region: str = "us-east-1",
        *,
        sqs: Any = None,
        cloudwatch_logs: Any = None,
        retry_delays: tuple[float, ...] = LAMBDA_RETRY_DELAYS,
        throttle_retry_seconds: float = 0.5,
        runtime_client: RuntimeClient | None = None,
    ):
        self.code_paths = code_paths
        self.extra_files = dict(extra_files or {})
        self.region = region
        self.code_read_only = "modes"  # or "mount" once the namespace probe succeeds
        self.functions: dict[str, Function] = {}
        self.invocations: list[Invocation] = []
        self.sqs = _client(sqs, "sqs", region)
        logs_client = _client(cloudwatch_logs, "logs", region)
        self.cloudwatch = CloudWatchLogs(logs_client) if logs_client is not None else None
        self.retry_delays = retry_delays
        self.throttle_retry_seconds = throttle_retry_seconds
        self._throttle = ThrottleSwitch()
        self._duplicates: list[bool] = []  # one entry per pending duplicate: back to back or not
        self._lock = threading.Condition()
        self._in_flight = 0
        self._active: dict[str, int] = {}  # running attempts per function (concurrency)
        self._sandboxes: dict[str, list[Sandbox]] = {}  # running attempts per request id
        self._closing = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._workdir: Path | None = None
        self.runtime_client = runtime_client
        self._idle: dict[str, list[ExecutionEnvironment]] = {}  # warm environments per function
        self._environments: list[ExecutionEnvironment] = []
        self._started = 0  # environments started (their numbers)
        self._private_tmp = False  # /tmp bind-mounted per environment (mount namespace)

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> LambdaEmulator:
        if self.runtime_client is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="lambda-emulator-"))
            os.chmod(self._workdir, 0o755)
            self.task_root = self._workdir / "task"
            self._build_task_root()
        else:
            self._enter_environments(self.runtime_client)
        emulator = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                emulator._handle(self)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self._closing.set()  # queued and to-be-retried events are dropped; running ones finish
        self.wait_idle(timeout=30, raise_on_timeout=False)
        with self._lock:
            leftovers = [s for group in self._sandboxes.values() for s in group]
        for sandbox in leftovers:
            sandbox.signal_group(signal.SIGKILL)
        with self._lock:
            environments, self._environments, self._idle = self._environments, [], {}
        for environment in environments:
            environment.discard()
        if self._workdir is not None:
            # Folders only in the environments' mode: its task root's files are hard links into the cache.
            _make_writable(self._workdir, files=self.runtime_client is None)
            shutil.rmtree(self._workdir, ignore_errors=True)

    @property
    def endpoint_url(self) -> str:
        assert self._server is not None, "use the emulator as a context manager"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def function_arn(self, name: str) -> str:
        return f"arn:aws:lambda:{self.region}:{ACCOUNT}:function:{name}"

    def add_function(self, name: str, env: dict[str, str] | None = None, **options: Any) -> str:
        """Register a function (its configured environment, like the Pulumi runner's); returns its ARN.

        `options` are `Function` fields: handler, timeout_seconds, memory_mb, reserved_concurrency,
        maximum_retry_attempts, maximum_event_age_seconds, on_failure_queue_url.
        """
        fn = Function(name=name, env=dict(env or {}), **options)
        self._check_destination(fn)
        if self.runtime_client is None:  # an environment has its own /tmp, where Lambda's PREFECT_HOME is
            tmp = self._workdir / "tmp" / name  # type: ignore[operator]
            (tmp / "prefect").mkdir(parents=True, exist_ok=True)
            fn.env.setdefault("PREFECT_HOME", str(tmp / "prefect"))
        self.functions[name] = fn
        return self.function_arn(name)

    def update_function(self, name: str, **options: Any) -> Function:
        """Change a function's settings (e.g. `reserved_concurrency`) for the invokes that follow."""
        fn = self.functions[name]
        unknown = set(options) - {f.name for f in fields(Function)} | {"name"} & set(options)
        if unknown:
            raise TypeError(f"no function setting(s) {sorted(unknown)}")
        self._check_destination(replace(fn, **options))  # validates before anything changes
        for key, value in options.items():
            setattr(fn, key, value)  # the same object: queued and retried events see the change
        return fn

    def _check_destination(self, fn: Function) -> None:
        if fn.on_failure_queue_url and self.sqs is None:
            raise ValueError("an on-failure destination needs the emulator's `sqs` (client or endpoint URL)")

    def wait_idle(self, timeout: float = 60.0, raise_on_timeout: bool = True) -> None:
        """Block until no invocation (including async `Event` ones, their retries and queue) is pending."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    if raise_on_timeout:
                        raise TimeoutError(f"{self._in_flight} invocation(s) still running after {timeout}s")
                    return
                self._lock.wait(left)

    # ------------------------------------------------------------------ test controls

    def throttle(
        self,
        count: int | None = None,
        *,
        reason: str = RESERVED_CONCURRENCY_REASON,
        function: str | None = None,
    ) -> None:
        """Answer 429 `TooManyRequestsException` to the next `count` Invoke requests (None: until cleared)."""
        self._throttle.set(count, reason, function)

    def clear_throttle(self) -> None:
        self._throttle.clear()

    def duplicate_next_events(self, count: int = 1, *, back_to_back: bool = False) -> None:
        """Deliver each of the next `count` accepted `Event` invokes twice, with one request id.

        Lambda's async delivery is at-least-once; the deliveries run at the same time, or the
        second after the first has ended (`back_to_back`).
        """
        with self._lock:
            self._duplicates.extend([back_to_back] * count)

    def kill(self, request_id: str, sig: int = signal.SIGKILL) -> int:
        """Send `sig` to the process group of each running attempt of `request_id`; how many there were."""
        with self._lock:
            sandboxes = list(self._sandboxes.get(request_id, ()))
        for sandbox in sandboxes:
            sandbox.signal_group(sig)
        return len(sandboxes)

    def calls(self, request_id: str) -> list[Invocation]:
        """The records of a request id (two for a duplicated event)."""
        with self._lock:
            return [c for c in self.invocations if c.request_id == request_id]

    def wait_running(self, request_id: str | None = None, timeout: float = 30.0) -> Invocation:
        """Block until an attempt (of `request_id`, or any) has a running process; its record."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                for call in self.invocations:
                    if request_id in (None, call.request_id) and call.request_id in self._sandboxes:
                        return call
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no running invocation {request_id or ''} after {timeout}s")
                self._lock.wait(left)

    # ------------------------------------------------------------------ the API

    def _handle(self, http: BaseHTTPRequestHandler) -> None:
        path = http.path.split("?", 1)[0]
        body = http.rfile.read(int(http.headers.get("Content-Length") or 0))
        if not (path.startswith(INVOKE_PREFIX) and path.endswith(INVOKE_SUFFIX)):
            return _send_error(http, 404, "UnknownOperationException", f"no route for {path}")
        name = _function_name(unquote(path[len(INVOKE_PREFIX) : -len(INVOKE_SUFFIX)]))
        fn = self.functions.get(name)
        if fn is None:
            return _send_error(
                http, 404, "ResourceNotFoundException", f"Function not found: {self.function_arn(name)}"
            )
        kind = http.headers.get("X-Amz-Invocation-Type") or "RequestResponse"
        if kind not in ("RequestResponse", "Event", "DryRun"):
            return _send_error(http, 400, "InvalidParameterValueException", f"bad invocation type {kind}")
        try:
            event = json.loads(body or b"{}")
        except ValueError:
            return _send_error(http, 400, "InvalidRequestContentException", "Could not parse request body")
        request_id = str(uuid.uuid4())
        if kind == "DryRun":
            return _send(http, 204, b"", request_id)
        call = Invocation(request_id=request_id, function=name, invocation_type=kind, event=event)
        reason = self._throttle.take(name)
        if reason is not None:
            return self._answer_throttled(http, call, reason)
        if kind == "Event":
            self._accept_event(fn, call, body)
            return _send(http, 202, b"", request_id)
        if not self._acquire(fn):
            return self._answer_throttled(http, call, RESERVED_CONCURRENCY_REASON)
        self._register(call, status=200)
        try:
            self._attempt(fn, call, body)
        finally:
            self._finish(call)
        extra = {"X-Amz-Function-Error": call.function_error} if call.function_error else {}
        _send(http, 200, json.dumps(call.result).encode(), request_id, extra)

    def _answer_throttled(self, http: BaseHTTPRequestHandler, call: Invocation, reason: str) -> None:
        call.status, call.outcome = 429, "throttled"
        call.ended_at = time.time()
        call.done.set()
        with self._lock:
            self.invocations.append(call)
        body = {"Type": "User", "message": "Rate Exceeded.", "Reason": reason}
        _send(
            http,
            429,
            json.dumps(body).encode(),
            call.request_id,
            {"x-amzn-ErrorType": "TooManyRequestsException"},
        )

    def _register(self, call: Invocation, status: int) -> None:
        call.status = status
        with self._lock:
            self.invocations.append(call)
            self._in_flight += 1

    def _finish(self, call: Invocation) -> None:
        call.ended_at = time.time()
        call.seconds = call.ended_at - call.accepted_at
        call.logs = "".join(a.logs for a in call.attempts)
        call.done.set()
        with self._lock:
            self._in_flight -= 1
            self._lock.notify_all()

    # ------------------------------------------------------------------ async events

    def _accept_event(self, fn: Function, call: Invocation, payload: bytes) -> None:
        """Queue an `Event` invoke (twice when a duplicate is pending) and deliver it in the background."""
        self._register(call, status=202)
        with self._lock:
            back_to_back = self._duplicates.pop(0) if self._duplicates else None
        if back_to_back is None:
            _thread(self._deliver, fn, call, payload)
            return
        twin = Invocation(
            request_id=call.request_id,
            function=call.function,
            invocation_type="Event",
            event=call.event,
            accepted_at=call.accepted_at,
            duplicate=True,
        )
        self._register(twin, status=202)
        if back_to_back:
            _thread(self._deliver_in_turn, fn, [call, twin], payload)
        else:
            _thread(self._deliver, fn, call, payload)
            _thread(self._deliver, fn, twin, payload)

    def _deliver_in_turn(self, fn: Function, calls: list[Invocation], payload: bytes) -> None:
        for call in calls:
            self._deliver(fn, call, payload)

    def _deliver(self, fn: Function, call: Invocation, payload: bytes) -> None:
        """Lambda's async loop for one event: wait for concurrency, run, retry, then the destination."""
        try:
            condition = self._run_with_retries(fn, call, payload)
            if condition is not None and fn.on_failure_queue_url:
                self._send_to_destination(fn, call, condition)
        finally:
            self._finish(call)

    def _run_with_retries(self, fn: Function, call: Invocation, payload: bytes) -> Condition | None:
        """Run until success (None) or a failure condition; None too when the emulator closes."""
        while True:
            started = self._wait_for_slot(fn, call)
            if started != "started":
                return started
            self._attempt(fn, call, payload)
            if call.outcome == "ok":
                return None
            if call.retries >= fn.maximum_retry_attempts:
                return "RetriesExhausted"
            delay = self.retry_delays[min(call.retries, len(self.retry_delays) - 1)]
            if self._closing.wait(min(delay, max(0.0, self._age_left(fn, call)))):
                return None
            if self._age_left(fn, call) <= 0:
                return "EventAgeExceeded"

    def _wait_for_slot(self, fn: Function, call: Invocation) -> Literal["started", "EventAgeExceeded"] | None:
        """Retry a throttled event from the queue until it gets a concurrency slot or is too old."""
        while True:
            if self._age_left(fn, call) <= 0:
                return "EventAgeExceeded"
            if self._acquire(fn):
                return "started"
            call.throttles += 1
            if call.outcome is None:
                call.outcome = "throttled"
            if self._closing.wait(min(self.throttle_retry_seconds, self._age_left(fn, call))):
                return None

    @staticmethod
    def _age_left(fn: Function, call: Invocation) -> float:
        return call.accepted_at + fn.maximum_event_age_seconds - time.time()

    def _send_to_destination(self, fn: Function, call: Invocation, condition: Condition) -> None:
        record = invocation_record(call, self.function_arn(fn.name), condition)
        self.sqs.send_message(QueueUrl=fn.on_failure_queue_url, MessageBody=json.dumps(record))
        call.destination_record = record
        call.destination_condition = condition
        call.destination_sent = True

    # ------------------------------------------------------------------ one attempt

    def _acquire(self, fn: Function) -> bool:
        """Take a concurrency slot, unless the function's reserved concurrency is in use."""
        with self._lock:
            running = self._active.get(fn.name, 0)
            if fn.reserved_concurrency is not None and running >= fn.reserved_concurrency:
                return False
            self._active[fn.name] = running + 1
            return True

    def _release(self, fn: Function) -> None:
        with self._lock:
            self._active[fn.name] -= 1

    def _attempt(self, fn: Function, call: Invocation, payload: bytes) -> Attempt:
        """Run the handler once in a fresh sandbox and record the attempt on `call`.

        The caller holds a concurrency slot (`_acquire`); the attempt gives it back when it ends.
        """
        if self.runtime_client is not None:
            return self._attempt_in_environment(fn, call, payload)
        attempt = Attempt(number=len(call.attempts) + 1, log_stream=log_stream_name(), started_at=time.time())
        call.attempts.append(attempt)
        call.started_at = call.started_at or attempt.started_at
        limits = _Limits(fn.timeout_seconds, fn.memory_mb)
        deadline_ms = int((attempt.started_at + fn.timeout_seconds) * 1000)
        sandbox = Sandbox(
            self._command(fn, call.request_id, deadline_ms),
            self._environment(fn, attempt),
            self.task_root,
            limits,
        )

        def started(pid: int) -> None:
            attempt.pid = pid
            with self._lock:
                self._sandboxes.setdefault(call.request_id, []).append(sandbox)
                self._lock.notify_all()

        try:
            sandbox.run(payload, started)
        finally:
            with self._lock:
                running = self._sandboxes.get(call.request_id, [])
                if sandbox in running:
                    running.remove(sandbox)
                if not running:
                    self._sandboxes.pop(call.request_id, None)
            self._release(fn)
        outcome, result = classify(sandbox, call.request_id, fn.timeout_seconds)
        return self._record(fn, call, attempt, outcome, result, sandbox.max_rss_mb, sandbox.lines)

    def _record(
        self,
        fn: Function,
        call: Invocation,
        attempt: Attempt,
        outcome: Outcome,
        result: Any,
        max_rss_mb: int,
        lines: list[tuple[float, str]],
    ) -> Attempt:
        """An ended attempt on its record and the call's, and its lines in CloudWatch (framed)."""
        attempt.ended_at = time.time()
        attempt.max_memory_mb = max_rss_mb
        attempt.outcome, attempt.result = outcome, result
        attempt.logs = "".join(f"{line}\n" for _, line in lines)
        call.outcome, call.result = attempt.outcome, attempt.result
        call.function_error = None if attempt.outcome == "ok" else "Unhandled"
        if self.cloudwatch is not None:
            framed = framed_log_lines(call.request_id, attempt, lines, fn.memory_mb, fn.timeout_seconds)
            self.cloudwatch.write(fn.name, attempt.log_stream, framed)
        return attempt

    def _command(self, fn: Function, request_id: str, deadline_ms: int) -> list[str]:
        arn = self.function_arn(fn.name)
        cmd = [sys.executable, "-c", BOOTSTRAP, fn.handler, arn, request_id, str(deadline_ms)]
        if self.code_read_only == "mount":
            cmd = [*_READ_ONLY_MOUNT, str(self.task_root), *cmd]
        return cmd

    def _environment(self, fn: Function, attempt: Attempt) -> dict[str, str]:
        tmp = self._workdir / "tmp" / fn.name  # type: ignore[operator]
        return {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "en_US.UTF-8",
            "TZ": ":UTC",
            "LAMBDA_TASK_ROOT": str(self.task_root),
            "PYTHONPATH": str(self.task_root),
            "TMPDIR": str(tmp),
            "AWS_LAMBDA_FUNCTION_NAME": fn.name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(fn.memory_mb),
            "AWS_LAMBDA_LOG_GROUP_NAME": CloudWatchLogs.group_name(fn.name),
            "AWS_LAMBDA_LOG_STREAM_NAME": attempt.log_stream,
            "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "_HANDLER": fn.handler,
            **fn.env,
        }

    # ------------------------------------------------------------------ execution environments

    def _attempt_in_environment(self, fn: Function, call: Invocation, payload: bytes) -> Attempt:
        """Run the attempt in a warm environment of the function, or a new one (a cold start)."""
        try:
            environment, cold = self._checkout(fn)
        except BaseException:
            self._release(fn)
            raise
        attempt = Attempt(
            number=len(call.attempts) + 1,
            log_stream=environment.log_stream,
            started_at=time.time(),
            pid=environment.pid,
            cold=cold,
            environment=environment.number,
        )
        call.attempts.append(attempt)
        call.started_at = call.started_at or attempt.started_at
        with self._lock:
            self._sandboxes.setdefault(call.request_id, []).append(environment)  # type: ignore[arg-type]
            self._lock.notify_all()
        event = RuntimeEvent(call.request_id, payload, self.function_arn(fn.name), fn.timeout_seconds)
        try:
            run = environment.invoke(event, fn.memory_mb, _group_rss_mb)
        finally:
            with self._lock:
                running = self._sandboxes.get(call.request_id, [])
                if environment in running:
                    running.remove(environment)  # type: ignore[arg-type]
                if not running:
                    self._sandboxes.pop(call.request_id, None)
                if not environment.discarded:  # back to the warm pool before the slot is free
                    self._idle.setdefault(fn.name, []).append(environment)
                self._release(fn)
        outcome, result = classify_run(run, call.request_id, fn.timeout_seconds)
        return self._record(fn, call, attempt, outcome, result, run.max_rss_mb, run.lines)

    def _checkout(self, fn: Function) -> tuple[ExecutionEnvironment, bool]:
        """A free warm environment of the function (the last used first), else a new one."""
        stale: list[ExecutionEnvironment] = []
        found: ExecutionEnvironment | None = None
        with self._lock:
            idle = self._idle.get(fn.name, [])
            while idle and found is None:
                environment = idle.pop()
                if environment.config == _config(fn):
                    found = environment
                else:  # the function's configuration changed since: Lambda starts new ones
                    stale.append(environment)
            self._started += 1
            number = self._started
        for environment in stale:
            environment.discard()
        if found is not None:
            return found, False
        environment = self._start_environment(fn, number)
        with self._lock:
            self._environments.append(environment)
        return environment, True

    def _start_environment(self, fn: Function, number: int) -> ExecutionEnvironment:
        runtime = self.runtime_client
        assert runtime is not None and self._workdir is not None
        tmp = self._workdir / "tmp" / f"{fn.name}-{number}"
        tmp.mkdir(parents=True)
        stream = log_stream_name()
        cmd = [str(runtime.python), "-m", "awslambdaric", fn.handler]
        if self._private_tmp:
            cmd = [*_READ_ONLY_MOUNT_PRIVATE_TMP, str(self.task_root), str(tmp), *cmd]
        elif self.code_read_only == "mount":
            cmd = [*_READ_ONLY_MOUNT, str(self.task_root), *cmd]
        environment = ExecutionEnvironment(
            number, cmd, self._runtime_environment(fn, runtime, stream, tmp), self.task_root, stream
        )
        environment.config = _config(fn)
        environment.start()
        return environment

    def _runtime_environment(
        self, fn: Function, runtime: RuntimeClient, stream: str, tmp: Path
    ) -> dict[str, str]:
        """Lambda's reserved variables for python3.12, then the function's own (which win).

        https://docs.aws.amazon.com/lambda/latest/dg/configuration-envvars.html#configuration-envvars-runtime
        There is no AWS_LAMBDA_FUNCTION_TIMEOUT: the deadline reaches the handler through its
        context (`Lambda-Runtime-Deadline-Ms`). The AWS credentials are the function's role's on
        Lambda; here moto's defaults unless the function's `env` carries others (an assumed role).
        """
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "en_US.UTF-8",
            "TZ": ":UTC",
            "LAMBDA_TASK_ROOT": str(self.task_root),
            "LAMBDA_RUNTIME_DIR": str(runtime.python.parent.parent),
            "_HANDLER": fn.handler,
            "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "AWS_LAMBDA_FUNCTION_NAME": fn.name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(fn.memory_mb),
            "AWS_LAMBDA_LOG_GROUP_NAME": CloudWatchLogs.group_name(fn.name),
            "AWS_LAMBDA_LOG_STREAM_NAME": stream,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            # Lambda's sys.path starts with the task root; nothing of the runtime's venv but the
            # runtime client itself is importable, and no user site-packages of this machine.
            "PYTHONPATH": str(self.task_root),
            "PYTHONNOUSERSITE": "1",
            "PYTHONPYCACHEPREFIX": str(runtime.pycache),
        }
        own = dict(fn.env)
        if not self._private_tmp:  # no mount namespace: the environment's tmp stands in for /tmp
            env["TMPDIR"] = str(tmp)
            own = {k: _under(v, "/tmp", tmp) for k, v in own.items()}
        return {**env, **own}

    def _enter_environments(self, runtime: RuntimeClient) -> None:
        """Working files outside /tmp (each environment gets a /tmp of its own); the task root."""
        runs = cache_root() / "lambda-run"
        runs.mkdir(parents=True, exist_ok=True)
        self._workdir = Path(tempfile.mkdtemp(prefix="emulator-", dir=runs))
        os.chmod(self._workdir, 0o755)
        (self._workdir / "tmp").mkdir()
        if self.extra_files:  # a copy of the zip (hard links) with the extra files beside it
            self.task_root = self._workdir / "task"
            shutil.copytree(runtime.task_root, self.task_root, copy_function=os.link)
            for path in [self.task_root, *self.task_root.rglob("*")]:
                if path.is_dir():
                    os.chmod(path, 0o755)
            for rel, text in self.extra_files.items():
                dst = self.task_root / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.write_text(text)
            read_only(self.task_root)
        else:
            self.task_root = runtime.task_root
        if shutil.which("unshare") and _mount_namespace_works(self.task_root):
            self.code_read_only = "mount"
            outside_tmp = [self.task_root, runtime.python, runtime.pycache, self._workdir]
            self._private_tmp = not any(_under_dir(p, Path("/tmp")) for p in outside_tmp)

    # ------------------------------------------------------------------ the code directory

    def _build_task_root(self) -> None:
        """Copy the code like the deployment zip has it, then make it read-only."""
        for rel in self.code_paths:
            src = REPO / rel
            dst = self.task_root / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(src, dst)
        for rel, text in self.extra_files.items():
            dst = self.task_root / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_text(text)
        for path in [self.task_root, *self.task_root.rglob("*")]:
            mode = 0o555 if path.is_dir() else 0o444
            os.chmod(path, mode)
        (self._workdir / "tmp").mkdir(mode=0o755)  # type: ignore[operator]
        if shutil.which("unshare") and _mount_namespace_works(self.task_root):
            self.code_read_only = "mount"


def _function_name(raw: str) -> str:
    """`NAME`, `NAME:QUALIFIER`, or `arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]`."""
    if raw.startswith("arn:"):
        raw = raw.split(":function:", 1)[-1]
    return raw.split(":", 1)[0]


# Run a command in a private mount namespace where directory $0 is read-only (even for root).
_IN_PRIVATE_MOUNTS = ["unshare", "--mount", "--propagation", "private", "sh", "-c"]
_RO_TASK_ROOT = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0"'
_READ_ONLY_MOUNT = [*_IN_PRIVATE_MOUNTS, f'{_RO_TASK_ROOT} && exec "$@"']


def _mount_namespace_works(directory: Path) -> bool:
    """True when `_READ_ONLY_MOUNT` is permitted here and really refuses writes."""
    probe = [*_READ_ONLY_MOUNT, str(directory), "sh", "-c", 'touch "$0/.probe" 2>/dev/null', str(directory)]
    try:
        done = subprocess.run(probe, capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    # Exit 1 from `touch` means the mount succeeded and the write was refused.
    return done.returncode == 1 and not (directory / ".probe").exists()


# As `_READ_ONLY_MOUNT`, and directory $1 mounted over /tmp: the environment's private /tmp.
_READ_ONLY_MOUNT_PRIVATE_TMP = [
    *_IN_PRIVATE_MOUNTS,
    f'{_RO_TASK_ROOT} && mount --bind "$1" /tmp && shift && exec "$@"',
]


def _config(fn: Function) -> tuple[Any, ...]:
    """What an environment is made from: a change starts new environments, as on Lambda."""
    return (fn.handler, fn.memory_mb, fn.timeout_seconds, tuple(sorted(fn.env.items())))


def _under_dir(path: Path, top: Path) -> bool:
    return path.resolve().is_relative_to(top)


def _under(value: str, old: str, new: Path) -> str:
    """`value` with the path prefix `old` replaced by `new` (only whole path prefixes)."""
    if value == old or value.startswith(old + "/"):
        return str(new) + value[len(old) :]
    return value


def _make_writable(root: Path, files: bool = True) -> None:
    for path in [root, *root.rglob("*")]:
        if not files and not path.is_dir():
            continue
        with contextlib.suppress(OSError):
            os.chmod(path, os.stat(path).st_mode | stat.S_IWUSR | (stat.S_IXUSR if path.is_dir() else 0))


def _send(
    http: BaseHTTPRequestHandler,
    status: int,
    body: bytes,
    request_id: str,
    headers: dict[str, str] | None = None,
) -> None:
    http.send_response(status)
    http.send_header("Content-Type", "application/json")
    http.send_header("Content-Length", str(len(body)))
    http.send_header("x-amzn-RequestId", request_id)
    http.send_header("X-Amz-Executed-Version", "$LATEST")
    for name, value in (headers or {}).items():
        http.send_header(name, value)
    http.end_headers()
    http.wfile.write(body)


def _send_error(http: BaseHTTPRequestHandler, status: int, code: str, message: str) -> None:
    body = json.dumps({"Type": "User", "message": message}).encode()
    _send(http, status, body, str(uuid.uuid4()), {"x-amzn-ErrorType": code})
