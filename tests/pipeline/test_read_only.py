"""Issue 27: a dry run and the ingest's per-survey check write nothing to the store, of any kind.

A dry run recreated `.quest-stat.json` (without a lease), so with read-only credentials it would
have failed. Writes are proven absent, not assumed: on S3 every call of the flows' own client is
recorded through botocore's `before-call` event (moto enforces no bucket policy); on the local
store (root ignores mode bits) every file and folder, hidden ones included, is compared before and
after.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from flows.devkit.samples import population_body, sample_bls_survey
from flows.devkit.upstream_server import UpstreamServer
from flows.io.store import LocalStore, S3Store
from flows.io.store.base import STAT_CACHE_NAME, TMP_SEGMENT, _tmp_name

BUCKET = "quest-test"
S3_WRITES = frozenset(
    {
        "PutObject",
        "CopyObject",
        "DeleteObject",
        "DeleteObjects",
        "CreateMultipartUpload",
        "UploadPart",
        "CompleteMultipartUpload",
        "AbortMultipartUpload",
    }
)


@pytest.fixture
def upstream():
    with UpstreamServer(
        {"pr": sample_bls_survey("pr", seed=7)}, population_body(), require_contact=True
    ) as up:
        yield up


@pytest.fixture
def env(monkeypatch, upstream):
    monkeypatch.setenv("QUEST_BLS_BASE_URL", upstream.bls_base_url)
    monkeypatch.setenv("QUEST_POPULATION_URL", upstream.population_url)
    monkeypatch.setenv("QUEST_RETRY_DELAY_SECONDS", "0.01")
    monkeypatch.setenv("QUEST_RETRIES", "2")
    monkeypatch.setenv("QUEST_STALE_UPLOAD_GRACE_SECONDS", "0")  # any leftover is "stale" at once
    return monkeypatch


@pytest.fixture
def s3_calls(env, aws):
    """The flows' S3 clients, each call's operation name recorded."""
    import boto3

    import flows.io.store as store_module

    client = boto3.client("s3", region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    env.setenv("QUEST_STORE", f"s3://{BUCKET}/mirror")
    calls: list[str] = []
    real = store_module.make_s3_client

    def recording(*args, **kwargs):
        made = real(*args, **kwargs)
        made.meta.events.register("before-call.s3", lambda model, **_: calls.append(model.name))
        return made

    env.setattr(store_module, "make_s3_client", recording)
    return client, calls


def _mirror_then_prime(store) -> None:
    """A real mirror, then what a dry run would be tempted to write: no stat cache (it would be
    rebuilt) and a stale temp object (it would be cleaned up)."""
    from flows.ingest import mirror_survey

    mirror_survey("pr")
    if isinstance(store, S3Store):
        store.client.delete_object(Bucket=BUCKET, Key=f"mirror/bls/pr/{STAT_CACHE_NAME}")
        store.client.put_object(Bucket=BUCKET, Key=f"mirror/bls/pr/{TMP_SEGMENT}/{_tmp_name(1.0)}", Body=b"x")
    else:
        tmp = store.root / TMP_SEGMENT
        tmp.mkdir(parents=True, exist_ok=True)
        old = tmp / _tmp_name(1.0)
        old.write_bytes(b"x")
        os.utime(old, (1.0, 1.0))


def _tree(root: Path) -> dict[str, tuple[str, int]]:
    """Every path under `root` (hidden ones included): a file's sha256 and mtime, a folder's mtime."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            found[os.path.join(dirpath, name)] = ("dir", os.stat(os.path.join(dirpath, name)).st_mtime_ns)
        for name in filenames:
            path = os.path.join(dirpath, name)
            found[path] = (hashlib.sha256(Path(path).read_bytes()).hexdigest(), os.stat(path).st_mtime_ns)
    return found


def _check_pr(settings_env) -> object:
    """The ingest's check of `pr`, in a flow run of its own (it logs to its run)."""
    from prefect import flow

    from flows.ingest import check_survey
    from flows.settings import current_settings

    @flow(name="check-pr")
    def check() -> object:
        return check_survey(current_settings(), "pr")

    return check()


@pytest.mark.parametrize("step", ["dry run", "check"])
def test_s3_dry_run_and_check_make_no_write_call(prefect_harness, upstream, env, s3_calls, step):
    from flows.ingest import mirror_survey

    client, calls = s3_calls
    store = S3Store(BUCKET, "mirror", client=client)
    _mirror_then_prime(store)
    time.sleep(1.1)  # past the second of the last write: a cache would now be worth writing
    calls.clear()
    upstream.put_file("pr", "pr.series", b"changed upstream\n")
    if step == "dry run":
        summary = mirror_survey("pr", dry_run=True)
        assert summary.dry_run and summary.updated == ["pr.series"]
    else:
        result = _check_pr(env)
        assert result.changed == {"update": 1}
    assert calls, "the recording saw no call at all"
    assert [c for c in calls if c in S3_WRITES] == []
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix="mirror/").get("Contents", [])]
    assert f"mirror/bls/pr/{STAT_CACHE_NAME}" not in keys
    assert any(TMP_SEGMENT in k for k in keys)  # the stale temp object is a real sync's to remove


@pytest.mark.parametrize("step", ["dry run", "check"])
def test_local_dry_run_and_check_change_no_file(prefect_harness, upstream, env, tmp_path, step):
    from flows.ingest import mirror_survey

    env.setenv("QUEST_STORE", str(tmp_path / "data"))
    store = LocalStore(tmp_path / "data")
    _mirror_then_prime(store)
    before = _tree(tmp_path)
    upstream.put_file("pr", "pr.series", b"changed upstream\n")
    if step == "dry run":
        assert mirror_survey("pr", dry_run=True).updated == ["pr.series"]
    else:
        assert _check_pr(env).changed == {"update": 1}
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("kind", ["s3", "local"])
def test_a_read_only_store_refuses_every_write_with_one_line(aws, tmp_path, kind):
    from flows.core.errors import StoreError
    from flows.io.store import open_store

    if kind == "s3":
        import boto3

        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)
        store = open_store(f"s3://{BUCKET}/m", read_only=True)
    else:
        store = open_store(str(tmp_path / "data"), read_only=True)
    for write in (
        lambda: store.put_bytes("a/b", b"x"),
        lambda: store.put_stream("a/b", iter([b"x"])),
        lambda: store.delete("a/b"),
        lambda: store.cleanup_stale("a/", 0),
        lambda: store.lease("a/", 30),
    ):
        with pytest.raises(StoreError, match="read-only") as info:
            write()
        assert "\n" not in str(info.value)
    with store.lease("a/", 30, hold=False):  # a lease that holds nothing writes nothing
        pass
    assert store.stat_prefix("a/") == {}
    if kind == "local":
        assert not (tmp_path / "data").exists()
