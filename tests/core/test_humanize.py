"""Sizes and counts as run pages show them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flows.core.humanize import counted, human_bytes


@pytest.mark.parametrize(
    ("n", "shown"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (5 * 1024**2 + 1, "5.0 MiB"),
        (150 * 1024**2, "150 MiB"),
        (int(3.1 * 1024**3), "3.1 GiB"),
        (2 * 1024**6, "2048 PiB"),
    ],
)
def test_human_bytes(n, shown):
    assert human_bytes(n) == shown


@given(st.integers(min_value=0, max_value=1024**6))
def test_human_bytes_is_short_and_never_rounds_up_a_unit_boundary_wrongly(n):
    number, unit = human_bytes(n).split(" ")
    assert len(number) <= 5 and unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
    assert float(number) < 1024 or unit == "PiB"


def test_counted():
    assert counted(1, "file") == "1 file" and counted(1204, "file") == "1,204 files"
    assert counted(2, "survey", "surveys") == "2 surveys"


@pytest.mark.parametrize("n", [1024**2 - 1, 1024**3 - 1, 100 * 1024 - 1, 99.96 * 1024])
def test_rounding_never_shows_1024_of_a_unit_or_100_0(n):
    number, _ = human_bytes(n).split(" ")
    assert float(number) < 1024 and number != "100.0"
