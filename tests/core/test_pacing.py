"""The pacing rule keeps R as BLS counts requests, whatever the delays a client cannot see.

A simulation on a virtual clock drives the very `PacerBook` the in-process limiter uses: a greedy
client sends whenever the book gives a slot; each request reaches the site some time after it is
sent (hypothesis picks it: a busy server thread, a slow network) and is answered some time after
that. Counted where BLS counts, at arrival, no second ever holds more than R (ceil(R) for a
fractional R).
"""

from __future__ import annotations

import heapq
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flows.core.errors import PolitenessLimitError, QuestError
from flows.core.pacing import PacerBook, pacer_slots, pacing_for


def most_in_a_second(arrivals: list[float]) -> int:
    """Most arrivals in any half-open window of 1 s (as the loopback upstream's `peak_rate`)."""
    times, first, most = sorted(arrivals), 0, 0
    for last, when in enumerate(times):
        while when - times[first] >= 1.0:
            first += 1
        most = max(most, last - first + 1)
    return most


def simulate(
    per_second: float, delays: list[tuple[float, float]], slots: int | None = None
) -> tuple[list[float], float]:
    """(arrival times, when the last answer came) for requests sent as soon as the pacer allows."""
    book = PacerBook(pacing_for(per_second, slots))
    now, answers, arrivals = 0.0, [], []  # answers: a heap of answer times
    todo = list(delays)
    while todo:
        while answers and answers[0] <= now:
            book.answered(heapq.heappop(answers))
        wait = book.take(now)
        if wait == 0.0:
            reach, answer = todo.pop(0)
            arrivals.append(now + reach)
            heapq.heappush(answers, now + reach + answer)
        else:  # on to the next answer or the next freed slot, whichever comes first
            now = min(now + wait, answers[0]) if answers else now + wait
    now = max([now, *answers])
    return arrivals, now


delay = st.tuples(st.floats(0.0, 0.9), st.floats(1e-4, 0.6))


@settings(max_examples=300, deadline=None)
@given(
    per_second=st.sampled_from([0.5, 1.0, 1.5, 2.0, 3.0, 2.5, 4.0, 10.0]),
    delays=st.lists(delay, min_size=1, max_size=60),
)
def test_no_second_at_the_site_holds_more_than_r(per_second, delays):
    arrivals, _ = simulate(per_second, delays)
    assert len(arrivals) == len(delays)
    assert most_in_a_second(arrivals) <= math.ceil(per_second)


@settings(max_examples=200, deadline=None)
@given(
    per_second=st.sampled_from([0.5, 2.0, 3.5, 1000.0]),
    slots=st.integers(1, 6),
    delays=st.lists(delay, min_size=1, max_size=40),
)
def test_the_shared_limits_size_bounds_every_second_whatever_r_a_process_has(per_second, slots, delays):
    """Across processes K is the Prefect limit's size; a process with its own, higher R still
    sends at most K in any second (a slot is never free again within a second of its answer)."""
    arrivals, _ = simulate(per_second, delays, slots)
    assert most_in_a_second(arrivals) <= slots


def test_requests_granted_one_over_r_apart_can_reach_the_site_as_r_plus_one():
    """Why answers and not grants: spacing grants 1/R apart (a token bucket) is not enough."""
    grants = [0.0, 0.5, 1.0]  # R = 2: tokens exactly 1/R apart
    reach = [0.45, 0.0, 0.0]  # the first request line read late
    assert most_in_a_second([g + r for g, r in zip(grants, reach, strict=True)]) == 3
    arrivals, _ = simulate(2.0, [(0.45, 0.01), (0.0, 0.01), (0.0, 0.01)])
    assert most_in_a_second(arrivals) <= 2


def test_a_whole_r_starts_r_at_once_and_the_next_a_hold_after_an_answer():
    arrivals, _ = simulate(2.0, [(0.0, 0.1)] * 5)
    assert arrivals[:2] == [0.0, 0.0]
    assert arrivals[2] == pytest.approx(1.1) and arrivals[4] == pytest.approx(2.2)


@pytest.mark.parametrize(
    ("per_second", "slots", "hold"),
    [(2.0, 2, 1.0), (1.0, 1, 1.0), (0.5, 1, 2.0), (1.5, 2, 4 / 3), (2.5, 3, 1.2), (1000, 1000, 1.0)],
)
def test_pacing_for_r(per_second, slots, hold):
    pacing = pacing_for(per_second)
    assert (pacer_slots(per_second), pacing.slots, pacing.hold_seconds) == (slots, slots, pytest.approx(hold))
    assert pacing.per_second == pytest.approx(per_second)


def test_a_process_paced_by_a_shared_limit_keeps_its_size_and_its_own_r():
    assert pacing_for(1000.0, 4).hold_seconds == 1.0  # a higher R: still 4 a second at most
    assert pacing_for(2.0, 4).hold_seconds == 1.0  # a lower R: as its own pacer (which keeps its R)
    assert pacing_for(0.5, 1).hold_seconds == 2.0  # R below 1: each slot held 1 / R


@pytest.mark.parametrize(
    ("per_second", "slots"),
    [
        (2.0, 0),  # a pacer of no slots: nothing could ever be sent
        (2.0, -3),
        (2.0, 2.5),  # not a whole number of slots
        (2.0, "2"),
        (2.0, True),
        (0, None),  # no rate at all
        (-1.0, None),
        (math.nan, None),
        (math.inf, None),
        ("2", None),
    ],
)
def test_a_pacer_that_could_never_send_is_one_line_not_a_traceback(per_second, slots):
    with pytest.raises(PolitenessLimitError) as raised:
        pacing_for(per_second, slots)
    assert isinstance(raised.value, QuestError) and "\n" not in str(raised.value)


def test_a_huge_shared_limit_holds_each_slot_as_the_own_pacer_does():
    """The operator's choice (a limit raised to a huge size in the UI) is kept, but a slot's hold
    of K / R would keep the freeing thread, and the process, alive for days."""
    for slots in (10**6, 2**63 - 1, 10**400):
        pacing = pacing_for(2.0, slots)
        assert (pacing.slots, pacing.hold_seconds) == (slots, 1.0)
    assert pacing_for(1.5, 100).hold_seconds == pytest.approx(4 / 3)
    assert pacing_for(0.5, 100).hold_seconds == 2.0


def test_an_answer_without_a_held_slot_is_a_bug():
    with pytest.raises(ValueError):
        PacerBook(pacing_for(2.0)).answered(0.0)
