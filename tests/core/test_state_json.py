"""The one reader of our JSON state objects: any bytes give an object or one-line `GarbledState`."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flows.core.errors import GarbledState, StoreError
from flows.core.state_json import read_object

CAP = 64 * 1024


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nests deeper"),
        (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "nests deeper"),
        (b'{"a": "\xff"}', "not UTF-8"),
        (b'{"a": 1, "a": 2}', "repeats a key"),
        (b'{"a": NaN}', "NaN"),
        (b'{"a": -Infinity}', "-Infinity"),
        (b'{"a": 1' + b"0" * 5000 + b"}", "not JSON"),
        (b'{"a": "' + b"x" * CAP + b'"}', "over the"),
        (b"[]", "not an object"),
        (b"", "not JSON"),
    ],
)
def test_what_is_not_ours_is_garbled_in_one_line(data, why):
    with pytest.raises(GarbledState, match=why) as info:
        read_object(data, CAP if why == "over the" else 1 << 24, "lease record")
    assert isinstance(info.value, StoreError) and "\n" not in str(info.value)
    assert str(info.value).startswith("lease record ")


def test_an_object_of_ours_reads_as_itself():
    doc = {"format": 1, "objects": {"k": {"size": 3, "metadata": {"a": "b"}}}, "expires": 1.5}
    assert read_object(json.dumps(doc).encode(), CAP) == doc
    assert read_object(json.dumps(doc), CAP) == doc


@given(st.binary(max_size=4096))
def test_any_bytes_give_an_object_or_garbled(data):
    try:
        assert isinstance(read_object(data, CAP), dict)
    except GarbledState as exc:
        assert "\n" not in str(exc)


def test_the_deepest_nesting_is_refused_in_time_that_does_not_grow_with_it():
    """The parser stops at its recursion limit: 4x the nesting costs no more (generous bound)."""
    took = []
    for depth in (250_000, 1_000_000):
        data = b"[" * depth + b"]" * depth
        started = time.perf_counter()
        with pytest.raises(GarbledState):
            read_object(data, 1 << 24)
        took.append(time.perf_counter() - started)
    assert took[1] < max(0.5, 20 * took[0])
