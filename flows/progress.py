"""Transfer progress for a terminal, without the flows knowing who is watching.

The flows report through whatever sink is current (a context variable, so the task threads
Prefect starts inherit it); the CLI installs a rich progress display when stderr is a terminal.
Nothing is shown anywhere else (Lambda, tests, deployments).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any, Protocol


class ProgressSink(Protocol):
    def start(self, name: str, total: int) -> None: ...
    def advance(self, name: str, n: int) -> None: ...
    def finish(self, name: str) -> None: ...


_sink: ContextVar[ProgressSink | None] = ContextVar("quest_progress_sink", default=None)


def current_sink() -> ProgressSink | None:
    return _sink.get()


@contextlib.contextmanager
def use_sink(sink: ProgressSink | None) -> Iterator[None]:
    token = _sink.set(sink)
    try:
        yield
    finally:
        _sink.reset(token)


class RichProgress:
    """A rich progress bar per file in flight (rich comes with Prefect)."""

    def __init__(self, console: Any = None):
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._tasks: dict[str, tuple[Any, int]] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def start(self, name: str, total: int) -> None:
        with self._lock:
            if name in self._tasks:  # a retry starts the file again
                self._progress.reset(self._tasks[name][0], total=total)
                self._tasks[name] = (self._tasks[name][0], total)
            else:
                self._tasks[name] = (self._progress.add_task(name, total=total), total)

    def advance(self, name: str, n: int) -> None:
        with self._lock:
            entry = self._tasks.get(name)
        if entry is not None:
            self._progress.advance(entry[0], n)

    def finish(self, name: str) -> None:
        with self._lock:
            entry = self._tasks.get(name)
        if entry is not None:
            self._progress.update(entry[0], completed=entry[1])


class _DropExpectedTracebacks:
    """Logging filter: records about an expected failure (QuestError) keep their line, lose the traceback."""

    def filter(self, record: Any) -> bool:
        from flows.core.errors import QuestError

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, QuestError):
            record.exc_info = None
            record.exc_text = None
        return True


@contextlib.contextmanager
def cli_session() -> Iterator[None]:
    """For a CLI command: rich transfer progress on a terminal; no tracebacks for expected failures."""
    import logging
    import sys

    import prefect  # noqa: F401  (sets up Prefect's logging handlers, which get the filter)

    handlers = {h for name in ("", "prefect") for h in logging.getLogger(name).handlers}
    quiet = _DropExpectedTracebacks()
    for handler in handlers:
        handler.addFilter(quiet)
    try:
        if sys.stderr.isatty():
            with RichProgress() as bars, use_sink(bars):
                yield
        else:
            yield
    finally:
        for handler in handlers:
            handler.removeFilter(quiet)
