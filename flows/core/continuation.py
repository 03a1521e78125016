"""When a survey mirror in Lambda stops starting transfers and continues in a follow-up run (issue 12).

A run has a budget (seconds until its time is up, Lambda's limit less the deadline margin). The
mirror starts a transfer only while more than the continuation margin is left and the transfer is
expected to end before the hard stop; at the hard stop (`hard_stop_seconds` before the end) the
transfers still in flight are aborted and counted "not done yet", and a follow-up run does the rest
(the incremental plan skips what is done).

The rate is measured from this run's own progress: bytes streamed so far by all its transfers
(counted chunk by chunk, transfers still in flight included) over the seconds since its first
transfer started. That is the aggregate rate; a new transfer sharing it with the others in flight
is expected at aggregate / (in flight + 1). A file alone would get at most the aggregate rate, so
a file that needs longer than a whole run's budget at the aggregate rate can never be moved by a
run: that is an error naming the file, its size and the knobs.

This module has no dependencies and does no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

# At most this much of the margin is kept, after aborting what is in flight, for the run's own
# flush (follow-up run, artifact, final state); never more than half of the margin.
FLUSH_SECONDS = 10.0
# A rate measured over less time or fewer bytes than this says nothing yet.
MIN_RATE_SECONDS = 2.0
MIN_RATE_BYTES = 64 * 1024


def hard_stop_seconds(margin: float) -> float:
    """Seconds before the end of the budget at which transfers in flight are aborted."""
    return min(FLUSH_SECONDS, margin / 2)


@dataclass(frozen=True)
class Rate:
    """Bytes streamed by this run's transfers over the seconds since its first one started."""

    bytes: int
    seconds: float

    def per_second(self) -> float | None:
        """The aggregate rate; None until enough was measured to say."""
        if self.seconds < MIN_RATE_SECONDS or self.bytes < MIN_RATE_BYTES:
            return None
        return self.bytes / self.seconds


def expected_seconds(size: int, rate: float, in_flight: int) -> float:
    """How long a new transfer of `size` bytes takes sharing `rate` with `in_flight` others."""
    return size * (in_flight + 1) / rate


def time_is_up(remaining: float | None, margin: float) -> bool:
    """No transfer starts any more: less than the margin is left (never without a budget)."""
    return remaining is not None and remaining <= margin


def may_start(remaining: float | None, margin: float, size: int, rate: float | None, in_flight: int) -> bool:
    """Whether a transfer of `size` bytes may start now.

    Without a budget (a local run) always; otherwise only while more than `margin` is left, and,
    once a rate is measured, only when the transfer is expected to end before the hard stop.
    """
    if remaining is None:
        return True
    if time_is_up(remaining, margin):
        return False
    if rate is None or rate <= 0:
        return True
    return expected_seconds(size, rate, in_flight) <= remaining - hard_stop_seconds(margin)


def must_abort(remaining: float | None, margin: float) -> bool:
    """The hard stop: transfers still in flight are aborted and left for the follow-up run."""
    return remaining is not None and remaining <= hard_stop_seconds(margin)


def fits_in_a_run(size: int, rate: float | None, budget: float, margin: float) -> bool:
    """Whether one run could move a file of `size` bytes alone at `rate` (True while unmeasured)."""
    if rate is None or rate <= 0:
        return True
    return size / rate <= budget - hard_stop_seconds(margin)


def too_big_message(name: str, size: int, rate: float, budget: float, margin: float) -> str:
    """The error for a file no run can move: the file, its size, the rate and the knobs."""
    needed = size / rate
    usable = budget - hard_stop_seconds(margin)
    return (
        f"{name} ({size} bytes) cannot be moved within one invocation: at the measured "
        f"{rate / 1024 / 1024:.2f} MiB/s it needs about {needed:.0f} s, a run has {usable:.0f} s "
        "(raise the function's timeout, at most 900 s, or its memory, which raises its network share; "
        "QUEST_CONTINUATION_MARGIN_SECONDS sets the margin kept at the end)"
    )


def worth_a_follow_up(errors: list[str | None]) -> bool:
    """Whether a follow-up may be started before the run ends: some transfer moved its file and none
    failed (a failure ends the run Failed; a run that moved nothing may be a file that never fits)."""
    return any(e is None for e in errors) and all(e is None for e in errors)


def partial_message(done: int, total: int, follow_up: str) -> str:
    """A run that stopped before its plan was done: its COMPLETED state's message."""
    return f"partial: {done} of {total} files; continues in run {follow_up}"
