"""Content-Encoding decoded in bounded steps: every coding stack round-trips, no piece is larger than
the step whatever the ratio, and anything we cannot bound or read is refused with one line."""

from __future__ import annotations

import gzip
import tracemalloc
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flows.core.content_coding import content_codings, decode_body
from flows.core.errors import IncompleteBody, QuestError, UndecodableBody

WHERE = "GET http://upstream.invalid/x"


def encode(data: bytes, coding: str) -> bytes:
    if coding in ("gzip", "x-gzip"):
        return gzip.compress(data, 6)
    if coding == "deflate":
        return zlib.compress(data)
    assert coding == "raw-deflate"  # served as `deflate` by servers that skip the zlib wrapper
    packer = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


def header_name(coding: str) -> str:
    return "deflate" if coding == "raw-deflate" else coding


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@settings(max_examples=150, deadline=None)
@given(
    data=st.binary(max_size=20_000)
    | st.builds(lambda n, b: b * n, st.integers(0, 50_000), st.binary(min_size=1, max_size=3)),
    stack=st.lists(st.sampled_from(["gzip", "x-gzip", "deflate", "raw-deflate"]), min_size=1, max_size=3),
    cuts=st.lists(st.integers(0, 10**6), max_size=8),
    step=st.sampled_from([1, 7, 1024, 64 * 1024]),
)
def test_any_stack_of_codings_round_trips_in_pieces_of_at_most_step(data, stack, cuts, step):
    body = data
    for coding in stack:  # applied first to last, as Content-Encoding lists them
        body = encode(body, coding)
    codings = content_codings([", ".join(header_name(c) for c in stack)], WHERE)
    pieces = list(decode_body(split(body, cuts), codings, WHERE, step))
    assert b"".join(pieces) == data
    assert all(0 < len(p) <= step for p in pieces)


def test_gzip_members_follow_each_other():
    body = gzip.compress(b"first ") + gzip.compress(b"second")
    assert b"".join(decode_body([body], ("gzip",), WHERE)) == b"first second"


@pytest.mark.parametrize(
    ("values", "codings"),
    [
        ([], ()),
        (["identity"], ()),
        (["GZip"], ("gzip",)),
        (["x-gzip"], ("gzip",)),
        (["gzip, deflate"], ("gzip", "deflate")),
        (["gzip", " gzip ,identity"], ("gzip", "gzip")),
        ([", ,"], ()),
    ],
)
def test_content_codings_read_the_header_values_in_order(values, codings):
    assert content_codings(values, WHERE) == codings


@pytest.mark.parametrize("value", ["br", "zstd", "compress", "gzip, br", "x\u202e\n<a>"])
def test_a_coding_we_cannot_bound_is_refused_with_one_line(value):
    with pytest.raises(UndecodableBody) as info:
        content_codings([value], WHERE)
    message = str(info.value)
    assert isinstance(info.value, QuestError) and WHERE in message and "\n" not in message


@pytest.mark.parametrize("coding", ["gzip", "deflate", "raw-deflate"])
def test_a_truncated_body_is_incomplete(coding):
    body = encode(b"some listing text " * 500, coding)
    with pytest.raises(IncompleteBody, match="stops before its end"):
        list(decode_body([body[: len(body) // 2]], (header_name(coding),), WHERE))


@pytest.mark.parametrize(
    ("body", "codings"),
    [
        (b"<html>not gzip at all</html>", ("gzip",)),
        (gzip.compress(b"ok", mtime=0) + b"trailing junk", ("gzip",)),
        (zlib.compress(b"ok") + b"junk", ("deflate",)),
        (b"\x78\x9c" + b"\xff" * 40, ("deflate",)),
    ],
)
def test_bytes_that_are_not_the_coding_are_refused(body, codings):
    with pytest.raises(UndecodableBody) as info:
        list(decode_body([body], codings, WHERE))
    assert "\n" not in str(info.value)


def test_an_empty_body_with_a_coding_is_empty():
    assert list(decode_body([], ("gzip",), WHERE)) == []
    assert list(decode_body([b""], ("deflate",), WHERE)) == []


@pytest.mark.parametrize("stack", [("gzip",), ("deflate",), ("gzip", "gzip"), ("deflate", "gzip", "gzip")])
def test_a_bomb_is_decoded_lazily_in_bounded_memory(stack):
    """Reading the first MiB of a 64 MiB bomb (or a stacked one) costs a few steps, not the bomb."""
    bomb = b"\0" * (64 * 1024 * 1024)
    for coding in stack:
        bomb = encode(bomb, coding)
    assert len(bomb) < 80 * 1024
    tracemalloc.start()
    try:
        pieces = decode_body([bomb[i : i + 65536] for i in range(0, len(bomb), 65536)], stack, WHERE)
        taken = 0
        for piece in pieces:
            taken += len(piece)
            if taken > 1024 * 1024:
                break
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert taken > 1024 * 1024
    assert peak < 4 * 1024 * 1024, peak
