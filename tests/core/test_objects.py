"""When a stored object's integrity metadata can be believed without reading its bytes."""

from __future__ import annotations

import pytest

from flows.core.objects import (
    META_CRC32_SIZE,
    META_SHA256,
    META_SHA256_SIZE,
    StoredObject,
    trusted_integrity,
    trusted_sha256,
)

SHA = "0123456789abcdef" * 4


def obj(size: int, **meta: str) -> StoredObject:
    return StoredObject("bls/pr/x", size, {k.replace("_", "-"): v for k, v in meta.items()})


def test_a_sha256_recorded_with_its_byte_count_is_believed():
    assert trusted_sha256(obj(10, sha256=SHA, sha256_size="10")) == SHA
    assert META_SHA256 == "sha256" and META_SHA256_SIZE == "sha256-size"


@pytest.mark.parametrize(
    "meta",
    [
        {},  # none at all
        {"sha256": SHA},  # from before sha256-size existed
        {"sha256": SHA, "sha256_size": "11"},  # covers other bytes
        {"sha256": SHA.upper(), "sha256_size": "10"},
        {"sha256": SHA[:-1], "sha256_size": "10"},
        {"sha256": "", "sha256_size": "10"},
    ],
)
def test_anything_else_is_not(meta):
    assert trusted_sha256(obj(10, **meta)) is None


def test_integrity_is_our_sha256_or_s3s_crc32_of_exactly_the_stored_size():
    assert trusted_integrity(obj(10, sha256=SHA, sha256_size="10")) == f"sha256 {SHA}"
    assert trusted_integrity(obj(10, crc32_size="10")) == "S3 full-object CRC-32 of 10 bytes"
    # The sha256 wins when both are there and it holds; a broken sha256 falls back to the CRC-32.
    assert trusted_integrity(obj(10, sha256=SHA, sha256_size="10", crc32_size="10")) == f"sha256 {SHA}"
    assert trusted_integrity(obj(10, sha256=SHA, sha256_size="9", crc32_size="10")) is not None
    assert META_CRC32_SIZE == "crc32-size"


@pytest.mark.parametrize("recorded", ["9", "11", "", " 10", "10.0", "0x0a", "١٠"])
def test_a_crc32_size_naming_other_bytes_is_not_believed(recorded):
    assert trusted_integrity(obj(10, crc32_size=recorded)) is None
