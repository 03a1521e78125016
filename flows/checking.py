"""The ingest's survey checks, a few at a time in threads of its flow run (issue 12).

One check is a listing GET (waiting its turn for BLS's request rate) and a store listing, with two
task runs around them: about 2.4 s of mostly waiting on the APIs. One after another, all of BLS
outlasted a 60 s function (5 invocations on a no-change day); a few at once wait together. The
checks only read, so running them side by side changes nothing else; the BLS limits still bound
the requests across every invocation.

Each check runs under a copy of the caller's context (the flow run, its settings and budget), as
Prefect's own thread pool task runner does, so its task runs and log lines belong to the run.
A check starts only while the budget leaves more than the margin (the first always starts, so a
chain of follow-ups always progresses), and a check returning None (stopped at the hard stop)
leaves its survey for the follow-up like one never started. When the time is up with surveys
still queued, after a check of this run has finished, `on_time_up` hears it once (the ingest
creates its follow-up then, not in the last seconds of the run, where a loaded server's retry
once crashed it).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Generic, TypeVar

from flows.budget import Budget, current_budget
from flows.core import continuation as rules

T = TypeVar("T")


class ConcurrentChecks(Generic[T]):
    """Iterating yields (survey, result) as each check finishes, `workers` checks at a time.

    `check(survey, stop_in)` gets the seconds until the run's hard stop (None without a budget)
    and returns None when it was stopped there; such surveys end in `stopped`. Exceptions from a
    check propagate (the checks still running finish first). `progressed` says the caller already
    counts a survey as done (one mirrored elsewhere), so the time check applies to the first start.
    `on_time_up(running, queued, remaining)` is called once when the time is up with surveys still
    queued and something has progressed (a check finished, or `progressed`); both lists in order.
    """

    def __init__(
        self,
        surveys: Sequence[str],
        check: Callable[[str, float | None], T | None],
        workers: int,
        margin: float,
        progressed: bool = False,
        on_time_up: Callable[[list[str], list[str], float], None] | None = None,
    ) -> None:
        self.surveys = list(surveys)
        self.stopped: list[str] = []
        self._check, self._workers, self._margin = check, max(1, workers), margin
        self._progressed, self._finished = progressed, progressed
        self._on_time_up = on_time_up

    def __iter__(self) -> Iterator[tuple[str, T]]:
        budget = current_budget()
        queue = list(self.surveys)
        running: dict[Future[T | None], str] = {}
        with ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="check") as pool:
            while queue or running:
                while queue and len(running) < self._workers and not self._time_up(queue, running, budget):
                    remaining = None if budget is None else budget.remaining()
                    survey = queue.pop(0)
                    stop_in = None if remaining is None else remaining - rules.hard_stop_seconds(self._margin)
                    context = contextvars.copy_context()
                    running[pool.submit(context.run, self._check, survey, stop_in)] = survey
                    self._progressed = True
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                results: list[tuple[str, T]] = []
                for future in sorted(finished, key=lambda f: self.surveys.index(running[f])):
                    survey = running.pop(future)
                    result = future.result()
                    if result is None:
                        self.stopped.append(survey)
                    else:
                        self._finished = True
                        results.append((survey, result))
                self._time_up(queue, running, budget)  # before the caller spends time on the results
                yield from results

    def _time_up(self, queue: list[str], running: dict[Future[T | None], str], budget: Budget | None) -> bool:
        """True (and the queue handed over, then emptied) once less than the margin is left."""
        remaining = None if budget is None else budget.remaining()
        if not (queue and self._progressed and rules.time_is_up(remaining, self._margin)):
            return False
        assert remaining is not None
        if self._on_time_up is not None and self._finished:
            self._on_time_up(sorted(running.values(), key=self.surveys.index), list(queue), remaining)
        queue.clear()  # left for the follow-up run
        return True


def not_checked(surveys: Sequence[str], checked: Sequence[str]) -> list[str]:
    """The surveys still to check, in their order: never started, or stopped at the hard stop."""
    done = set(checked)
    return [s for s in surveys if s not in done]
