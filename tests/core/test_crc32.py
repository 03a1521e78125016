"""The CRC-32 of a whole from its parts' equals zlib's over the joined bytes (S3 checks it)."""

from __future__ import annotations

import base64
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flows.core import crc32


@given(a=st.binary(max_size=2000), b=st.binary(max_size=2000))
def test_combine_equals_the_crc32_of_the_concatenation(a, b):
    assert crc32.combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)


@given(parts=st.lists(st.binary(max_size=300), max_size=8))
def test_folding_parts_in_order_gives_the_whole(parts):
    whole = 0
    for part in parts:
        whole = crc32.combine(whole, zlib.crc32(part), len(part))
    assert whole == zlib.crc32(b"".join(parts))


def test_combine_at_part_sizes_s3_sees():
    """Lengths far past one byte's worth of squarings: 5 MiB parts and one just under 5 GiB."""
    part = bytes(range(256)) * (5 * 1024 * 1024 // 256)
    assert crc32.combine(zlib.crc32(b"head"), zlib.crc32(part), len(part)) == zlib.crc32(b"head" + part)
    # x^(8n) for a huge n, checked against zeros, whose CRC-32 zlib can stream cheaply.
    n = 5 * 1024**3 - 1
    zeros = 0
    chunk = bytes(64 * 1024 * 1024)
    for _ in range(n // len(chunk)):
        zeros = zlib.crc32(chunk, zeros)
    zeros = zlib.crc32(bytes(n % len(chunk)), zeros)
    assert crc32.combine(0, zeros, n) == zeros  # crc("") combined with B is crc(B)
    prefix = zlib.crc32(b"x")
    streamed = zlib.crc32(b"x")
    for _ in range(n // len(chunk)):
        streamed = zlib.crc32(chunk, streamed)
    streamed = zlib.crc32(bytes(n % len(chunk)), streamed)
    assert crc32.combine(prefix, zeros, n) == streamed


def test_negative_lengths_are_refused():
    with pytest.raises(ValueError, match="cannot be negative"):
        crc32.combine(1, 2, -1)


def test_base64_is_the_big_endian_bytes_s3_shows():
    assert crc32.as_base64(0) == "AAAAAA=="
    assert base64.b64decode(crc32.as_base64(zlib.crc32(b"hello"))) == zlib.crc32(b"hello").to_bytes(4, "big")
    assert crc32.as_base64(0xFFFFFFFF) == "/////w=="
