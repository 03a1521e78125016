"""A loopback emulator of Lambda's Invoke API that runs the project's handler like Lambda would.

moto cannot execute Lambda code without Docker (none here), so the tests use this instead:
a real HTTP server on 127.0.0.1 implementing `POST /2015-03-31/functions/{name}/invocations`
(what boto3's `lambda.invoke` sends), honouring `X-Amz-Invocation-Type`:

- `RequestResponse` runs the handler and answers 200 with its JSON result; a handler exception
  answers 200 with `X-Amz-Function-Error: Unhandled` and Lambda's error body;
- `Event` answers 202 at once and runs the handler in the background;
- `DryRun` answers 204 and runs nothing; an unknown function answers 404
  `ResourceNotFoundException`.

Each invocation is a fresh subprocess with a Lambda-like environment: the code is a copy of the
package in a read-only task root (LAMBDA_TASK_ROOT, the working directory), the only writable
place is the function's own tmp directory (TMPDIR, PREFECT_HOME under it), the AWS_LAMBDA_* and
AWS_REGION variables are set, and nothing else of the test process's environment leaks in.
Read-only is enforced with a private mount namespace (`unshare --mount`, the task root bind-mounted
read-only) where the kernel allows it, else with file modes (which bind every user but root);
`code_read_only` says which.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

REPO = Path(__file__).resolve().parent.parent
ACCOUNT = "123456789012"
INVOKE_PREFIX = "/2015-03-31/functions/"
INVOKE_SUFFIX = "/invocations"

# The Lambda runtime's bootstrap, reduced: read the event, call the handler, write the outcome
# on the original stdout (the handler's own prints go to stderr, Lambda's log stream).
BOOTSTRAP = r"""
import importlib, json, os, sys, time, traceback
result_out = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
module_name, func_name = sys.argv[1].rsplit(".", 1)
deadline = time.monotonic() + float(os.environ["AWS_LAMBDA_FUNCTION_TIMEOUT"])

class Context:
    function_name = os.environ["AWS_LAMBDA_FUNCTION_NAME"]
    function_version = "$LATEST"
    invoked_function_arn = sys.argv[2]
    aws_request_id = sys.argv[3]
    memory_limit_in_mb = os.environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"]
    def get_remaining_time_in_millis(self):
        return max(0, int((deadline - time.monotonic()) * 1000))

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
result_out.write(json.dumps(outcome, default=str))
result_out.flush()
"""


@dataclass
class Function:
    name: str
    env: dict[str, str] = field(default_factory=dict)
    handler: str = "flows.runtime.handler.handler"
    timeout_seconds: float = 120.0
    memory_mb: int = 1024


@dataclass
class Invocation:
    request_id: str
    function: str
    invocation_type: str
    event: Any
    status: int | None = None
    function_error: str | None = None
    result: Any = None
    logs: str = ""
    seconds: float = 0.0
    done: threading.Event = field(default_factory=threading.Event)


class LambdaEmulator:
    """Context manager: `with LambdaEmulator() as lam: lam.add_function("f", env={...})`."""

    def __init__(
        self,
        code_paths: tuple[str, ...] = ("flows",),
        extra_files: dict[str, str] | None = None,
        region: str = "us-east-1",
    ):
        self.code_paths = code_paths
        self.extra_files = dict(extra_files or {})
        self.region = region
        self.code_read_only = "modes"  # or "mount" once the namespace probe succeeds
        self.functions: dict[str, Function] = {}
        self.invocations: list[Invocation] = []
        self._lock = threading.Condition()
        self._in_flight = 0
        self._server: ThreadingHTTPServer | None = None
        self._workdir: Path | None = None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> LambdaEmulator:
        self._workdir = Path(tempfile.mkdtemp(prefix="lambda-emulator-"))
        os.chmod(self._workdir, 0o755)
        self.task_root = self._workdir / "task"
        self._build_task_root()
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
        self.wait_idle(timeout=30, raise_on_timeout=False)
        if self._workdir is not None:
            _make_writable(self._workdir)
            shutil.rmtree(self._workdir, ignore_errors=True)

    @property
    def endpoint_url(self) -> str:
        assert self._server is not None, "use the emulator as a context manager"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def function_arn(self, name: str) -> str:
        return f"arn:aws:lambda:{self.region}:{ACCOUNT}:function:{name}"

    def add_function(self, name: str, env: dict[str, str] | None = None, **options: Any) -> str:
        """Register a function (its configured environment, like the Pulumi runner's); returns its ARN."""
        fn = Function(name=name, env=dict(env or {}), **options)
        tmp = self._workdir / "tmp" / name  # type: ignore[operator]
        (tmp / "prefect").mkdir(parents=True, exist_ok=True)
        fn.env.setdefault("PREFECT_HOME", str(tmp / "prefect"))
        self.functions[name] = fn
        return self.function_arn(name)

    def wait_idle(self, timeout: float = 60.0, raise_on_timeout: bool = True) -> None:
        """Block until no invocation (including async `Event` ones) is running."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    if raise_on_timeout:
                        raise TimeoutError(f"{self._in_flight} invocation(s) still running after {timeout}s")
                    return
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
        with self._lock:
            self.invocations.append(call)
            self._in_flight += 1
        if kind == "Event":
            threading.Thread(target=self._run, args=(fn, call, body), daemon=True).start()
            return _send(http, 202, b"", request_id)
        self._run(fn, call, body)
        extra = {"X-Amz-Function-Error": call.function_error} if call.function_error else {}
        _send(http, 200, json.dumps(call.result).encode(), request_id, extra)

    def _run(self, fn: Function, call: Invocation, payload: bytes) -> None:
        started = time.monotonic()
        try:
            ok, result, logs = self._execute(fn, call.request_id, payload)
            call.status = 200
            call.result = result
            call.logs = logs
            call.function_error = None if ok else "Unhandled"
        finally:
            call.seconds = time.monotonic() - started
            call.done.set()
            with self._lock:
                self._in_flight -= 1
                self._lock.notify_all()

    def _execute(self, fn: Function, request_id: str, payload: bytes) -> tuple[bool, Any, str]:
        tmp = self._workdir / "tmp" / fn.name  # type: ignore[operator]
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "en_US.UTF-8",
            "TZ": ":UTC",
            "LAMBDA_TASK_ROOT": str(self.task_root),
            "PYTHONPATH": str(self.task_root),
            "TMPDIR": str(tmp),
            "AWS_LAMBDA_FUNCTION_NAME": fn.name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(fn.memory_mb),
            "AWS_LAMBDA_FUNCTION_TIMEOUT": str(fn.timeout_seconds),
            "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "_HANDLER": fn.handler,
            **fn.env,
        }
        cmd = [sys.executable, "-c", BOOTSTRAP, fn.handler, self.function_arn(fn.name), request_id]
        if self.code_read_only == "mount":
            cmd = [*_READ_ONLY_MOUNT, str(self.task_root), *cmd]
        try:
            proc = subprocess.run(
                cmd,
                input=payload,
                capture_output=True,
                cwd=self.task_root,
                env=env,
                timeout=fn.timeout_seconds,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            logs = (exc.stderr or b"").decode(errors="replace")
            message = f"Task timed out after {fn.timeout_seconds:.2f} seconds"
            return False, {"errorMessage": message, "errorType": "Sandbox.Timedout"}, logs
        logs = proc.stderr.decode(errors="replace")
        try:
            outcome = json.loads(proc.stdout)
        except ValueError:
            message = (
                f"RequestId: {request_id} Error: Runtime exited with error: exit status {proc.returncode}"
            )
            return False, {"errorMessage": message, "errorType": "Runtime.ExitError"}, logs
        if outcome["ok"]:
            return True, outcome["result"], logs
        return False, outcome["error"], logs

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
_READ_ONLY_MOUNT = [
    "unshare",
    "--mount",
    "--propagation",
    "private",
    "sh",
    "-c",
    'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"',
]


def _mount_namespace_works(directory: Path) -> bool:
    """True when `_READ_ONLY_MOUNT` is permitted here and really refuses writes."""
    probe = [*_READ_ONLY_MOUNT, str(directory), "sh", "-c", 'touch "$0/.probe" 2>/dev/null', str(directory)]
    try:
        done = subprocess.run(probe, capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    # Exit 1 from `touch` means the mount succeeded and the write was refused.
    return done.returncode == 1 and not (directory / ".probe").exists()


def _make_writable(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
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
