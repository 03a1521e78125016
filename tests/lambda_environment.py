"""One Lambda execution environment: AWS's runtime client in a process of its own, kept warm.

The process (`python -m awslambdaric HANDLER`) starts once, loads the handler (the init phase)
and then serves event after event from its own Runtime API (tests/lambda_runtime_api.py), as on
Lambda (https://docs.aws.amazon.com/lambda/latest/dg/lambda-runtime-environment.html):

- a handler error is posted by the runtime and the environment stays warm;
- a timeout or running out of memory SIGKILLs the whole process group and the environment is
  discarded, as is one whose runtime exited or whose init failed (the next invoke starts cold);
- the function's timeout runs from the moment the runtime receives the event (its
  `Lambda-Runtime-Deadline-Ms`); a hung init is cut at INIT_SECONDS plus the timeout, since
  Lambda retries a slow on-demand init inside the first invoke's timeout.

stdout and stderr together are the environment's log stream; each invocation takes the lines
written while it ran (a cold start's init lines go with its first invocation).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lambda_runtime_api import Answer, Event, RuntimeApi

# Lambda's init phase limit for on-demand functions.
INIT_SECONDS = 10.0
POLL_SECONDS = 0.1

Ending = Literal["answered", "init_error", "exited", "timeout", "oom"]


@dataclass
class Run:
    """How one invocation in the environment ended."""

    ending: Ending
    answer: Answer | None = None
    returncode: int | None = None
    max_rss_mb: int = 0
    lines: list[tuple[float, str]] = field(default_factory=list)


class ExecutionEnvironment:
    """A warm runtime process and its Runtime API; `invoke` one event at a time."""

    def __init__(self, number: int, cmd: list[str], env: dict[str, str], cwd: Path, log_stream: str) -> None:
        self.number, self.cmd, self.env, self.cwd, self.log_stream = number, cmd, env, cwd, log_stream
        self.invocations = 0
        self.discarded = False
        self.config: tuple[object, ...] = ()  # what it was made from (the emulator compares)
        self.lines: list[tuple[float, str]] = []
        self._api = RuntimeApi()
        self.proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        self._api.__enter__()
        env = {**self.env, "AWS_LAMBDA_RUNTIME_API": self._api.address}
        self.proc = subprocess.Popen(
            self.cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,  # one log stream, in the order written
            cwd=self.cwd,
            env=env,
            start_new_session=True,  # its own process group, killed as one
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def invoke(self, event: Event, memory_mb: int, group_rss_mb: Callable[[int], int]) -> Run:
        """Hand the event to the runtime and watch until it answers or a limit ends the environment."""
        assert self.proc is not None
        first_line = len(self.lines)
        started = time.time()
        self.invocations += 1
        self._api.submit(event)
        run = Run("answered")
        while True:
            with self._api.changed:
                if event.answer is None and self._api.init_error is None:
                    self._api.changed.wait(POLL_SECONDS)
            if event.answer is not None:
                run.answer = event.answer
                break
            if self._api.init_error is not None:
                run.ending, run.answer = "init_error", self._api.init_error
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(5)  # the runtime exits after reporting (awslambdaric: exit 1)
                break
            code = self.proc.poll()
            if code is not None:
                run.ending, run.returncode = "exited", code
                break
            rss = group_rss_mb(self.proc.pid)
            run.max_rss_mb = max(run.max_rss_mb, rss)
            limit_from = event.handed_at if event.handed_at is not None else started + INIT_SECONDS
            if time.time() >= limit_from + event.timeout_seconds:
                run.ending = "timeout"
                break
            if rss > memory_mb:
                run.ending = "oom"
                break
        if run.ending != "answered":
            self.discard()
        self._settle_output()
        run.lines = self.lines[first_line:]
        return run

    def signal_group(self, sig: int) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)

    def discard(self) -> None:
        """The environment ends: the process group is killed and the Runtime API closed."""
        self.discarded = True
        self.signal_group(signal.SIGKILL)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        self._api.__exit__(None, None, None)

    # ------------------------------------------------------------------ output

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.append((time.time(), raw.decode(errors="replace").rstrip("\n")))

    def _settle_output(self) -> None:
        """Let the reader take what the runtime wrote before it answered (bounded to a second)."""
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            try:
                pending = struct.unpack(
                    "i", fcntl.ioctl(self.proc.stdout.fileno(), termios.FIONREAD, b"\0\0\0\0")
                )[0]
            except (OSError, ValueError):
                pending = 0
            if pending == 0:
                break
            time.sleep(0.02)
        if self.discarded and self._reader is not None:
            self._reader.join(2)
        else:
            time.sleep(0.02)  # the reader appends the last line it took
