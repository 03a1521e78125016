"""The ingest flows, run for real under the session Prefect harness, against the loopback upstream
and moto S3 (and the local store)."""

from __future__ import annotations

import hashlib
import json
import re
import time

import pytest

from flows.core.errors import QuestError
from flows.devkit.samples import population_body, sample_bls_survey, sample_population
from flows.devkit.upstream_server import GeneratedFile, UpstreamServer
from flows.io.store import LocalStore, S3Store, is_internal_key

BUCKET = "quest-test"


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
    monkeypatch.setenv("QUEST_RETRY_MAX_DELAY_SECONDS", "0.05")
    monkeypatch.setenv("QUEST_RETRIES", "3")
    return monkeypatch


@pytest.fixture(params=["s3", "local"])
def store(request, env, tmp_path):
    """The store the flows will open from QUEST_STORE; S3 is versioned so every PUT is visible."""
    if request.param == "local":
        env.setenv("QUEST_STORE", str(tmp_path / "data"))
        return LocalStore(tmp_path / "data")
    request.getfixturevalue("aws")
    import boto3

    client = boto3.client("s3", region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    env.setenv("QUEST_STORE", f"s3://{BUCKET}/mirror")
    return S3Store(BUCKET, "mirror", client=client)


def _versions(store) -> dict[str, list[str]]:
    """Every version of every object (S3), or (local) the sha256 + mtime of each file."""
    if isinstance(store, S3Store):
        resp = store.client.list_object_versions(Bucket=BUCKET, Prefix="mirror/")
        found: dict[str, list[str]] = {}
        for v in resp.get("Versions", []):
            if is_internal_key(v["Key"]):  # the survey's lease record, not a mirrored file
                continue
            found.setdefault(v["Key"], []).append(v["VersionId"])
        return found
    return {
        key: [store.head(key).metadata["sha256"], str(store.head(key).last_modified)]
        for key in store.list_keys()
    }


def _assert_mirror_equals_upstream(store, upstream, survey="pr"):
    files = upstream.files(survey)
    listed = upstream.listed(survey)
    assert store.list_keys(f"bls/{survey}/") == sorted(f"bls/{survey}/{n}" for n in files)
    for name, body in files.items():
        key = f"bls/{survey}/{name}"
        head = store.head(key)
        data = body if isinstance(body, bytes) else b"".join(body.iter_chunks())
        assert store.read_bytes(key) == data
        assert head.metadata["sha256"] == hashlib.sha256(data).hexdigest()
        assert head.metadata["source-url"] == upstream.survey_url(survey) + name
        assert head.metadata["upstream-size"] == str(listed[name][0])
        assert head.metadata["upstream-last-modified"] == listed[name][1].strftime("%Y-%m-%dT%H:%M")


def test_first_sync_then_no_change(prefect_harness, upstream, store):
    from flows.ingest import mirror_survey

    summary = mirror_survey("pr")
    names = sorted(upstream.files("pr"))
    assert sorted(summary.added) == names and not summary.updated and not summary.deleted
    assert summary.bytes_transferred == sum(len(b) for b in upstream.files("pr").values())
    _assert_mirror_equals_upstream(store, upstream)
    assert all("@" in r.user_agent or "http" in r.user_agent for r in upstream.requests)

    before = _versions(store)
    upstream.clear_log()
    again = mirror_survey("pr")
    assert sorted(again.kept) == names and again.counts()["added"] == 0 and again.bytes_transferred == 0
    assert len(upstream.listing_gets("pr")) == 1
    assert upstream.file_gets() == []
    assert _versions(store) == before  # no PUT: no new object version, nothing rewritten


def test_upstream_add_modify_remove(prefect_harness, upstream, store):
    from flows.ingest import mirror_survey

    mirror_survey("pr")
    before = _versions(store)
    upstream.put_file("pr", "pr.new", b"new file\r\n")
    upstream.put_file("pr", "pr.series", upstream.files("pr")["pr.series"] + b"PRS9\r\n")
    upstream.touch_file("pr", "pr.period")  # same bytes, newer listed date → update
    upstream.remove_file("pr", "pr.contacts")
    upstream.clear_log()

    summary = mirror_survey("pr")
    assert summary.added == ["pr.new"]
    assert sorted(summary.updated) == ["pr.period", "pr.series"]
    assert summary.deleted == ["pr.contacts"]
    assert sorted(r.path.rsplit("/", 1)[1] for r in upstream.file_gets()) == [
        "pr.new",
        "pr.period",
        "pr.series",
    ]
    _assert_mirror_equals_upstream(store, upstream)
    after = _versions(store)
    untouched = [k for k in before if not k.endswith(("pr.series", "pr.period", "pr.contacts"))]
    assert all(after[k] == before[k] for k in untouched if k in after)


@pytest.mark.parametrize("store", ["s3"], indirect=True)  # both backends: the tests above
def test_status_bursts_with_retry_after_complete(prefect_harness, upstream, store):
    from flows.ingest import mirror_survey

    upstream.fail("/pub/time.series/pr/", 503, times=2, retry_after=0)
    upstream.fail("*/pr.series", 429, times=2, retry_after=0)
    upstream.fail("*/pr.period", 503, times=1)
    summary = mirror_survey("pr")
    assert len(summary.added) == len(upstream.files("pr"))
    statuses = [(r.path.rsplit("/", 1)[1], r.status) for r in upstream.requests]
    assert statuses.count(("pr.series", 429)) == 2 and ("pr.series", 200) in statuses
    assert statuses.count(("", 503)) == 2
    _assert_mirror_equals_upstream(store, upstream)


def test_body_cut_mid_stream_keeps_old_object_then_retry_completes(prefect_harness, upstream, store, env):
    from flows.core.errors import TransferFailed
    from flows.ingest import mirror_survey

    mirror_survey("pr")
    old = store.read_bytes("bls/pr/pr.data.0.Current")
    new = old.replace(b"\t1995\t", b"\t1996\t") + b"PRS30006032      \t2025\tQ01\t         1.0\t\r\n"
    upstream.put_file("pr", "pr.data.0.Current", new)
    upstream.cut("*/pr.data.0.Current", after_bytes=len(new) // 2, times=None)  # every attempt is cut
    env.setenv("QUEST_RETRIES", "1")
    upstream.clear_log()
    with pytest.raises(TransferFailed, match="nothing deleted"):
        mirror_survey("pr")
    assert store.read_bytes("bls/pr/pr.data.0.Current") == old  # never a partial object
    assert [r.bytes_sent for r in upstream.file_gets()] == [len(new) // 2] * 2

    upstream.clear_faults()
    upstream.cut("*/pr.data.0.Current", after_bytes=1000, times=1)  # one cut, then the retry succeeds
    summary = mirror_survey("pr")
    assert summary.updated == ["pr.data.0.Current"]
    assert store.read_bytes("bls/pr/pr.data.0.Current") == new


@pytest.mark.parametrize("fault", ["403", "html_error", "empty"])
@pytest.mark.parametrize("store", ["s3"], indirect=True)  # both backends: the tests above
def test_bad_listing_deletes_nothing(prefect_harness, upstream, store, fault):
    from flows.ingest import mirror_survey

    mirror_survey("pr")
    before = _versions(store)
    if fault == "403":
        upstream.fail("/pub/time.series/pr/", 403, times=None)
    else:
        upstream.set_listing_mode("pr", fault)
    upstream.clear_log()
    with pytest.raises(QuestError) as info:
        mirror_survey("pr")
    message = str(info.value)
    assert upstream.survey_url("pr") in message
    assert {"403": "HTTP 403", "html_error": "not a directory listing", "empty": "names no files"}[
        fault
    ] in message
    assert _versions(store) == before
    if fault == "403":  # 4xx other than 408/429 is not retried
        assert len(upstream.listing_gets("pr")) == 1


@pytest.mark.parametrize("store", ["s3"], indirect=True)  # both backends: the tests above
def test_mass_delete_guard_and_override(prefect_harness, upstream, store):
    from flows.core.errors import MassDeleteError
    from flows.ingest import mirror_survey

    mirror_survey("pr")
    names = sorted(upstream.files("pr"))
    for name in names[: len(names) - 3]:
        upstream.remove_file("pr", name)
    before = _versions(store)
    with pytest.raises(MassDeleteError, match="--allow-mass-delete"):
        mirror_survey("pr")
    assert _versions(store) == before
    summary = mirror_survey("pr", allow_mass_delete=True)
    assert sorted(summary.deleted) == names[: len(names) - 3]
    _assert_mirror_equals_upstream(store, upstream)


@pytest.mark.parametrize("store", ["s3"], indirect=True)  # both backends: the tests above
def test_dry_run_changes_nothing(prefect_harness, upstream, store):
    from flows.ingest import mirror_survey

    summary = mirror_survey("pr", dry_run=True)
    assert summary.dry_run and sorted(summary.added) == sorted(upstream.files("pr"))
    assert store.list_keys() == [] and upstream.file_gets() == []


@pytest.mark.parametrize("store", ["s3"], indirect=True)  # both backends: the tests above
def test_multipart_sized_file_streams(prefect_harness, upstream, store):
    from flows.ingest import mirror_survey

    big = GeneratedFile(9 * 1024 * 1024 + 123, seed=4)
    upstream.put_file("pr", "pr.big", big)
    summary = mirror_survey("pr")
    assert "pr.big" in summary.added
    assert hashlib.sha256(store.read_bytes("bls/pr/pr.big")).hexdigest() == big.sha256()
    # Vouched for by S3's full-object CRC-32, so the next day keeps it: no GET, no upload.
    assert store.head("bls/pr/pr.big").metadata["crc32-size"] == str(big.size)
    gets = len(upstream.file_gets())
    again = mirror_survey("pr")
    assert "pr.big" in again.kept and not again.added and not again.updated
    assert len(upstream.file_gets()) == gets


def test_population_snapshot_stores_body_as_returned(prefect_harness, upstream, store):
    from flows.ingest import population_snapshot

    snapshot = population_snapshot()
    key = snapshot.key
    assert key.startswith("population/") and key.endswith(".json")
    assert snapshot.location == store.location(key) and snapshot.bytes == len(population_body())
    assert snapshot.years == sorted(sample_population())
    assert store.read_bytes(key) == population_body()
    head = store.head(key)
    assert head.metadata["source-url"] == upstream.population_url
    assert head.metadata["sha256"] == hashlib.sha256(population_body()).hexdigest()


@pytest.mark.parametrize(
    "body",
    [
        b"<html><body>Service Unavailable</body></html>",
        b'{"error": "cube not found"}',
        b'{"data": [{"Nation": "US"}]}',
    ],
)
@pytest.mark.parametrize("store", ["s3"], indirect=True)  # both backends: the tests above
def test_population_bad_body_stores_nothing(prefect_harness, upstream, store, body):
    from flows.core.errors import PopulationFormatError
    from flows.ingest import population_snapshot

    upstream.set_population(body)
    with pytest.raises(PopulationFormatError):
        population_snapshot()
    assert store.list_keys("population/") == []


@pytest.mark.parametrize("store", ["s3"], indirect=True)  # both backends: the tests above
def test_ingest_and_lambda_path(prefect_harness, upstream, store, env):
    from flows.runtime.plain import run_ingest
    from flows.settings import Settings

    upstream.set_population(population_body("legacy"))
    result = run_ingest({}, Settings())
    json.dumps(result)  # JSON-able
    assert result["surveys"][0]["survey"] == "pr"
    assert len(result["surveys"][0]["added"]) == len(upstream.files("pr"))
    assert result["population"]["years"] == sorted(sample_population())
    assert store.read_bytes(result["population"]["key"]) == population_body("legacy")


@pytest.mark.parametrize("store", ["s3"], indirect=True)
def test_lambda_path_without_a_prefect_api_runs_plain(upstream, store, env, monkeypatch):
    """prefect-client has no local server: with no PREFECT_API_URL the scheduled path still mirrors."""
    import flows.runtime.plain as plain
    from flows.settings import Settings

    monkeypatch.setattr(plain, "prefect_api_available", lambda: False)
    upstream.set_population(population_body("tesseract"))
    result = plain.run_ingest({"surveys": ["pr"]}, Settings())
    assert sorted(result["surveys"][0]["added"]) == sorted(upstream.files("pr"))
    for name, data in upstream.files("pr").items():
        assert store.read_bytes(f"bls/pr/{name}") == data
    assert store.read_bytes(result["population"]["key"]) == population_body("tesseract")
    # A second plain run changes nothing.
    again = plain.run_ingest({}, Settings())
    assert again["surveys"][0]["added"] == again["surveys"][0]["updated"] == []


def _task_runs(flow_run_id):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterFlowRunId

    with get_client(sync_client=True) as client:
        return client.read_task_runs(
            task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[flow_run_id]))
        )


def _logs(flow_run_id, expect: tuple[str, ...] = (), wait_seconds: float = 20.0) -> list[str]:
    """Every log line of the run, read page by page (the API answers at most its default limit,
    200, per call: a run of 80 files and a retried one's lines is longer), and read again for a
    while until each of `expect` is in them (the run's logs reach the API in batches)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    page = 200
    deadline = time.monotonic() + wait_seconds
    while True:
        messages: list[str] = []
        with get_client(sync_client=True) as client:
            while True:
                logs = client.read_logs(
                    LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])),
                    limit=page,
                    offset=len(messages),
                )
                messages += [log.message for log in logs]
                if len(logs) < page:
                    break
        text = "\n".join(messages)
        if all(e in text for e in expect) or time.monotonic() >= deadline:
            return messages
        time.sleep(0.5)


def test_many_files_move_packed_into_task_runs_that_name_every_file(prefect_harness, upstream, store, env):
    """A plan of more files under the pack size than BATCH_ABOVE packs them into task runs, at least
    one per worker (issues 12, 14); a file of the pack size keeps its own; the log names every
    file; one failing file fails its unit and the run, naming it, while the rest are stored."""
    import functools

    from flows import ingest
    from flows.core import plan

    env.setattr(ingest, "transfer_units", functools.partial(plan.transfer_units, pack_bytes=1024 * 1024))
    env.setenv("QUEST_CONCURRENCY", "4")
    small = {f"many.part.{i:04d}": GeneratedFile(512 + i, seed=i) for i in range(plan.BATCH_ABOVE + 30)}
    big = {"many.big.bin": GeneratedFile(1024 * 1024, seed=1)}
    upstream.add_survey("many", {**small, **big})
    upstream.fail("*/many.part.0007", 503, times=None)  # retried, then given up: its unit fails
    state = ingest.mirror_survey("many", return_state=True)
    assert state.is_failed()
    assert f"1 of {len(small) + 1} transfers failed" in state.message and "many.part.0007" in state.message
    run_id = state.state_details.flow_run_id
    transfers = {t.name: t for t in _task_runs(run_id) if t.name.startswith("transfer ")}
    packed = sorted(n for n in transfers if re.fullmatch(r"transfer \d+ files, [\d.]+ KiB: .+ to .+", n))
    counts = [int(n.split()[1]) for n in packed]
    assert sum(counts) == len(small) and len(packed) >= 4 and max(counts) <= plan.BATCH_FILES, packed
    assert "transfer many.big.bin" in transfers  # a file of the pack size has a task run of its own
    (first,) = [n for n in packed if ": many.part.0000 to " in n]
    assert transfers[first].state.type.value == "FAILED"
    assert all(t.state.type.value == "COMPLETED" for n, t in transfers.items() if n != first)
    logs = "\n".join(_logs(run_id, expect=tuple(small)))
    for name in small:
        assert name in logs, name  # the UI shows what moved (and what did not)
    stored = set(store.list_keys("bls/many/"))
    assert stored == {f"bls/many/{n}" for n in {**small, **big} if n != "many.part.0007"}
    upstream.clear_faults()
    upstream.clear_log()
    again = ingest.mirror_survey("many")  # the next run moves only the one that failed
    assert again.added == ["many.part.0007"] and len(upstream.file_gets()) == 1
