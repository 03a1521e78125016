"""Issue 9: what a killed sync left behind is removed by a later sync, after a grace period."""

from __future__ import annotations

import os
import time

import pytest

from flows.io.store import LocalStore, S3Store
from flows.io.store.base import _tmp_name

MIB = 1024 * 1024
BUCKET = "quest-test"
HOUR = 3600.0


def s3_store(client) -> S3Store:
    return S3Store(BUCKET, "root", client=client, multipart_threshold=5 * MIB, part_size=5 * MIB)


def killed_upload(client, key: str) -> str:
    """A multipart upload whose writer died before completing or aborting it."""
    upload = client.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    client.upload_part(Bucket=BUCKET, Key=key, UploadId=upload, PartNumber=1, Body=b"x" * 10)
    return upload


def open_uploads(client) -> list[str]:
    return sorted(u["Key"] for u in client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []))


def test_s3_open_uploads_and_temp_objects_go_only_after_the_grace(s3_bucket, s3_client):
    store = s3_store(s3_client)
    store.put_bytes("bls/pr/keep", b"data")
    fresh = f"root/bls/pr/.quest-tmp/{_tmp_name()}"
    old = f"root/bls/pr/.quest-tmp/{_tmp_name(time.time() - 7 * HOUR)}"
    elsewhere = f"root/bls/cu/.quest-tmp/{_tmp_name(time.time() - 7 * HOUR)}"
    for key in (fresh, old, elsewhere):
        killed_upload(s3_client, key)
    left_temp = f"root/bls/pr/.quest-tmp/{_tmp_name()}"  # left by a version that published through a copy
    s3_client.put_object(Bucket=BUCKET, Key=left_temp, Body=b"t")

    removed = store.cleanup_stale("bls/pr/", 6 * HOUR)
    assert len(removed) == 1 and removed[0].startswith(f"multipart upload s3://{BUCKET}/{old} (started ")
    assert store.cleanup_stale("bls/pr/", 6 * HOUR) == []  # a second pass finds nothing
    assert open_uploads(s3_client) == sorted([elsewhere, fresh])
    assert left_temp in [o["Key"] for o in s3_client.list_objects_v2(Bucket=BUCKET)["Contents"]]

    later = time.time() + 7 * HOUR  # the next sync, hours later
    removed = store.cleanup_stale("bls/pr/", 6 * HOUR, now=later)
    assert len(removed) == 2 and any(left_temp in r for r in removed) and any(fresh in r for r in removed)
    assert open_uploads(s3_client) == [elsewhere]  # another survey's prefix is not ours to touch
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert keys == ["root/bls/pr/keep"]


def test_s3_cleanup_removes_an_old_upload_and_reports_it(s3_bucket, s3_client):
    store = s3_store(s3_client)
    when = time.time() - 7 * HOUR
    old = f"root/bls/pr/.quest-tmp/{_tmp_name(when)}"
    killed_upload(s3_client, old)
    (line,) = store.cleanup_stale("bls/pr/", 6 * HOUR)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(when)))
    assert line.startswith(f"multipart upload s3://{BUCKET}/{old} (started {started})")
    assert open_uploads(s3_client) == []


def test_s3_upload_left_at_a_final_key_by_an_older_version_is_aged_by_s3(s3_bucket, s3_client):
    """Before issue 9 uploads went straight to the final key: only S3's own start time ages them
    (moto reports every upload as started in 2010)."""
    store = s3_store(s3_client)
    killed_upload(s3_client, "root/bls/pr/pr.data.0.Current")
    assert len(store.cleanup_stale("bls/pr/", 6 * HOUR)) == 1
    assert open_uploads(s3_client) == []


def test_s3_a_running_upload_survives_a_cleanup_in_the_middle(s3_bucket, s3_client):
    store = s3_store(s3_client)

    def body():
        yield b"a" * (6 * MIB)
        assert store.cleanup_stale("bls/pr/", 60) == []  # another sync's cleanup runs now
        yield b"b" * 10

    store.put_stream("bls/pr/f", body(), expected_size=6 * MIB + 10)
    assert store.read_bytes("bls/pr/f") == b"a" * (6 * MIB) + b"b" * 10


def test_local_temp_files_go_only_after_the_grace(tmp_path):
    store = LocalStore(tmp_path)
    store.put_bytes("bls/pr/keep", b"data")
    tmp_dir = tmp_path / ".quest-tmp"
    old, fresh = tmp_dir / _tmp_name(time.time() - 7 * HOUR), tmp_dir / _tmp_name()
    for path in (old, fresh):
        path.write_bytes(b"partial")
    os.utime(old, (time.time() - 7 * HOUR, time.time() - 7 * HOUR))

    assert store.cleanup_stale("bls/pr/", 6 * HOUR) == [f"temp file {old}"]
    assert fresh.exists() and not old.exists()
    assert store.cleanup_stale("bls/pr/", 6 * HOUR, now=time.time() + 7 * HOUR) == [f"temp file {fresh}"]
    assert store.list_keys() == ["bls/pr/keep"] and store.read_bytes("bls/pr/keep") == b"data"


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_cleanup_of_an_empty_store_is_a_no_op(backend, tmp_path, request):
    if backend == "local":
        store = LocalStore(tmp_path / "never-written")
    else:
        request.getfixturevalue("s3_bucket")
        store = s3_store(request.getfixturevalue("s3_client"))
    assert store.cleanup_stale("bls/pr/", 0) == []
