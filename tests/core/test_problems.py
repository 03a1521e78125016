"""Per-row upstream problems summarised into one bounded log line."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from flows.core.problems import FIRST_FEW, MAX_PROBLEM_CHARS, summarise


def test_none_few_and_many():
    assert summarise([]) == ""
    assert summarise(["a"]) == "1 row: a"
    assert summarise(["a", "b"]) == "2 rows: a; b"
    many = summarise(f"p{i}" for i in range(50_000))
    assert many == "50,000 rows, the first 5: p0; p1; p2; p3; p4; ... 49,995 more"


def test_each_problem_is_one_clipped_line():
    line = summarise(["x\r\ny" + "z" * 10_000])
    assert "\n" not in line and "\r" not in line and len(line) <= MAX_PROBLEM_CHARS + 20


@given(st.lists(st.text(max_size=2_000), max_size=200))
def test_the_line_is_bounded_whatever_the_rows(problems):
    line = summarise(problems)
    assert len(line) <= FIRST_FEW * (MAX_PROBLEM_CHARS + 2) + 80
    assert (line == "") == (not problems)
    assert not any(c in line for c in "\r\n")
