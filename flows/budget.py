"""A flow run's time budget, and the meter that measures its transfer rate (issue 12).

`execute_flow_run` (the Lambda function) sets the budget around the run: the moment, in
`time.monotonic()`, at which the run's time is up (its SIGALRM fires then, DEADLINE_MARGIN_SECONDS
before Lambda's deadline). A context variable, so subflows run in-process and the task threads
Prefect starts see it too. Without a budget (local runs, `quest sync`) nothing changes: the
mirror starts every transfer and never stops early.

`TransferMeter` is a progress sink (flows/progress.py) that counts the bytes each transfer streams,
forwarding to the sink already installed (the CLI's progress bars), so the mirror can measure its
rate (flows/core/continuation.py says how) without the transfers knowing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from flows.core.continuation import Rate
from flows.progress import ProgressSink, current_sink, use_sink


@dataclass(frozen=True)
class Budget:
    """The run's time: when it is up (monotonic) and how long it was at the start."""

    deadline: float
    seconds: float

    def remaining(self) -> float:
        return self.deadline - time.monotonic()


_budget: ContextVar[Budget | None] = ContextVar("quest_run_budget", default=None)


def current_budget() -> Budget | None:
    return _budget.get()


@contextmanager
def run_budget(seconds: float | None) -> Iterator[Budget | None]:
    """The budget for a run starting now (None: no budget, as for a local run)."""
    budget = None if seconds is None else Budget(time.monotonic() + seconds, seconds)
    token = _budget.set(budget)
    try:
        yield budget
    finally:
        _budget.reset(token)


class TransferMeter:
    """Counts bytes streamed per file (the current attempt) and in all; forwards to `inner`."""

    def __init__(self, inner: ProgressSink | None = None) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self._first: float | None = None
        self._total = 0
        self._files: dict[str, tuple[float, int]] = {}  # name -> (attempt start, bytes)

    @contextmanager
    def installed(self) -> Iterator[TransferMeter]:
        """Make this the current sink (the task threads inherit it)."""
        with use_sink(self):
            yield self

    @classmethod
    def around_current(cls) -> TransferMeter:
        return cls(current_sink())

    def start(self, name: str, total: int) -> None:
        now = time.monotonic()
        with self._lock:
            if self._first is None:
                self._first = now
            self._files[name] = (now, 0)
        if self._inner is not None:
            self._inner.start(name, total)

    def advance(self, name: str, n: int) -> None:
        with self._lock:
            self._total += n
            started, seen = self._files.get(name, (time.monotonic(), 0))
            self._files[name] = (started, seen + n)
        if self._inner is not None:
            self._inner.advance(name, n)

    def finish(self, name: str) -> None:
        if self._inner is not None:
            self._inner.finish(name)

    def rate(self) -> Rate:
        """All bytes streamed over the seconds since the first transfer started."""
        with self._lock:
            first, total = self._first, self._total
        return Rate(total, 0.0 if first is None else time.monotonic() - first)

    def file_rate(self, name: str) -> Rate:
        """What one file's current attempt streamed, over its seconds."""
        with self._lock:
            started, seen = self._files.get(name, (time.monotonic(), 0))
        return Rate(seen, time.monotonic() - started)
