"""Expected failures read as one line on a run's page; unexpected ones keep their traceback.

A missing input, bad data or an upstream refusal is a `QuestError` whose message says what and
what to do. Prefect would log it up to five times for one failure (the task's "failed with
exception" with a traceback, the task's final state, the flow's "Encountered exception" with a
traceback, the flow's final state), which buries the message and looks like a crash.

`@ends_failed_on_expected` (under `@flow`) turns a QuestError raised by the flow into the run's
final state, Failed with the one-line message, logs that line once at ERROR, and keeps the
exception as the state's data (a parent calling the flow in-process still gets it raised).
`ExpectedFailureFilter`, installed on Prefect's run loggers, drops Prefect's own records of the
same failure: records carrying an expected exception (the tracebacks) and the final-state lines
of runs that failed with one. Any other exception is untouched: traceback and all.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
import threading
from collections.abc import Callable
from typing import ParamSpec, TypeVar, cast

from flows.core.errors import QuestError, one_line

P = ParamSpec("P")
R = TypeVar("R")

RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")
# Prefect 3's final-state lines for a run that raised: "Finished in state Failed('Task run
# encountered an exception MissingInput: ...')" and "... ('Flow run encountered an exception:
# MissingInput: ...')" (prefect/task_engine.py, prefect/flow_engine.py).
_FINAL_WITH_EXCEPTION = re.compile(
    r"^Finished in state Failed\(['\"](?:Task|Flow) run encountered an exception:? (\w+):"
)


def is_expected(exc: BaseException | None) -> bool:
    return isinstance(exc, QuestError)


def _expected_names() -> set[str]:
    names: set[str] = set()
    todo: list[type[BaseException]] = [QuestError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return names


class ExpectedFailureFilter(logging.Filter):
    """Drops Prefect's duplicate records of an expected failure (see the module docstring)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None:
            return not is_expected(exc)
        if record.levelno < logging.INFO or not isinstance(record.msg, str):
            return True
        message = record.getMessage()
        if not message.startswith("Finished in state Failed("):
            return True
        if str(getattr(record, "flow_run_id", "")) in _reported and record.name == RUN_LOGGERS[0]:
            return False  # the flow's own ERROR line said it
        match = _FINAL_WITH_EXCEPTION.match(message)
        return match is None or match[1] not in _expected_names()


_lock = threading.Lock()
_reported: set[str] = set()  # flow runs whose expected failure was logged by the wrapper


def install_filter() -> None:
    """Once per process, on the loggers Prefect's engines and `get_run_logger` write to."""
    with _lock:
        for name in RUN_LOGGERS:
            logger = logging.getLogger(name)
            if not any(isinstance(f, ExpectedFailureFilter) for f in logger.filters):
                logger.addFilter(ExpectedFailureFilter())


def ends_failed_on_expected(fn: Callable[P, R]) -> Callable[P, R]:
    """The flow's expected failure becomes its final state: Failed, one line, logged once."""

    @functools.wraps(fn)  # keeps the signature and docstring Prefect reads for the run form
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        from prefect import get_run_logger
        from prefect.context import FlowRunContext
        from prefect.states import Failed

        install_filter()
        try:
            return fn(*args, **kwargs)
        except QuestError as exc:
            message = one_line(str(exc))
            context = FlowRunContext.get()
            if context is not None and context.flow_run is not None:
                with _lock:
                    _reported.add(str(context.flow_run.id))
            get_run_logger().error("%s", message)
            # A returned state is the run's final state; its data raises for an in-process caller.
            return cast(R, Failed(message=message, data=exc))

    # Prefect would resolve the flow's string annotations in this module: give it them resolved.
    run.__signature__ = inspect.signature(fn, eval_str=True)  # type: ignore[attr-defined]
    return run
