"""The pure continuation rules: when a mirror starts a transfer, aborts, and gives up on a file."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from flows.core.continuation import (
    FLUSH_SECONDS,
    MIN_RATE_BYTES,
    MIN_RATE_SECONDS,
    Rate,
    fits_in_a_run,
    hard_stop_seconds,
    may_start,
    must_abort,
    partial_message,
    time_is_up,
    too_big_message,
)

MIB = 1024 * 1024
remaining_s = st.floats(min_value=-10, max_value=3600, allow_nan=False)
margin_s = st.floats(min_value=1, max_value=600, allow_nan=False)
sizes = st.integers(min_value=0, max_value=10 * 1024**3)
rates = st.none() | st.floats(min_value=1, max_value=1e10, allow_nan=False)
in_flight = st.integers(min_value=0, max_value=64)


def test_without_a_budget_everything_starts_and_nothing_aborts():
    assert may_start(None, 30, 10 * 1024**3, 1.0, 8)
    assert not must_abort(None, 30) and not time_is_up(None, 30)


def test_below_the_margin_nothing_starts():
    assert not may_start(30, 30, 1, None, 0)
    assert may_start(30.5, 30, 1, None, 0)


def test_a_measured_rate_keeps_back_what_would_outlive_the_hard_stop():
    # 100 s left, margin 30 (hard stop 10 s before the end): 90 s usable.
    assert may_start(100, 30, 90 * MIB, MIB, 0)
    assert not may_start(100, 30, 91 * MIB, MIB, 0)
    # Shared with two others in flight, the same file takes three times as long.
    assert may_start(100, 30, 30 * MIB, MIB, 2)
    assert not may_start(100, 30, 31 * MIB, MIB, 2)


def test_hard_stop_is_the_flush_or_half_the_margin():
    assert hard_stop_seconds(30) == FLUSH_SECONDS
    assert hard_stop_seconds(8) == 4
    assert must_abort(4, 8) and not must_abort(4.1, 8)


def test_rate_is_unknown_until_measured_long_enough():
    assert Rate(10 * MIB, MIN_RATE_SECONDS / 2).per_second() is None
    assert Rate(MIN_RATE_BYTES - 1, 10).per_second() is None
    assert Rate(10 * MIB, 10).per_second() == MIB


def test_a_file_no_run_can_move_is_named_with_its_size_and_the_knobs():
    budget = 885.0  # 900 s less the deadline margin
    assert fits_in_a_run(875 * MIB, MIB, budget, 30)
    assert not fits_in_a_run(876 * MIB, MIB, budget, 30)
    assert fits_in_a_run(10**12, None, budget, 30)  # unmeasured: no verdict
    message = too_big_message("ce.data.0.AllCESSeries", 5 * 1024**3, MIB, budget, 30)
    assert "ce.data.0.AllCESSeries (5368709120 bytes)" in message
    assert "1.00 MiB/s" in message and "5120 s" in message and "875 s" in message
    assert "timeout" in message and "memory" in message and "QUEST_CONTINUATION_MARGIN_SECONDS" in message


def test_partial_message():
    assert partial_message(140, 900, "abc (id)") == "partial: 140 of 900 files; continues in run abc (id)"


@given(remaining_s, margin_s, sizes, rates, in_flight)
def test_nothing_starts_once_time_is_up_or_at_the_hard_stop(remaining, margin, size, rate, flying):
    if time_is_up(remaining, margin) or must_abort(remaining, margin):
        assert not may_start(remaining, margin, size, rate, flying)


@given(remaining_s, margin_s, sizes, rates, in_flight)
def test_a_smaller_file_or_more_time_never_turns_a_start_into_a_refusal(
    remaining, margin, size, rate, flying
):
    if may_start(remaining, margin, size, rate, flying):
        assert may_start(remaining, margin, size // 2, rate, flying)
        assert may_start(remaining + 1, margin, size, rate, flying)
        assert flying == 0 or may_start(remaining, margin, size, rate, flying - 1)


@given(sizes, st.floats(min_value=1, max_value=1e10), st.floats(min_value=31, max_value=900), margin_s)
def test_a_file_that_starts_with_the_whole_budget_fits_in_a_run(size, rate, budget, margin):
    if may_start(budget, margin, size, rate, 0):
        assert fits_in_a_run(size, rate, budget, margin)


@given(st.integers(min_value=0, max_value=10**12), st.floats(min_value=0, max_value=1e6))
def test_rate_is_bytes_over_seconds_once_known(n, seconds):
    value = Rate(n, seconds).per_second()
    assert value is None or (seconds >= MIN_RATE_SECONDS and n >= MIN_RATE_BYTES and value == n / seconds)


def test_a_follow_up_starts_early_only_after_a_success_and_no_failure():
    from flows.core.continuation import worth_a_follow_up

    assert worth_a_follow_up([None]) and worth_a_follow_up([None, None])
    assert not worth_a_follow_up([])  # nothing moved yet: maybe a file that never fits
    assert not worth_a_follow_up([None, "pr.a: 503"])  # the run ends Failed
