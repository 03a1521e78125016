"""On S3 a no-change stat of a prefix costs one LIST and one GET: HEADs only for what was written."""

from __future__ import annotations

import time

import boto3
import pytest

from flows.io.store import S3Store
from flows.io.store.base import STAT_CACHE_NAME


@pytest.fixture
def counted(s3_bucket):
    client = boto3.client("s3", region_name="us-east-1")
    calls: list[str] = []
    client.meta.events.register("before-call.s3.*", lambda model, **_: calls.append(model.name))
    return S3Store("quest-test", "root", client=client), calls


@pytest.fixture
def writer(s3_bucket):
    """Another sync's store: its writes are news to the store under test."""
    return S3Store("quest-test", "root", client=boto3.client("s3", region_name="us-east-1"))


def replace_metadata(s3_client, key: str, metadata: dict[str, str]) -> None:
    """Same bytes (so the same ETag), other metadata: a copy of the object onto itself."""
    full = f"root/{key}"
    s3_client.copy_object(
        Bucket="quest-test",
        Key=full,
        CopySource={"Bucket": "quest-test", "Key": full},
        Metadata=metadata,
        MetadataDirective="REPLACE",
    )


def _stat(store, calls, prefix="bls/pr/", settle=True):
    """Stat the prefix; `settle` first lets the second of the last write end, as listings stamp
    LastModified to the second and an object is cached only once its second is over."""
    if settle:
        time.sleep(1.05)
    calls.clear()
    return store.stat_prefix(prefix)


def test_second_stat_needs_no_head_and_writes_nothing(counted, writer):
    store, calls = counted
    for name in "abc":
        writer.put_bytes(f"bls/pr/{name}", name.encode(), {"upstream-size": "1"})
    first = _stat(store, calls)
    assert calls.count("HeadObject") == 3 and calls.count("PutObject") == 1  # the cache is written
    second = _stat(store, calls)
    assert sorted(calls) == ["GetObject", "ListObjectsV2"]
    assert {k: (v.size, v.metadata, v.etag) for k, v in second.items()} == {
        k: (v.size, v.metadata, v.etag) for k, v in first.items()
    }
    assert store.list_keys("bls/pr/") == ["bls/pr/a", "bls/pr/b", "bls/pr/c"]  # the cache stays hidden


def test_rewritten_added_and_deleted_objects_are_seen(counted, writer):
    store, calls = counted
    writer.put_bytes("bls/pr/a", b"1", {"upstream-size": "1"})
    writer.put_bytes("bls/pr/b", b"2", {"upstream-size": "1"})
    _stat(store, calls)
    writer.put_bytes("bls/pr/a", b"11", {"upstream-size": "changed"})
    writer.put_bytes("bls/pr/new", b"3")
    writer.delete("bls/pr/b")
    stats = _stat(store, calls)
    assert calls.count("HeadObject") == 2  # a (rewritten) and new; b is gone
    assert stats["bls/pr/a"].metadata["upstream-size"] == "changed"
    assert set(stats) == {"bls/pr/a", "bls/pr/new"}
    _stat(store, calls)
    assert "HeadObject" not in calls and "PutObject" not in calls


def test_metadata_replaced_by_a_copy_in_place_is_seen(counted, writer, s3_client):
    """Same bytes (same ETag), new metadata, possibly within the second of the cached read."""
    store, calls = counted
    writer.put_bytes("bls/pr/a", b"1", {"upstream-size": "1"})
    _stat(store, calls)
    replace_metadata(s3_client, "bls/pr/a", {"upstream-size": "2"})
    assert _stat(store, calls, settle=False)["bls/pr/a"].metadata == {"upstream-size": "2"}


@pytest.mark.parametrize("garbage", [b"", b"{not json", b'{"format": 1, "objects": []}', b"\x00" * 40])
def test_a_garbled_cache_costs_heads_not_answers(counted, writer, s3_client, garbage):
    store, calls = counted
    writer.put_bytes("bls/pr/a", b"1", {"upstream-size": "1"})
    s3_client.put_object(Bucket="quest-test", Key=f"root/bls/pr/{STAT_CACHE_NAME}", Body=garbage)
    stats = _stat(store, calls)
    assert stats["bls/pr/a"].metadata["upstream-size"] == "1" and calls.count("HeadObject") == 1


def test_a_cache_that_lies_is_not_believed(counted, writer, s3_client):
    """Entries written by someone else for other bytes are ignored: only listing facts decide."""
    store, calls = counted
    writer.put_bytes("bls/pr/a", b"1", {"upstream-size": "1"})
    lie = (
        b'{"format":1,"objects":{"bls/pr/a":{"size":1,"etag":"0","last_modified":"x",'
        b'"metadata":{"upstream-size":"999"}}}}'
    )
    s3_client.put_object(Bucket="quest-test", Key=f"root/bls/pr/{STAT_CACHE_NAME}", Body=lie)
    assert _stat(store, calls)["bls/pr/a"].metadata["upstream-size"] == "1"


def test_objects_written_in_the_listings_second_are_headed_until_it_is_over(counted, writer):
    store, calls = counted
    time.sleep(1.02 - time.time() % 1)  # just past a second boundary: the three calls share a second
    started = time.time()
    writer.put_bytes("bls/pr/a", b"1", {"upstream-size": "1"})
    _stat(store, calls, settle=False)
    _stat(store, calls, settle=False)
    assert int(time.time()) == int(started), "the machine was too slow to test within one second"
    assert calls.count("HeadObject") == 1  # not believed yet
    _stat(store, calls)
    _stat(store, calls, settle=False)
    assert "HeadObject" not in calls


def test_an_unwritable_cache_still_answers(counted, writer, s3_client):
    store, calls = counted
    writer.put_bytes("bls/pr/a", b"1", {"upstream-size": "1"})
    s3_client.put_bucket_policy(
        Bucket="quest-test",
        Policy=(
            '{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Principal":"*","Action":"s3:PutObject",'
            f'"Resource":"arn:aws:s3:::quest-test/root/bls/pr/{STAT_CACHE_NAME}"}}]}}'
        ),
    )
    assert _stat(store, calls)["bls/pr/a"].metadata["upstream-size"] == "1"


def test_a_stores_own_writes_refresh_the_cache_without_heads(counted):
    store, calls = counted
    store.put_bytes("bls/pr/a", b"1", {"upstream-size": "1"})
    store.put_stream("bls/pr/big", iter([b"x" * (6 * 1024 * 1024)]), {"upstream-size": "big"})
    store.put_bytes("bls/pr/gone", b"2")
    store.delete("bls/pr/gone")
    calls.clear()
    store.refresh_stat_cache("bls/pr/")
    assert "HeadObject" not in calls and calls.count("PutObject") == 1
    stats = _stat(store, calls, settle=False)
    assert sorted(calls) == ["GetObject", "ListObjectsV2"]
    assert stats["bls/pr/big"].metadata["upstream-size"] == "big" and set(stats) == {"bls/pr/a", "bls/pr/big"}
    calls.clear()
    store.refresh_stat_cache("bls/cu/")  # nothing written there: no request at all
    assert calls == []


def test_a_later_same_bytes_rewrite_of_our_own_write_is_headed(counted, s3_client):
    store, calls = counted
    store.put_bytes("bls/pr/a", b"1", {"upstream-size": "ours"})
    time.sleep(1.05)
    replace_metadata(s3_client, "bls/pr/a", {"upstream-size": "theirs"})
    assert _stat(store, calls)["bls/pr/a"].metadata == {"upstream-size": "theirs"}
    assert calls.count("HeadObject") == 1


@pytest.mark.parametrize(
    "garbage",
    [
        b"[" * 100_000 + b"]" * 100_000,  # a RecursionError in json before issue 27
        b'{"format": 1, "objects": {}, "objects": {"bls/pr/a": 1}}',
        b"\xff\xfe not UTF-8",
        b'{"format": 1, "objects": {}, "pad": "' + b" " * (17 * 1024 * 1024) + b'"}',  # over the cap
    ],
)
def test_a_garbled_stat_cache_reads_as_empty_logged_in_one_line_and_is_rewritten(
    counted, writer, s3_client, garbage, caplog
):
    store, calls = counted
    writer.put_bytes("bls/pr/a", b"aaa")
    s3_client.put_object(Bucket="quest-test", Key=f"root/bls/pr/{STAT_CACHE_NAME}", Body=garbage)
    time.sleep(1.05)
    with caplog.at_level("WARNING", logger="flows.io.store.s3"):
        found = store.stat_prefix("bls/pr/")
    assert list(found) == ["bls/pr/a"] and found["bls/pr/a"].metadata["sha256"]
    lines = [r.getMessage() for r in caplog.records if "stat cache" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0] and "read as empty" in lines[0]
    assert calls.count("HeadObject") == 1 and calls.count("PutObject") == 1  # rewritten whole


def test_a_read_only_store_keeps_no_stat_cache(s3_bucket, writer, s3_client):
    writer.put_bytes("bls/pr/a", b"aaa")
    time.sleep(1.05)
    reader = S3Store("quest-test", "root", client=s3_client, read_only=True)
    assert list(reader.stat_prefix("bls/pr/")) == ["bls/pr/a"]
    listed = s3_client.list_objects_v2(Bucket="quest-test", Prefix="root/").get("Contents", [])
    assert [o["Key"] for o in listed] == ["root/bls/pr/a"]
