"""Lambda's Runtime API on loopback: what AWS's runtime interface client (`awslambdaric`) polls.

One server per execution environment, as on Lambda, where each environment talks to its own
endpoint (`AWS_LAMBDA_RUNTIME_API=127.0.0.1:PORT`). The routes and headers are AWS's
(https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html):

- `GET  /2018-06-01/runtime/invocation/next` long-polls for the next event and answers it with
  `Lambda-Runtime-Aws-Request-Id`, `Lambda-Runtime-Deadline-Ms` (epoch ms, set when the event is
  handed out: the init phase is not part of the function's timeout), `Lambda-Runtime-Invoked-
  Function-Arn` and `Lambda-Runtime-Trace-Id`;
- `POST /2018-06-01/runtime/invocation/{id}/response` with the handler's result;
- `POST /2018-06-01/runtime/invocation/{id}/error` with `Lambda-Runtime-Function-Error-Type` and
  the runtime's JSON error body;
- `POST /2018-06-01/runtime/init/error` when the handler could not be loaded.

The emulator (tests/lambda_emulator.py) submits an event, then watches `answer` together with the
process (a timeout, an out-of-memory kill or an exit ends the attempt without one).
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

PREFIX = "/2018-06-01/runtime"
NEXT = f"{PREFIX}/invocation/next"
INVOCATION = f"{PREFIX}/invocation/"
INIT_ERROR = f"{PREFIX}/init/error"
ERROR_TYPE_HEADER = "Lambda-Runtime-Function-Error-Type"
# How often a waiting `next` looks whether the server is closing.
POLL_SECONDS = 0.5


@dataclass(frozen=True)
class Answer:
    """What the runtime posted: a result, an invocation error, or an init error."""

    kind: Literal["response", "error", "init_error"]
    body: bytes
    error_type: str | None = None

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Event:
    """One event for the runtime, and what became of it."""

    request_id: str
    payload: bytes
    function_arn: str
    timeout_seconds: float
    trace_id: str = field(default_factory=lambda: _trace_id())
    handed_at: float | None = None  # epoch seconds the runtime received it (`next`)
    deadline_ms: int | None = None
    answer: Answer | None = None


def _trace_id() -> str:
    """X-Ray's form: `Root=1-<8 hex epoch>-<24 hex>;Parent=<16 hex>;Sampled=0`."""
    return f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Parent={uuid.uuid4().hex[:16]};Sampled=0"


class RuntimeApi:
    """Context manager: the Runtime API of one execution environment, serving one event at a time."""

    def __init__(self) -> None:
        self._events: queue.Queue[Event] = queue.Queue()
        self._current: Event | None = None
        self.init_error: Answer | None = None
        self.changed = threading.Condition()  # notified on each hand-out and each post
        self._closing = threading.Event()
        self._server: ThreadingHTTPServer | None = None

    def __enter__(self) -> RuntimeApi:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                api._get(self)

            def do_POST(self) -> None:  # noqa: N802
                api._post(self)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._closing.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def address(self) -> str:
        """`host:port`, the value of `AWS_LAMBDA_RUNTIME_API`."""
        assert self._server is not None, "use the Runtime API as a context manager"
        host, port = self._server.server_address[:2]
        return f"{host}:{port}"

    def submit(self, event: Event) -> None:
        """Queue an event for the runtime's next `GET .../invocation/next`."""
        self._events.put(event)

    # ------------------------------------------------------------------ routes

    def _get(self, http: BaseHTTPRequestHandler) -> None:
        if http.path != NEXT:
            return _reply(http, 404, {"errorMessage": f"no route for GET {http.path}"})
        while True:
            try:
                event = self._events.get(timeout=POLL_SECONDS)
                break
            except queue.Empty:
                if self._closing.is_set():
                    return _reply(http, 500, {"errorMessage": "the environment is shutting down"})
        event.handed_at = time.time()
        event.deadline_ms = int((event.handed_at + event.timeout_seconds) * 1000)
        with self.changed:
            self._current = event
            self.changed.notify_all()
        headers = {
            "Lambda-Runtime-Aws-Request-Id": event.request_id,
            "Lambda-Runtime-Deadline-Ms": str(event.deadline_ms),
            "Lambda-Runtime-Invoked-Function-Arn": event.function_arn,
            "Lambda-Runtime-Trace-Id": event.trace_id,
        }
        _send(http, 200, event.payload, headers)

    def _post(self, http: BaseHTTPRequestHandler) -> None:
        body = http.rfile.read(int(http.headers.get("Content-Length") or 0))
        error_type = http.headers.get(ERROR_TYPE_HEADER)
        path = http.path
        if path == INIT_ERROR:
            with self.changed:
                self.init_error = Answer("init_error", body, error_type)
                self.changed.notify_all()
            return _reply(http, 202, {"status": "OK"})
        if path.startswith(INVOCATION) and path.endswith(("/response", "/error")):
            request_id, _, kind = path[len(INVOCATION) :].rpartition("/")
            with self.changed:
                event = self._current
                if event is None or event.request_id != request_id or event.answer is not None:
                    return _reply(http, 400, {"errorMessage": f"no pending invocation {request_id}"})
                answer_kind: Literal["response", "error"] = "response" if kind == "response" else "error"
                event.answer = Answer(answer_kind, body, error_type)
                self._current = None
                self.changed.notify_all()
            return _reply(http, 202, {"status": "OK"})
        _reply(http, 404, {"errorMessage": f"no route for POST {path}"})


def _reply(http: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
    _send(http, status, json.dumps(body).encode(), {})


def _send(http: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str]) -> None:
    with contextlib.suppress(OSError):
        _write(http, status, body, headers)


def _write(http: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str]) -> None:
    http.send_response(status)
    http.send_header("Content-Type", "application/json")
    http.send_header("Content-Length", str(len(body)))
    for name, value in headers.items():
        http.send_header(name, value)
    http.end_headers()
    http.wfile.write(body)  # may fail: a runtime killed while it waited on `next`
