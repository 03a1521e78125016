"""Both store backends keep the same promises under the same tests."""

from __future__ import annotations

import hashlib

import pytest

from flows.core.errors import SizeMismatch, StoreError
from flows.core.objects import trusted_integrity
from flows.io.store import LocalStore, S3Store
from flows.io.store.s3 import _rechunk

MIB = 1024 * 1024


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    request.getfixturevalue("s3_bucket")
    import boto3

    client = boto3.client("s3", region_name="us-east-1")
    return S3Store("quest-test", "root", client=client, multipart_threshold=5 * MIB, part_size=5 * MIB)


def test_put_bytes_roundtrip_with_metadata(store):
    obj = store.put_bytes("bls/pr/a.txt", b"hello", {"Source-URL": "http://x/a"}, "text/plain")
    assert obj.size == 5
    head = store.head("bls/pr/a.txt")
    assert head.size == 5
    assert head.metadata["source-url"] == "http://x/a"
    assert head.metadata["sha256"] == hashlib.sha256(b"hello").hexdigest()
    assert store.read_bytes("bls/pr/a.txt") == b"hello"
    with store.open_read("bls/pr/a.txt") as fh:
        assert fh.read() == b"hello"


def test_list_and_stat_prefix(store):
    store.put_bytes("bls/pr/a", b"1")
    store.put_bytes("bls/pr/b", b"22")
    store.put_bytes("bls/cu/c", b"333")
    store.put_bytes("population/x.json", b"{}")
    assert store.list_keys("bls/pr/") == ["bls/pr/a", "bls/pr/b"]
    assert store.list_keys() == ["bls/cu/c", "bls/pr/a", "bls/pr/b", "population/x.json"]
    stats = store.stat_prefix("bls/")
    assert {k: v.size for k, v in stats.items()} == {"bls/cu/c": 3, "bls/pr/a": 1, "bls/pr/b": 2}


def test_head_missing_and_delete(store):
    assert store.head("bls/pr/none") is None
    store.put_bytes("bls/pr/a", b"1")
    store.delete("bls/pr/a")
    assert store.head("bls/pr/a") is None
    assert store.list_keys("bls/") == []
    with pytest.raises(StoreError):
        store.read_bytes("bls/pr/a")


@pytest.mark.parametrize("size", [0, 1000, 12 * MIB + 7])
def test_put_stream_small_and_multipart(store, size):
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    chunks = [data[i : i + 65536] for i in range(0, len(data), 65536)]
    obj = store.put_stream("bls/pr/big", iter(chunks), {"upstream-size": str(size)}, expected_size=size)
    assert obj.size == size
    assert store.read_bytes("bls/pr/big") == data
    head = store.head("bls/pr/big")
    if isinstance(store, S3Store) and size > 5 * MIB:  # multipart: S3's CRC-32 vouches for it
        assert head.metadata["crc32-size"] == str(size) and "sha256" not in head.metadata
        assert trusted_integrity(head) is not None
    else:
        assert head.metadata["sha256"] == hashlib.sha256(data).hexdigest()
    assert head.metadata["upstream-size"] == str(size)


@pytest.mark.parametrize("size", [1000, 12 * MIB])
def test_short_stream_never_replaces_the_good_object(store, size):
    store.put_bytes("bls/pr/f", b"old contents")
    data = b"n" * size
    with pytest.raises(SizeMismatch):
        store.put_stream("bls/pr/f", iter([data]), expected_size=size + 1)
    assert store.read_bytes("bls/pr/f") == b"old contents"
    if isinstance(store, S3Store):  # the short upload is aborted, never completed
        assert store.client.list_multipart_uploads(Bucket="quest-test").get("Uploads", []) == []


def test_failing_stream_never_replaces_the_good_object(store):
    store.put_bytes("bls/pr/f", b"old contents")

    def broken():
        yield b"a" * (6 * MIB)
        yield b"b" * (6 * MIB)
        raise ConnectionError("peer closed")

    with pytest.raises(ConnectionError):
        store.put_stream("bls/pr/f", broken())
    assert store.read_bytes("bls/pr/f") == b"old contents"
    assert store.list_keys() == ["bls/pr/f"]


@pytest.mark.parametrize(
    "key", ["", "/abs", "a/../b", "a//b", "a/./b", "bad\nkey", ".quest-tmp/x", "bls/pr/.quest-lease.json"]
)
def test_rejects_bad_keys(store, key):
    with pytest.raises(StoreError):
        store.put_bytes(key, b"x")


def test_s3_failed_multipart_is_aborted(s3_bucket, s3_client):
    store = S3Store(s3_bucket, client=s3_client, multipart_threshold=5 * MIB, part_size=5 * MIB)

    def broken():
        yield b"a" * (11 * MIB)
        raise ConnectionError("peer closed")

    with pytest.raises(ConnectionError):
        store.put_stream("bls/pr/f", broken())
    assert s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


@pytest.mark.parametrize(
    "sizes, piece",
    [([], 4), ([0, 0], 4), ([4, 4], 4), ([1, 2, 3, 4, 5, 6], 4), ([10], 3), ([3, 0, 9, 1], 5), ([7], 8)],
)
def test_rechunk_yields_exact_pieces_and_every_byte(sizes, piece):
    data = bytes(range(256)) * 2
    chunks, start = [], 0
    for n in sizes:
        chunks.append(data[start : start + n])
        start += n
    pieces = list(_rechunk(iter(chunks), piece))
    assert b"".join(pieces) == b"".join(chunks)
    assert all(len(p) == piece for p in pieces[:-1])
    assert all(p for p in pieces)  # never an empty piece: it would become an empty part
