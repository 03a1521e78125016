"""Issue 9: an object is published with its integrity metadata in one step or not at all.

Real boto3 against moto for S3; failures are injected with botocore's own event hooks, and the
local store's two renames are interleaved by wrapping `os.replace`. An S3 multipart object is
vouched for by the full-object CRC-32 S3 keeps (issue 12), not by a sha256: moto computes that
CRC-32 itself, so the tests compare it with the bytes.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import tempfile
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import EndpointConnectionError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.core import crc32
from flows.core.errors import StoreError
from flows.core.objects import StoredObject, trusted_integrity, trusted_sha256
from flows.io.store import LocalStore, S3Store

MIB = 1024 * 1024
BUCKET = "quest-test"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def s3_store(client, **kwargs) -> S3Store:
    return S3Store(BUCKET, "root", client=client, multipart_threshold=5 * MIB, part_size=5 * MIB, **kwargs)


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    request.getfixturevalue("s3_bucket")
    return s3_store(request.getfixturevalue("s3_client"))


def s3_crc32(client, key: str) -> str | None:
    """The full-object CRC-32 S3 keeps for `key` (moto computes it from the bytes it assembled)."""
    head = client.head_object(Bucket=BUCKET, Key=f"root/{key}", ChecksumMode="ENABLED")
    return head.get("ChecksumCRC32")


def assert_metadata_matches_bytes(store, key: str) -> None:
    """The invariant: a stored object's integrity metadata is absent or describes its bytes."""
    head = store.head(key)
    data = store.read_bytes(key)
    recorded = head.metadata.get("sha256")
    assert recorded in (None, sha(data)), f"{key}: sha256 metadata {recorded} describes other bytes"
    if recorded is not None:
        assert head.metadata.get("sha256-size") == str(len(data))
    if "crc32-size" in head.metadata:
        assert isinstance(store, S3Store), "only an S3 multipart upload records crc32-size"
        assert head.metadata["crc32-size"] == str(len(data))
        assert s3_crc32(store.client, key) == crc32.as_base64(zlib.crc32(data))


def serialise_moto_writes(client) -> None:
    """One PutObject/CompleteMultipartUpload at a time, as S3 applies each atomically. moto's
    in-process backend reads the key back after writing it; two writes of one key at once can read
    a disposed buffer."""
    lock = threading.Lock()

    def acquire(**kwargs):
        lock.acquire()

    def release(**kwargs):
        lock.release()

    for operation in ("PutObject", "CompleteMultipartUpload"):
        client.meta.events.register(f"before-call.s3.{operation}", acquire)
        client.meta.events.register(f"after-call.s3.{operation}", release)
        client.meta.events.register(f"after-call-error.s3.{operation}", release)


def bucket_keys(client) -> list[str]:
    return [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET).get("Contents", [])]


# --------------------------------------------------------------------------- publish in one step


def test_published_objects_carry_integrity_metadata_that_describes_their_bytes(store):
    for key, data in (("bls/pr/small", b"abc"), ("bls/pr/big", b"m" * (6 * MIB + 3))):
        obj = store.put_stream(key, iter([data]), {"upstream-size": str(len(data))}, expected_size=len(data))
        head = store.head(key)
        assert head.metadata == obj.metadata
        assert_metadata_matches_bytes(store, key)
        assert trusted_integrity(head) is not None
        multipart = isinstance(store, S3Store) and len(data) > 5 * MIB
        if multipart:  # vouched for by S3's CRC-32, checked at completion; no sha256 is known in time
            assert "sha256" not in head.metadata and head.metadata["crc32-size"] == str(len(data))
            assert trusted_integrity(head) == f"S3 full-object CRC-32 of {len(data)} bytes"
        else:
            assert head.metadata["sha256"] == sha(data) and head.metadata["sha256-size"] == str(len(data))
            assert trusted_integrity(head) == f"sha256 {sha(data)}"


def test_s3_single_puts_carry_our_sha256_as_the_checksum_s3_verifies(s3_bucket, s3_client):
    """A single PutObject sends our sha256 as `x-amz-checksum-sha256`: S3 answers BadDigest when the
    bytes it got differ (AWS's PutObject reference), and botocore then computes no CRC32 of its
    own. moto neither checks nor keeps the checksum, so the request is what is asserted here."""
    sent: list[dict[str, str]] = []

    def capture(request, **kwargs):
        sent.append({k.lower(): v for k, v in request.headers.items()})

    s3_client.meta.events.register("before-sign.s3.PutObject", capture)
    store = s3_store(s3_client)
    store.put_bytes("bls/pr/a", b"good contents")
    store.put_stream("bls/pr/b", iter([b"new ", b"contents"]), expected_size=12)
    s3_client.meta.events.unregister("before-sign.s3.PutObject", capture)
    assert [base64.b64decode(h["x-amz-checksum-sha256"]).hex() for h in sent] == [
        sha(b"good contents"),
        sha(b"new contents"),
    ]
    assert not any("x-amz-checksum-crc32" in h for h in sent)


@pytest.mark.parametrize("had_old", [True, False])
def test_s3_failure_at_completion_leaves_the_final_key_untouched(s3_bucket, s3_client, had_old):
    store = s3_store(s3_client)
    if had_old:
        store.put_bytes("bls/pr/f", b"old contents")

    def broken_completion(**kwargs):
        raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")

    s3_client.meta.events.register("before-call.s3.CompleteMultipartUpload", broken_completion)
    data = b"n" * (6 * MIB)
    with pytest.raises(StoreError, match="cannot reach the S3 endpoint"):
        store.put_stream("bls/pr/f", iter([data]), expected_size=len(data))
    s3_client.meta.events.unregister("before-call.s3.CompleteMultipartUpload", broken_completion)

    if had_old:
        assert store.read_bytes("bls/pr/f") == b"old contents"
        assert trusted_sha256(store.head("bls/pr/f")) == sha(b"old contents")
    else:
        assert store.head("bls/pr/f") is None  # the parts never showed under the key
    assert bucket_keys(s3_client) == (["root/bls/pr/f"] if had_old else [])
    assert s3_client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []  # aborted


def test_s3_multipart_gives_its_metadata_first_and_its_full_crc32_at_completion(s3_bucket, s3_client):
    """No copy: the upload names the final key, carries the metadata from its first request, and
    the completion carries the CRC-32 of the whole object, which S3 checks before showing it."""
    store = s3_store(s3_client)
    calls: list[tuple[str, dict]] = []

    def record(params, **kwargs):
        if params.get("Key") == "root/bls/pr/f":
            calls.append((kwargs["model"].name, dict(params)))

    s3_client.meta.events.register("provide-client-params.s3.*", record)
    data = bytes(range(251)) * (11 * MIB // 251)  # three parts, the last one short
    store.put_stream("bls/pr/f", iter([data]), {"upstream-size": str(len(data))}, expected_size=len(data))
    s3_client.meta.events.unregister("provide-client-params.s3.*", record)
    names = [name for name, _ in calls if name != "HeadObject"]
    assert names == [
        "CreateMultipartUpload",
        "UploadPart",
        "UploadPart",
        "UploadPart",
        "CompleteMultipartUpload",
    ]
    create, *parts, complete = (params for name, params in calls if name != "HeadObject")
    assert create["Metadata"] == {"upstream-size": str(len(data)), "crc32-size": str(len(data))}
    assert (create["ChecksumAlgorithm"], create["ChecksumType"]) == ("CRC32", "FULL_OBJECT")
    for part in parts:
        assert part["ChecksumCRC32"] == crc32.as_base64(zlib.crc32(part["Body"]))
    whole = crc32.as_base64(zlib.crc32(data))
    assert (complete["ChecksumCRC32"], complete["ChecksumType"]) == (whole, "FULL_OBJECT")
    assert s3_crc32(s3_client, "bls/pr/f") == whole  # what S3 (moto) computed from the bytes
    assert store.read_bytes("bls/pr/f") == data
    assert bucket_keys(s3_client) == ["root/bls/pr/f"]


def test_local_crash_between_the_two_renames_is_detected_not_trusted(tmp_path, monkeypatch):
    store = LocalStore(tmp_path)
    store.put_bytes("bls/pr/f", b"old contents")
    real_replace = os.replace

    def crash_on_sidecar(src, dst):
        if ".quest-meta" in str(dst):
            raise KeyboardInterrupt  # the process dies after the data rename
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_sidecar)
    with pytest.raises(KeyboardInterrupt):
        store.put_bytes("bls/pr/f", b"new contents!")
    monkeypatch.undo()
    head = store.head("bls/pr/f")
    assert store.read_bytes("bls/pr/f") == b"new contents!"
    assert head.metadata == {} and trusted_sha256(head) is None  # re-transferred by the next sync


def test_local_sidecar_of_other_bytes_or_old_format_is_not_believed(tmp_path):
    store = LocalStore(tmp_path)
    store.put_bytes("bls/pr/f", b"contents", {"upstream-size": "8"})
    assert trusted_sha256(store.head("bls/pr/f")) == sha(b"contents")
    (tmp_path / "bls/pr/f").write_bytes(b"edited!!")  # same size, rewritten in place
    assert store.head("bls/pr/f").metadata == {}
    store.put_bytes("bls/pr/g", b"contents")
    legacy = {"sha256": sha(b"contents"), "upstream-size": "8"}  # the sidecar format before issue 9
    (tmp_path / ".quest-meta/bls/pr/g.json").write_text(json.dumps(legacy))
    assert store.head("bls/pr/g").metadata == {}


def test_s3_object_from_before_sha256_size_is_not_trusted(s3_bucket, s3_client):
    s3_client.put_object(Bucket=BUCKET, Key="root/bls/pr/f", Body=b"abc", Metadata={"sha256": sha(b"abc")})
    head = s3_store(s3_client).head("bls/pr/f")
    assert head.metadata["sha256"] == sha(b"abc") and trusted_sha256(head) is None


def test_s3_object_of_another_writer_is_not_trusted(s3_bucket, s3_client):
    """crc32-size is believed only with the size it names: another tool's object is re-fetched."""
    s3_client.put_object(Bucket=BUCKET, Key="root/bls/pr/f", Body=b"abcd", Metadata={"crc32-size": "3"})
    assert trusted_integrity(s3_store(s3_client).head("bls/pr/f")) is None


def test_trusted_sha256_rules():
    good = {"sha256": sha(b"abc"), "sha256-size": "3"}
    assert trusted_sha256(StoredObject("k", 3, good)) == sha(b"abc")
    assert trusted_sha256(StoredObject("k", 4, good)) is None
    assert trusted_sha256(StoredObject("k", 3, {**good, "sha256": "nope"})) is None
    assert trusted_sha256(StoredObject("k", 3, {"sha256": sha(b"abc")})) is None


# --------------------------------------------------------------------------- concurrent writers


def test_s3_concurrent_multipart_writers_of_one_key_leave_matching_metadata(s3_bucket, s3_client):
    """Both writers have uploaded every part before either completes; the first to arrive
    completes last. Metadata set apart from the bytes (e.g. stamped after) fails this."""
    store = s3_store(s3_client)
    reader = s3_store(s3_client)
    serialise_moto_writes(s3_client)
    for round_ in range(3):
        barrier = threading.Barrier(2, timeout=10)
        arrived: list[str] = []

        def complete_in_bad_order(params, barrier=barrier, arrived=arrived, **kwargs):
            arrived.append(params["UploadId"])
            barrier.wait()
            if arrived[0] == params["UploadId"]:
                time.sleep(0.3)

        s3_client.meta.events.register(
            "before-parameter-build.s3.CompleteMultipartUpload", complete_in_bad_order
        )
        bodies = [bytes([65 + round_ * 2 + i]) * (5 * MIB + 100 * i + 1) for i in range(2)]
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda b: store.put_stream("bls/pr/f", iter([b]), expected_size=len(b)), bodies))
        s3_client.meta.events.unregister(
            "before-parameter-build.s3.CompleteMultipartUpload", complete_in_bad_order
        )
        assert reader.read_bytes("bls/pr/f") in bodies
        assert_metadata_matches_bytes(reader, "bls/pr/f")
        assert trusted_integrity(reader.head("bls/pr/f")) is not None


def test_local_concurrent_writers_of_one_key_leave_matching_metadata(tmp_path, monkeypatch):
    """Both data renames land before either sidecar rename, the first writer's sidecar last:
    two unguarded renames leave the second writer's bytes under the first writer's sha256."""
    store = LocalStore(tmp_path)
    real_replace = os.replace
    state = threading.local()

    for round_ in range(3):
        barrier = threading.Barrier(2, timeout=0.5)
        order: list[int] = []

        def interleaving(src, dst, barrier=barrier, order=order):
            if ".quest-meta" not in str(dst) and "bls" in str(dst):
                real_replace(src, dst)
                order.append(state.writer)
                # Broken when the renames are serialised: the other writer cannot get here now.
                with contextlib.suppress(threading.BrokenBarrierError):
                    barrier.wait()
                return
            if "bls" in str(dst) and order and order[0] == state.writer:
                time.sleep(0.2)
            real_replace(src, dst)

        monkeypatch.setattr(os, "replace", interleaving)

        def write(i: int, round_=round_) -> None:
            state.writer = i
            body = bytes([97 + i]) * (1000 + i + round_)
            store.put_bytes("bls/pr/f", body)

        with ThreadPoolExecutor(2) as pool:
            list(pool.map(write, range(2)))
        monkeypatch.undo()
        assert_metadata_matches_bytes(store, "bls/pr/f")
        assert store.head("bls/pr/f").metadata.get("sha256") is not None  # the pair stayed whole


@pytest.mark.parametrize("size", [300, 5 * MIB + 17])
def test_many_concurrent_writers_without_orchestration(store, size):
    if isinstance(store, LocalStore) and size > MIB:
        size = 64 * 1024
    if isinstance(store, S3Store):
        serialise_moto_writes(store.client)
    bodies = [bytes([48 + i]) * (size + i) for i in range(4)]
    rounds = 2 if size > MIB else 10
    for _ in range(rounds):
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda b: store.put_bytes("bls/pr/f", b), bodies))
        assert_metadata_matches_bytes(store, "bls/pr/f")
    assert store.list_keys() == ["bls/pr/f"]


# --------------------------------------------------------------------------- property


@st.composite
def writes(draw):
    """A few writes of random bytes in random chunkings, some of them dying before they finish."""
    ops = []
    for _ in range(draw(st.integers(1, 6))):
        data = draw(st.binary(max_size=300))
        cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=4)))
        chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        crash = draw(st.sampled_from([None, "sidecar"]))
        ops.append((draw(st.sampled_from(["a", "b"])), data, chunks, crash))
    return ops


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=writes())
def test_property_local_metadata_always_matches_bytes(ops, monkeypatch):
    real_replace = os.replace
    with tempfile.TemporaryDirectory() as root:
        store = LocalStore(root)
        for key, data, chunks, crash in ops:

            def dying(src, dst, crash=crash):
                if crash and ".quest-meta" in str(dst):
                    raise KeyboardInterrupt
                real_replace(src, dst)

            monkeypatch.setattr(os, "replace", dying)
            with contextlib.suppress(KeyboardInterrupt):
                store.put_stream(f"bls/pr/{key}", iter(chunks), expected_size=len(data))
            monkeypatch.setattr(os, "replace", real_replace)
            assert store.read_bytes(f"bls/pr/{key}") == data
            for stored_key in store.list_keys():
                assert_metadata_matches_bytes(store, stored_key)
            if not crash:
                assert trusted_sha256(store.head(f"bls/pr/{key}")) == sha(data)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=writes(), fail_completion=st.booleans())
def test_property_s3_metadata_always_matches_bytes(ops, fail_completion, s3_bucket, s3_client):
    """S3 with the threshold at its minimum: bodies above it (padded) take the multipart path."""
    store = s3_store(s3_client)
    published: dict[str, bytes] = {}

    def broken_completion(**kwargs):
        raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")

    for i, (key, data, chunks, _) in enumerate(ops):
        big = i % 3 == 0
        if big:
            chunks = [b"p" * (5 * MIB), *chunks]
            data = b"p" * (5 * MIB) + data
        failing = fail_completion and big and i % 2 == 0
        if failing:
            s3_client.meta.events.register("before-call.s3.CompleteMultipartUpload", broken_completion)
        try:
            store.put_stream(f"bls/pr/{key}", iter(chunks), expected_size=len(data))
            published[key] = data
        except StoreError:
            assert failing
        finally:
            s3_client.meta.events.unregister("before-call.s3.CompleteMultipartUpload", broken_completion)
        for name, body in published.items():
            assert store.read_bytes(f"bls/pr/{name}") == body
            assert_metadata_matches_bytes(store, f"bls/pr/{name}")
            assert trusted_integrity(store.head(f"bls/pr/{name}")) is not None
    for key in bucket_keys(s3_client):  # the bucket outlives one example
        s3_client.delete_object(Bucket=BUCKET, Key=key)
    assert store.list_keys() == []
