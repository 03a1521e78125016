"""Every parser of upstream bytes takes linear time, whatever the bytes (issue 27, class 1).

A survey listing of 250 KiB of `<A HREF="...">` anchors without `</A>` took 11.5 s (the lazy
`.*?</A>` was retried from every anchor to the end of the page), and the parse held the GIL: the
lease renewal, the heartbeats and the cancel watcher starved and the lease lapsed. Here each
parser meets the worst shapes we could think of (`flows.devkit.parse_shapes`) and random repeated
fragments of hostile tokens, at a size N and 8N: a linear parser takes about 8x longer, a quadratic
one 64x. The bound (24x, plus 0.1 s for a noisy machine) is far from both; no figure is timed
tightly (the figures are in `benchmarks/parse_bench.py`).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from flows.core.discovery import parse_root_listing
from flows.core.errors import QuestError
from flows.core.listing import parse_listing
from flows.core.population import normalise_population
from flows.core.report_maths import read_bls
from flows.devkit.parse_shapes import (
    BLS_HEADER,
    BLS_ROW,
    BLS_SHAPES,
    LISTING_SHAPES,
    LISTING_URL,
    PAGE_HEAD,
    PAGE_TAIL,
    POPULATION_SHAPES,
    ROOT_URL,
)

GROWTH = 8  # the large body is 8x the small one
MAX_RATIO = 24  # linear: ~8x; quadratic: ~64x
SLACK_SECONDS = 0.1  # a scheduler hiccup on a shared machine
LISTING_N = 8 * 1024  # 64 KiB of `<A HREF="x">` without `</A>` took 2.3 s before the fix
BLS_N = 2 * 1024  # 16 kB of digits ending in `x` in one value took 11 s before the fix
POPULATION_N = 64 * 1024
PROPERTY = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))

Parse = Callable[[Any], object]


def listing(page: str) -> object:
    return parse_listing(page, LISTING_URL)


def root(page: str) -> object:
    return parse_root_listing(page, ROOT_URL)


def parse_seconds(parse: Parse, body: Any, repeat: int) -> float:
    """The fastest of `repeat` parses; a parser may refuse the body (one QuestError line), never crash."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        with contextlib.suppress(QuestError):
            parse(body)
        best = min(best, time.perf_counter() - start)
    return best


def assert_linear(parse: Parse, build: Callable[[int], Any], n: int) -> None:
    small = parse_seconds(parse, build(n), repeat=3)
    large = parse_seconds(parse, build(GROWTH * n), repeat=2)
    assert large <= MAX_RATIO * small + SLACK_SECONDS, (
        f"{GROWTH}x the bytes took {large / max(small, 1e-9):.0f}x the time ({small:.4f} s -> {large:.3f} s)"
    )


CASES = (
    [pytest.param(listing, build, LISTING_N, id=f"listing: {name}") for name, build in LISTING_SHAPES.items()]
    + [pytest.param(root, build, LISTING_N, id=f"root: {name}") for name, build in LISTING_SHAPES.items()]
    + [pytest.param(read_bls, build, BLS_N, id=f"bls: {name}") for name, build in BLS_SHAPES.items()]
    + [
        pytest.param(normalise_population, build, POPULATION_N, id=f"population: {name}")
        for name, build in POPULATION_SHAPES.items()
    ]
)


@pytest.mark.parametrize("parse, build, n", CASES)
def test_the_worst_shapes_parse_in_linear_time(parse, build, n):
    assert_linear(parse, build, n)


# --------------------------------------------------------------------------- random hostile fragments

LISTING_TOKENS = [
    "<A HREF=",
    "<a href = ",
    '"',
    '"/pub/time.series/pr/x"',
    ">",
    "x",
    "</A>",
    "</a",
    "<",
    "<pre",
    "</pre",
    "</html",
    "<br",
    "<br/>",
    " ",
    "\r\n",
    "\t",
    "12/12/2024",
    "1:00",
    "AM",
    "1504795",
    "&lt;dir&gt;",
    "<dir>",
    "&amp;",
    "[To Parent Directory]",
    "/",
    "1",
]
FRAMES: dict[str, Callable[[str], str]] = {
    "a listing": lambda rows: PAGE_HEAD + rows + PAGE_TAIL,
    "a cut listing": lambda rows: PAGE_HEAD + rows,
    "no listing": lambda rows: rows,
}


def _repeated(fragment: Any, n: int) -> Any:
    return fragment * (n // len(fragment) + 1)


def _shapes(tokens: list[Any], join: Callable[[list[Any]], Any]) -> st.SearchStrategy[tuple[Any, Any, Any]]:
    """(prefix, fragment, suffix): the body is the prefix, the fragment repeated, then the suffix (a
    terminator a pattern waits for, or a character that makes a long match fail at the very end)."""
    part = st.lists(st.sampled_from(tokens), max_size=4).map(join)
    return st.tuples(part, st.lists(st.sampled_from(tokens), min_size=1, max_size=6).map(join), part)


@PROPERTY
@given(
    shape=_shapes(LISTING_TOKENS, "".join),
    frame=st.sampled_from(sorted(FRAMES)),
    parse=st.sampled_from([listing, root]),
)
@example(shape=("", '<A HREF="x">x', ""), frame="a listing", parse=listing)
@example(shape=("", "<", ""), frame="no listing", parse=root)
def test_any_repeated_fragment_of_listing_markup_parses_in_linear_time(shape, frame, parse):
    prefix, fragment, suffix = shape
    assert_linear(parse, lambda n: FRAMES[frame](prefix + _repeated(fragment, n) + suffix), LISTING_N)


BLS_TOKENS = [b"1", b"9", b".", b"e", b"E", b"+", b"-", b" ", b"\v", b"\t", b"\r", b"\n", b"\r\n"]
BLS_TOKENS += [b"\x00", b"\x80", b"\xc3\xa9", b"x", b"P", b"PRS1", b"Q01", b"2019", b"nan", b"inf", b"(NA)"]
BLS_PLACES: dict[str, Callable[[bytes], bytes]] = {
    "lines": lambda text: BLS_HEADER + BLS_ROW + text,
    "a value": lambda text: BLS_HEADER + BLS_ROW + b"PRS1\t2019\tQ01\t" + text + b"\t\r\n",
    "a series id": lambda text: BLS_HEADER + BLS_ROW + b"P" + text + b"\t2019\tQ01\t1\t\r\n",
    "a year": lambda text: BLS_HEADER + BLS_ROW + b"PRS1\t" + text + b"\tQ01\t1\t\r\n",
}


@PROPERTY
@given(shape=_shapes(BLS_TOKENS, b"".join), place=st.sampled_from(sorted(BLS_PLACES)))
@example(shape=(b"", b"1", b"x"), place="a value")
def test_any_repeated_fragment_in_a_bls_file_parses_in_linear_time(shape, place):
    prefix, fragment, suffix = shape
    assert_linear(read_bls, lambda n: BLS_PLACES[place](prefix + _repeated(fragment, n) + suffix), BLS_N)


POPULATION_TOKENS = [b"[", b"]", b"{", b"}", b'"', b"\\", b"\\u0041", b"\\ud800", b"1", b".", b"e", b"-"]
POPULATION_TOKENS += [b",", b":", b" ", b'"data"', b'"Year"', b'"Population"', b"null", b"NaN", b"2019"]


@PROPERTY
@given(shape=_shapes(POPULATION_TOKENS, b"".join))
def test_any_repeated_fragment_in_a_population_body_parses_in_linear_time(shape):
    prefix, fragment, suffix = shape
    body = lambda n: b'{"data": ' + prefix + _repeated(fragment, n) + suffix  # noqa: E731
    assert_linear(normalise_population, body, POPULATION_N)


# --------------------------------------------------------------------------- no parse starves a thread


class LongestWait:
    """The longest a thread that wants the GIL every millisecond waited (a lease renewal thread)."""

    def __enter__(self) -> LongestWait:
        self.longest, self._stop = 0.0, threading.Event()
        self._thread = threading.Thread(target=self._tick, daemon=True)
        self._thread.start()
        return self

    def _tick(self) -> None:
        last = time.perf_counter()
        while not self._stop.wait(0.001):
            now = time.perf_counter()
            self.longest, last = max(self.longest, now - last), now

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# The shortest renewal interval a lease can have is ttl/3 with QUEST_LEASE_SECONDS=5: 1.7 s.
# Before the fix each of these parses held the GIL for 10 s or more in one regex call.
STARVING = [
    pytest.param(
        listing, LISTING_SHAPES["anchors without </A>"](256 * 1024), id="listing: anchors without </A>"
    ),
    pytest.param(root, LISTING_SHAPES["no <pre>, only <"](128 * 1024), id="root: no <pre>, only <"),
    pytest.param(
        read_bls, BLS_SHAPES["a value of digits ending in x"](24 * 1024), id="bls: digits ending in x"
    ),
]


@pytest.mark.parametrize("parse, body", STARVING)
def test_a_parse_never_holds_the_gil_for_a_lease_renewal_interval(parse, body):
    with LongestWait() as waited:
        parse_seconds(parse, body, repeat=1)
    assert waited.longest < 1.0, f"a thread waited {waited.longest:.1f} s for the GIL during the parse"


def test_values_the_float_parser_refuses_cost_no_parse_each(monkeypatch):
    """Values that look numeric but are not (`5e`) once cost a pandas parse each, found by halving."""
    calls = []
    read_csv = pd.read_csv

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return read_csv(*args, **kwargs)

    monkeypatch.setattr(pd, "read_csv", counted)
    data = BLS_SHAPES["many distinct values the float parser refuses"](20 * 1000)
    parsed = read_bls(data)
    assert parsed.dropped_reasons == {"bad value": 1000}
    assert len(calls) <= 3  # the typed parse, the all-text parse, one parse of the candidate numbers
