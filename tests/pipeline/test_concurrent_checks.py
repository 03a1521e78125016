"""The ingest's checks run a few at a time (flows/checking.py): how many at once, which start
when the run's time is short, what a stopped or failing check leaves, and that each check runs in
the caller's context (the flow run's, in the ingest)."""

from __future__ import annotations

import threading
import time
from contextvars import ContextVar

import pytest

from flows.budget import run_budget
from flows.checking import ConcurrentChecks, not_checked

SURVEYS = ["pr", "ce", "la", "jt", "oe"]
caller: ContextVar[str] = ContextVar("caller", default="none")


def test_workers_checks_run_at_once_and_results_come_as_they_finish():
    together = threading.Barrier(2, timeout=10)  # breaks (the test fails) unless 2 run at once
    lock, running, peak = threading.Lock(), [0], [0]

    def check(survey: str, stop_in: float | None) -> str:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        if survey != "oe":
            together.wait()
        with lock:
            running[0] -= 1
        return survey.upper()

    got = dict(ConcurrentChecks(SURVEYS[:5], check, workers=2, margin=1.0))
    assert got == {s: s.upper() for s in SURVEYS}
    assert peak[0] == 2


def test_each_check_sees_the_callers_context_and_no_budget_means_no_stop():
    seen: list[tuple[str, float | None]] = []
    token = caller.set("ingest run")
    try:
        results = list(
            ConcurrentChecks(SURVEYS, lambda s, stop_in: seen.append((caller.get(), stop_in)) or s, 3, 1.0)
        )
    finally:
        caller.reset(token)
    assert sorted(s for s, _ in results) == sorted(SURVEYS)
    assert seen == [("ingest run", None)] * len(SURVEYS)


def test_when_time_is_up_only_the_first_starts_and_the_rest_are_left_over():
    started: list[str] = []
    with run_budget(0.5):  # less than the margin left from the start
        checks = ConcurrentChecks(SURVEYS, lambda s, stop_in: started.append(s) or s, 4, margin=5.0)
        got = [s for s, _ in checks]
    assert started == got == ["pr"]  # one always starts: a chain of follow-ups always progresses
    assert not_checked(SURVEYS, got) == SURVEYS[1:]


def test_when_time_is_up_and_the_caller_progressed_nothing_starts():
    with run_budget(0.5):
        checks = ConcurrentChecks(SURVEYS, lambda s, stop_in: pytest.fail(s), 4, 5.0, progressed=True)
        assert list(checks) == []


def test_a_budget_gives_each_check_its_seconds_to_the_hard_stop():
    stops: list[float | None] = []
    with run_budget(100.0):
        list(ConcurrentChecks(["pr"], lambda s, stop_in: stops.append(stop_in) or s, 1, margin=10.0))
    (stop_in,) = stops
    assert stop_in is not None and 90.0 < stop_in <= 95.0  # 100 s less the hard stop (5 s for a 10 s margin)


def test_a_stopped_check_is_left_for_the_follow_up_in_order():
    checks = ConcurrentChecks(SURVEYS, lambda s, stop_in: None if s in ("ce", "jt") else s, 2, 1.0)
    got = [s for s, _ in checks]
    assert sorted(checks.stopped) == ["ce", "jt"]
    assert not_checked(SURVEYS, got) == ["ce", "jt"]


def test_a_failing_check_propagates_after_the_running_ones_finish():
    finished: list[str] = []
    release = threading.Event()

    def check(survey: str, stop_in: float | None) -> str:
        if survey == "pr":
            raise RuntimeError("boom")
        release.wait(10)
        finished.append(survey)
        return survey

    checks = ConcurrentChecks(SURVEYS[:2], check, 2, 1.0)
    threading.Timer(0.2, release.set).start()
    with pytest.raises(RuntimeError, match="boom"):
        list(checks)
    assert finished == ["ce"]  # not abandoned mid-way


def test_time_up_after_a_finished_check_hands_the_rest_over_once_with_the_running_ones():
    """The follow-up ingest is created as soon as the time is up, not at the hard stop: what is
    left then is the queue and the checks still running (a re-check costs one listing GET)."""
    handed: list[tuple[list[str], list[str], float]] = []

    def check(survey: str, stop_in: float | None) -> str:
        if survey == "pr":
            time.sleep(0.6)  # then less than the margin is left
            return survey
        deadline = time.monotonic() + 10
        while not handed and time.monotonic() < deadline:  # still running when the time is up
            time.sleep(0.01)
        return survey

    with run_budget(3.0):
        checks = ConcurrentChecks(
            SURVEYS,
            check,
            2,
            margin=2.5,
            on_time_up=lambda running, queued, left: handed.append((running, queued, left)),
        )
        got = [s for s, _ in checks]
    assert got == ["pr", "ce"]
    assert [(running, queued) for running, queued, _ in handed] == [(["ce"], ["la", "jt", "oe"])]  # once
    assert 0 < handed[0][2] <= 2.5  # the seconds left then, for the follow-up's schedule


def test_time_up_before_any_check_finished_hands_nothing_over():
    """No check of this run has finished: a follow-up created now might do no better (the end of
    the run decides, and fails the surveys rather than chain forever)."""
    handed: list[list[str]] = []

    def check(survey: str, stop_in: float | None) -> str | None:
        time.sleep(0.6)
        return None  # stopped at the hard stop

    with run_budget(3.0):
        checks = ConcurrentChecks(
            SURVEYS, check, 2, margin=2.5, on_time_up=lambda left, _: handed.append(left)
        )
        assert list(checks) == []
    assert handed == [] and checks.stopped == ["pr", "ce"]
