"""Issue 9 through the mirror flow: untrusted objects are re-transferred, a held lease refuses the
sync, and a killed sync's leftovers are removed at the start of the next one."""

from __future__ import annotations

import hashlib
import time

import pytest

from flows.core.errors import LeaseHeld
from flows.core.objects import trusted_sha256
from flows.devkit.samples import population_body, sample_bls_survey
from flows.devkit.upstream_server import UpstreamServer
from flows.io.store import LocalStore, S3Store
from flows.io.store.base import _tmp_name

BUCKET = "quest-test"


@pytest.fixture
def upstream():
    with UpstreamServer({"pr": sample_bls_survey("pr", seed=7)}, population_body()) as up:
        yield up


@pytest.fixture(params=["s3", "local"])
def store(request, monkeypatch, upstream, tmp_path):
    monkeypatch.setenv("QUEST_BLS_BASE_URL", upstream.bls_base_url)
    monkeypatch.setenv("QUEST_RETRY_DELAY_SECONDS", "0.01")
    if request.param == "local":
        monkeypatch.setenv("QUEST_STORE", str(tmp_path / "data"))
        return LocalStore(tmp_path / "data")
    request.getfixturevalue("aws")
    import boto3

    client = boto3.client("s3", region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    monkeypatch.setenv("QUEST_STORE", f"s3://{BUCKET}/mirror")
    return S3Store(BUCKET, "mirror", client=client)


def break_metadata(store, key: str, how: str) -> None:
    """Leave `key` as a crash or a racing sync used to: bytes kept, integrity metadata missing or wrong."""
    head = store.head(key)
    meta = dict(head.metadata)
    meta.pop("sha256-size", None)
    if how == "missing":
        meta.pop("sha256")
    else:
        meta["sha256"] = hashlib.sha256(b"other bytes").hexdigest()
    data = store.read_bytes(key)
    if isinstance(store, S3Store):
        store.client.put_object(Bucket=BUCKET, Key=store.full_key(key), Body=data, Metadata=meta)
    else:
        import json

        (store.root / ".quest-meta" / f"{key}.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("how", ["missing", "contradicting"])
def test_an_object_with_untrusted_metadata_is_transferred_again(prefect_harness, upstream, store, how):
    from flows.ingest import mirror_survey

    mirror_survey("pr")
    break_metadata(store, "bls/pr/pr.series", how)
    upstream.clear_log()
    summary = mirror_survey("pr")
    assert summary.updated == ["pr.series"]
    assert [r.path.rsplit("/", 1)[1] for r in upstream.file_gets()] == ["pr.series"]
    data = store.read_bytes("bls/pr/pr.series")
    assert trusted_sha256(store.head("bls/pr/pr.series")) == hashlib.sha256(data).hexdigest()
    assert mirror_survey("pr").updated == []  # healed: kept from now on


@pytest.mark.parametrize("store", ["local"], indirect=True)
def test_a_sync_refuses_while_another_holds_the_survey(prefect_harness, upstream, store):
    from flows.ingest import mirror_survey

    with store.lease("bls/pr/", 60, owner="the other sync"):
        with pytest.raises(LeaseHeld, match="the other sync"):
            mirror_survey("pr")
        assert store.list_keys() == []
        assert mirror_survey("pr", dry_run=True).added  # a dry run writes nothing, so it needs no lease
    assert mirror_survey("pr").added


@pytest.mark.parametrize("store", ["s3"], indirect=True)
def test_a_sync_removes_a_killed_syncs_leftovers(prefect_harness, upstream, store, monkeypatch):
    from flows.ingest import mirror_survey

    monkeypatch.setenv("QUEST_STALE_UPLOAD_GRACE_SECONDS", "3600")
    client = store.client
    old = f"mirror/bls/pr/.quest-tmp/{_tmp_name(time.time() - 7200)}"
    recent = f"mirror/bls/pr/.quest-tmp/{_tmp_name()}"
    for key in (old, recent):
        client.create_multipart_upload(Bucket=BUCKET, Key=key)
    mirror_survey("pr")
    uploads = [u["Key"] for u in client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])]
    assert uploads == [recent]


@pytest.mark.parametrize("store", ["s3"], indirect=True)
def test_after_a_sync_the_next_plan_heads_nothing(prefect_harness, upstream, store, monkeypatch):
    """Issue 14: the sync records what it wrote in the survey's stat cache, so a no-change day
    reads its plan's metadata from one LIST and one GET instead of a HEAD per file."""
    from flows.ingest import mirror_survey

    heads: list[str] = []
    real_head = S3Store.head
    monkeypatch.setattr(S3Store, "head", lambda self, key: heads.append(key) or real_head(self, key))
    assert mirror_survey("pr").added
    assert heads == []  # the sync's own writes were recorded without reading them back
    upstream.touch_file("pr", "pr.series")  # a new Last-Modified upstream: transferred again
    assert mirror_survey("pr").updated == ["pr.series"]
    assert heads == []
    assert mirror_survey("pr").updated == []
    assert heads == []
    break_metadata(store, "bls/pr/pr.series", "contradicting")  # written behind the sync's back
    heads.clear()
    assert mirror_survey("pr").updated == ["pr.series"]
    assert heads == ["bls/pr/pr.series"]
