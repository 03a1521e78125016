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

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

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


# --------------------------------------------------------------------------- how long a chain goes (issue 27)

# A chain ends at its this-many-th follow-up that made no net progress (its plan had as many files to
# transfer as the previous run's, or more: what the chain moves is changed again upstream).
MAX_STALLED_FOLLOW_UPS = 3
# No run continues a chain whose first run is this old: a chain started on day D is over before the
# next daily ingest (06:00 UTC) looks, so that ingest checks the survey again instead of seeing it
# "still mirroring" (a follow-up runs at most one invocation, 15 min, past this).
CHAIN_WINDOW = timedelta(hours=20)
# A chain start later than now by more than this is not believed (a clock ahead, a hand-edited run).
CLOCK_SKEW = timedelta(minutes=5)
NEXT_DAILY_INGEST = "the next daily ingest picks up from here"


@dataclass(frozen=True)
class Chain:
    """A continuation chain as one run of it sees it, carried to its follow-up as a parameter.

    Only our own runs write it, from their own clock and plan counts: nothing in it comes from
    upstream text, and `read` takes any value (a hand-edited run, an old deployment's run without
    it) to a state whose follow-ups still end: the start is never later than now and is carried, not
    renewed; counts out of range are clamped.
    """

    started: datetime  # the chain's first run (UTC)
    link: int = 1  # this run's place in the chain: 1 is the first run
    stalls: int = 0  # follow-ups so far (this run included, once planned) without net progress
    pending: int | None = None  # files the previous run's plan had to transfer (None: no previous run)

    @classmethod
    def read(cls, value: object, now: datetime) -> tuple[Chain, str | None]:
        """The chain of a run given `value` (its `chain` parameter): a first run at `now` when there
        is none, with a one-line note when the value was there but not believed as given."""
        if value is None or value == {}:  # {}: the deployment form's default, a first run
            return cls(now), None
        if not isinstance(value, dict):
            return cls(now), f"chain parameter {type(value).__name__} is not a chain; counted from now"
        notes: list[str] = []
        started = _when(value.get("started"))
        if started is None:
            notes.append("its start is unreadable; counted from now")
            started = now
        elif started > now + CLOCK_SKEW:
            notes.append(f"its start {started:%Y-%m-%d %H:%M} UTC is in the future; counted from now")
            started = now
        started = min(started, now)
        link = _count(value.get("link"), 1, 1_000_000)
        stalls = _count(value.get("stalls"), 0, MAX_STALLED_FOLLOW_UPS)
        pending_raw = value.get("pending")
        pending = None if pending_raw is None else _count(pending_raw, 0, 10**12)
        if link is None or stalls is None or (pending_raw is not None and pending is None):
            notes.append("its counts are unreadable; taken as a first follow-up's")
        chain = cls(started, link if link is not None else 2, stalls or 0, pending)
        return chain, ("chain parameter: " + "; ".join(notes)) if notes else None

    def planned(self, pending: int) -> Chain:
        """This run once its plan is known (`pending`: files to transfer): a follow-up whose plan did
        not shrink against the previous run's counts one more stall."""
        stalled = self.pending is not None and pending >= self.pending
        return replace(self, stalls=self.stalls + stalled, pending=pending)

    def stop_reason(self, now: datetime) -> str | None:
        """Why this (planned) run may not start a follow-up; None while it may."""
        if self.stalls >= MAX_STALLED_FOLLOW_UPS:
            return (
                f"no net progress in {self.stalls} follow-up runs (this run's plan had {self.pending} files "
                "to transfer, no fewer than the run before: upstream changes files again as they are moved)"
            )
        if now - self.started >= CHAIN_WINDOW:
            hours = CHAIN_WINDOW.total_seconds() / 3600
            return (
                f"the chain started {self.started:%Y-%m-%d %H:%M} UTC is past its day ({hours:g} h; "
                f"this is run {self.link} of it)"
            )
        return None

    def follow_up(self) -> Chain:
        """The state its follow-up starts from: the same start, the next link, this plan as its reference."""
        return replace(self, link=self.link + 1)

    def parameter(self) -> dict[str, Any]:
        """The JSON-able `chain` parameter of the follow-up (`read` reads it back)."""
        return {
            "started": self.started.astimezone(UTC).isoformat(),
            "link": self.link,
            "stalls": self.stalls,
            "pending": self.pending,
        }


def _when(value: object) -> datetime | None:
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _count(value: object, low: int, high: int) -> int | None:
    """An integer clamped to [low, high]; None when it is no integer (a bool is none either)."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return max(low, min(high, value))


def stopped_message(reason: str, done: int, total: int, snapshot: str | None = None) -> str:
    """A run that stopped its chain with files left: its final state's one line."""
    taken = f"; population snapshot {snapshot} written" if snapshot else ""
    return f"stopped: {reason}; {done} of {total} files moved in this run{taken}; {NEXT_DAILY_INGEST}"
