"""The pure continuation rules: when a mirror starts a transfer, aborts, and gives up on a file."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flows.core.continuation import (
    CHAIN_WINDOW,
    FLUSH_SECONDS,
    MAX_STALLED_FOLLOW_UPS,
    MIN_RATE_BYTES,
    MIN_RATE_SECONDS,
    NEXT_DAILY_INGEST,
    Chain,
    Rate,
    fits_in_a_run,
    hard_stop_seconds,
    may_start,
    must_abort,
    partial_message,
    stopped_message,
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


# --------------------------------------------------------------------------- the chain's bounds (issue 27)

T0 = datetime(2025, 5, 1, 6, 5, tzinfo=UTC)
LINK = timedelta(minutes=15)  # one invocation at most


def _walk(pendings: list[int], link_seconds: list[float]) -> int:
    """Run a chain through the rules: each link plans `pendings[i]` files and takes `link_seconds[i]`;
    returns how many links ran (the last one did not continue, or the figures ran out)."""
    now = T0
    chain, note = Chain.read(None, now)
    assert note is None
    for n, (pending, seconds) in enumerate(zip(pendings, link_seconds, strict=True), start=1):
        here = chain.planned(pending)
        if here.stop_reason(now) is not None:
            return n
        parameter = here.follow_up().parameter()  # what travels: JSON, read back by the follow-up
        now += timedelta(seconds=seconds)
        chain, note = Chain.read(parameter, now)
        assert note is None and chain.started == T0 and chain.link == n + 1
    return len(pendings)


def test_an_upstream_that_re_dates_what_is_moved_stops_the_chain_at_the_third_stalled_follow_up():
    # Every link plans the same 10 files again: links 2, 3 and 4 make no progress; 4 stops.
    assert MAX_STALLED_FOLLOW_UPS == 3
    assert _walk([10] * 1000, [60.0] * 1000) == 4
    # Growing plans (upstream adds while we move) count as no progress too.
    assert _walk([10, 11, 12, 13, 14, 15], [60.0] * 6) == 4


def test_a_chain_that_shrinks_its_plan_every_run_goes_on_and_a_mid_chain_update_costs_one_stall():
    assert _walk([900, 760, 620, 480, 340, 200, 60], [885.0] * 7) == 7  # ran out of figures, never stopped
    here = Chain(T0, link=4, stalls=0, pending=620).planned(920)  # BLS updated 300 files meanwhile
    assert here.stalls == 1 and here.stop_reason(T0) is None


def test_no_chain_outlives_its_day_whatever_its_progress():
    # A plan shrinking by one file a link (upstream re-dates all but one moved file) still ends.
    links = _walk(list(range(10**6, 0, -1)), [885.0] * 10**6)
    assert links == math.ceil(CHAIN_WINDOW.total_seconds() / 885) + 1  # the last one starts past the day
    late = Chain(T0, link=80).planned(5)
    reason = late.stop_reason(T0 + CHAIN_WINDOW)
    assert reason is not None and "the chain started 2025-05-01 06:05 UTC is past its day" in reason
    assert late.stop_reason(T0 + CHAIN_WINDOW - timedelta(seconds=1)) is None


def test_the_chain_start_travels_and_is_never_renewed_or_believed_in_the_future():
    now = T0 + timedelta(hours=3)
    chain, note = Chain.read({"started": T0.isoformat(), "link": 5, "stalls": 1, "pending": 7}, now)
    assert note is None and chain == Chain(T0, 5, 1, 7)
    assert chain.planned(3).follow_up().parameter()["started"] == T0.isoformat()
    future, note = Chain.read({"started": (now + timedelta(days=365)).isoformat(), "link": 2}, now)
    assert future.started == now and note is not None and "in the future" in note
    naive, _ = Chain.read({"started": "2025-05-01T06:05:00", "link": 2, "stalls": 0, "pending": None}, now)
    assert naive.started == T0


def test_an_empty_chain_parameter_is_a_first_run_without_a_note():
    # {} is the deployment form's default for `chain`: a run nobody continued.
    assert Chain.read({}, T0) == (Chain(T0), None)


@pytest.mark.parametrize(
    "value",
    [
        "2025-05-01",
        [1, 2],
        {"started": None},
        {"started": "yesterday", "link": "x", "stalls": -5, "pending": "many"},
        {"started": "9" * 10_000},
        {"started": T0.isoformat(), "link": True, "stalls": 10**30, "pending": -1},
        {"started": T0.isoformat(), "link": -3, "stalls": 2.5, "pending": 1e300},
    ],
)
def test_a_garbled_chain_parameter_is_a_note_and_a_chain_that_still_ends(value):
    now = T0 + timedelta(hours=1)
    chain, note = Chain.read(value, now)
    assert note is not None and "\n" not in note
    assert chain.started <= now and chain.link >= 1 and 0 <= chain.stalls <= MAX_STALLED_FOLLOW_UPS
    assert chain.pending is None or chain.pending >= 0
    # From here on only our own parameters travel: the chain ends within the bounds.
    for _ in range(MAX_STALLED_FOLLOW_UPS + 1):
        here = chain.planned(10)
        if here.stop_reason(now) is not None:
            break
        chain, note = Chain.read(here.follow_up().parameter(), now)
        assert note is None
    else:
        pytest.fail("a garbled chain went on past the stall bound")


def test_the_stop_is_one_line_that_hands_over_to_the_next_daily_ingest():
    reason = Chain(T0, 4, 2, 10).planned(10).stop_reason(T0)
    assert reason is not None
    message = stopped_message(reason, 4, 10)
    assert message.startswith("stopped: no net progress in 3 follow-up runs")
    assert message.endswith(f"; 4 of 10 files moved in this run; {NEXT_DAILY_INGEST}") and "\n" not in message
    taken = stopped_message(reason, 4, 10, "population/20250501T061500Z.json")
    assert "; population snapshot population/20250501T061500Z.json written; " in taken


pendings = st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=400)


@given(pendings, st.data())
def test_any_progress_figures_end_the_chain_within_the_bounds(figures, data):
    """Whatever the plans' sizes (upstream decides them) and however fast the links go, no run
    continues after the third stalled follow-up or after the chain's day, and a chain whose plans
    never shrink ends at its fourth run."""
    took_s = st.floats(min_value=0, max_value=1000)
    seconds = data.draw(st.lists(took_s, min_size=len(figures), max_size=len(figures)))
    now, chain = T0, Chain.read(None, T0)[0]
    stalls = 0
    for n, (pending, took) in enumerate(zip(figures, seconds, strict=True), start=1):
        here = chain.planned(pending)
        stalls += n > 1 and pending >= figures[n - 2]
        assert here.stalls == stalls
        stop = here.stop_reason(now)
        if stalls >= MAX_STALLED_FOLLOW_UPS or now - T0 >= CHAIN_WINDOW:
            assert stop is not None
            break
        assert stop is None
        now += timedelta(seconds=took)
        chain = Chain.read(here.follow_up().parameter(), now)[0]
    if all(b >= a for a, b in zip(figures, figures[1:], strict=False)):
        assert n <= MAX_STALLED_FOLLOW_UPS + 1
