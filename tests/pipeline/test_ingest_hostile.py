"""The mirror against a hostile upstream on loopback: cut listings, malformed rows, redirects to
other hosts, peers that trickle bytes, and signals mid-transfer. Nothing wrong is stored or deleted,
and every failure is one clear line."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time

import pytest

from flows.cli import main
from flows.devkit.samples import population_body, sample_bls_survey
from flows.devkit.upstream_server import GeneratedFile, UpstreamServer
from flows.io.store import LocalStore


@pytest.fixture
def upstream():
    with UpstreamServer({"pr": sample_bls_survey("pr", seed=11)}, population_body()) as up:
        yield up


@pytest.fixture
def store(monkeypatch, upstream, tmp_path):
    monkeypatch.setenv("QUEST_BLS_BASE_URL", upstream.bls_base_url)
    monkeypatch.setenv("QUEST_STORE", str(tmp_path / "data"))
    monkeypatch.setenv("QUEST_RETRY_DELAY_SECONDS", "0.01")
    monkeypatch.setenv("QUEST_RETRY_MAX_DELAY_SECONDS", "0.05")
    monkeypatch.setenv("QUEST_RETRIES", "1")
    return LocalStore(tmp_path / "data")


def _snapshot(store: LocalStore) -> dict[str, str]:
    return {key: hashlib.sha256(store.read_bytes(key)).hexdigest() for key in store.list_keys("bls/")}


def _one_error_line(capsys, command: str = "sync") -> str:
    # In-process, Prefect's console handler may still write to a stream an earlier test's capture
    # closed ("--- Logging error ---"); what the user sees is the last line (tested end to end below).
    err = capsys.readouterr().err.strip().splitlines()
    assert err
    assert err[-1].startswith(f"quest {command}: error: "), err[-1]
    return err[-1]


def test_a_listing_cut_anywhere_deletes_nothing(prefect_harness, upstream, store, capsys):
    assert main(["sync"]) == 0
    before = _snapshot(store)
    page_size = len(upstream._listing_html("pr") or b"")
    # Cut points across the page: in the head, mid-row, between rows, just before the closing markup.
    for cut in sorted({40, page_size // 3, page_size // 2 + 7, page_size - 30, page_size - 3}):
        upstream.cut("/pub/time.series/pr/", cut, times=1, announce_length=False)
        capsys.readouterr()
        assert main(["sync"]) == 1, cut
        line = _one_error_line(capsys)
        assert "cut off" in line or "not a directory listing" in line, line
        assert _snapshot(store) == before


def test_a_listing_shorter_than_its_content_length_deletes_nothing(prefect_harness, upstream, store, capsys):
    assert main(["sync"]) == 0
    before = _snapshot(store)
    upstream.cut("/pub/time.series/pr/", 500, times=None, announce_length=True)
    assert main(["sync"]) == 1
    _one_error_line(capsys)
    assert _snapshot(store) == before


def test_an_unreadable_row_holds_its_file_and_the_rest_syncs(prefect_harness, upstream, store, capsys):
    assert main(["sync"]) == 0
    names = sorted(upstream.files("pr"))
    held, changed = names[0], names[1]
    before = _snapshot(store)
    upstream.put_file("pr", held, b"new bytes of the held file\n")
    upstream.put_file("pr", changed, b"new bytes of another file\n")
    page = (upstream._listing_html("pr") or b"").decode()
    month = page.index(f">{held}</A>")
    row_start = page.rindex("<br>", 0, month) + 4
    date_end = page.index("/", row_start)
    hostile = page[:row_start] + " 13/45" + page[page.index("/", date_end + 1) :]
    upstream.fail("/pub/time.series/pr/", 200, times=None, body=hostile.encode())
    capsys.readouterr()
    assert main(["sync"]) == 0
    after = _snapshot(store)
    assert after[f"bls/pr/{held}"] == before[f"bls/pr/{held}"]  # neither replaced nor deleted
    assert after[f"bls/pr/{changed}"] == hashlib.sha256(b"new bytes of another file\n").hexdigest()
    assert set(after) == set(before)


def test_a_redirect_to_another_host_is_refused(prefect_harness, upstream, store, capsys):
    name = sorted(upstream.files("pr"))[0]
    with UpstreamServer({"pr": {name: b"FOREIGN BYTES"}}) as other:
        upstream.redirect(f"/pub/time.series/pr/{name}", other.survey_url("pr") + name)
        assert main(["sync"]) == 1
        line = _one_error_line(capsys)
        assert "redirect" in line and name in line
        assert other.requests == []  # the foreign host was never asked
    assert store.head(f"bls/pr/{name}") is None
    assert len(store.list_keys("bls/pr/")) == len(upstream.files("pr")) - 1


def test_a_listing_redirect_to_another_host_is_refused(prefect_harness, upstream, store, capsys):
    with UpstreamServer({"pr": sample_bls_survey("pr", seed=3)}) as other:
        upstream.redirect("/pub/time.series/pr/", other.survey_url("pr"))
        assert main(["sync"]) == 1
        assert "redirect" in _one_error_line(capsys)
        assert other.requests == []
    assert store.list_keys() == []


def test_a_same_site_redirect_is_followed_and_the_url_read_is_recorded(prefect_harness, upstream, store):
    name = sorted(upstream.files("pr"))[0]
    upstream.put_file("pr", "moved.txt", upstream.files("pr")[name])
    upstream.redirect(f"/pub/time.series/pr/{name}", "/pub/time.series/pr/moved.txt")
    assert main(["sync"]) == 0
    head = store.head(f"bls/pr/{name}")
    assert head.metadata["source-url"] == upstream.survey_url("pr") + "moved.txt"


def test_a_trickling_file_fails_at_its_deadline(prefect_harness, upstream, store, monkeypatch, capsys):
    monkeypatch.setenv("QUEST_HTTP_DEADLINE_FLOOR_SECONDS", "1.5")
    name = sorted(upstream.files("pr"))[0]
    upstream.trickle(f"/pub/time.series/pr/{name}", bytes_per_second=1)
    started = time.monotonic()
    assert main(["sync"]) == 1
    elapsed = time.monotonic() - started
    line = _one_error_line(capsys)
    assert name in line and "deadline" in line
    assert elapsed < 20, elapsed  # 2 attempts x 1.5 s + a second per trickled byte at most
    assert store.head(f"bls/pr/{name}") is None
    assert len(upstream.file_gets("pr")) >= 2  # it was retried before failing


def test_a_trickling_listing_fails_at_its_deadline(prefect_harness, upstream, store, monkeypatch, capsys):
    monkeypatch.setenv("QUEST_HTTP_DEADLINE_FLOOR_SECONDS", "1.5")
    upstream.trickle("/pub/time.series/pr/", bytes_per_second=5)
    started = time.monotonic()
    assert main(["sync"]) == 1
    assert "deadline" in _one_error_line(capsys)
    assert time.monotonic() - started < 20
    assert store.list_keys() == []


def test_the_file_deadline_grows_with_the_listed_size():
    from flows.io.http import request_deadline

    assert request_deadline(60, 1024, None) == 60
    assert request_deadline(60, 1024, 10 * 1024) == 70
    assert request_deadline(60, 1024, -5) == 60


# --------------------------------------------------------------------------- signals


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_transfer_stops_within_seconds_and_publishes_nothing(
    prefect_harness, moto_server, signum, tmp_path
):
    """A real `quest sync` process: multipart uploads in flight, one peer trickling; then a signal."""
    import boto3
    from prefect.settings import get_current_settings

    bucket = f"sig-{signum}"
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    files = {"pr.big": GeneratedFile(64 * 1024 * 1024, seed=2), "pr.slow": b"x" * 200}
    with UpstreamServer({"pr": files}) as up:
        up.trickle("/pub/time.series/pr/pr.big", bytes_per_second=4 * 1024 * 1024)
        up.trickle("/pub/time.series/pr/pr.slow", bytes_per_second=1)
        env = {k: v for k, v in os.environ.items() if not k.startswith("QUEST_")}
        env.update(
            QUEST_STORE=f"s3://{bucket}",
            QUEST_BLS_BASE_URL=up.bls_base_url,
            QUEST_MULTIPART_THRESHOLD_BYTES=str(5 * 1024 * 1024),
            QUEST_MULTIPART_CHUNK_BYTES=str(5 * 1024 * 1024),
            AWS_ENDPOINT_URL=moto_server,
            PREFECT_API_URL=str(get_current_settings().api.url),
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "sync"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 90
            while not s3.list_multipart_uploads(Bucket=bucket).get("Uploads"):
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "no multipart upload started"
                time.sleep(0.2)
            time.sleep(0.5)
            sent = time.monotonic()
            proc.send_signal(signum)
            out, err = proc.communicate(timeout=30)
            stopped_after = time.monotonic() - sent
        finally:
            if proc.poll() is None:
                proc.kill()
    print(f"{signal.Signals(signum).name}: process ended {stopped_after:.2f} s after the signal")
    assert stopped_after < 15, (stopped_after, err)
    assert proc.returncode in (128 + signum, -signum), (proc.returncode, err)
    assert "Traceback" not in err
    if proc.returncode > 0:
        assert err.strip().splitlines()[-1].startswith("quest sync: stopped by "), err
    published = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert not [k for k in published if not any(p.startswith(".quest-") for p in k.split("/"))], published
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")  # every upload aborted

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["mirror-survey"])),
            sort=FlowRunSort.START_TIME_DESC,
            limit=1,
        )
    assert runs and runs[0].state_type.value in ("CRASHED", "CANCELLED"), runs[0].state


def test_the_population_obeys_the_same_site_and_deadline_rules(
    prefect_harness, upstream, store, monkeypatch, capsys
):
    """The DataUSA client is guarded like the BLS one: no foreign redirect, no endless trickle."""
    monkeypatch.setenv("QUEST_POPULATION_URL", upstream.population_url)
    monkeypatch.setenv("QUEST_HTTP_DEADLINE_FLOOR_SECONDS", "1.5")
    path = "/tesseract/data.jsonrecords"
    with UpstreamServer({}, population_body()) as other:
        upstream.redirect(path, other.population_url, times=None)
        assert main(["population"]) == 1
        assert "redirect" in _one_error_line(capsys, "population")
        assert other.requests == []
    upstream.clear_faults()
    upstream.trickle(path, bytes_per_second=20)
    started = time.monotonic()
    assert main(["population"]) == 1
    assert "deadline" in _one_error_line(capsys, "population")
    assert time.monotonic() - started < 20
    assert store.list_keys("population/") == []


@pytest.mark.parametrize("which", ["survey listing", "root listing"])
def test_a_listing_bomb_is_refused_with_one_line_and_deletes_nothing(
    prefect_harness, upstream, store, monkeypatch, capsys, which
):
    """A gzip bomb as a listing (1 KiB stacked `gzip, gzip` to 64 MiB) stops at the listing cap
    with one line naming the setting; the mirror is untouched."""
    import gzip

    from raw_server import raw_server

    assert main(["sync"]) == 0
    before = _snapshot(store)
    bomb = gzip.compress(gzip.compress(b"\0" * (64 * 1024 * 1024), 9), 9)
    headers = [("Content-Type", "text/html"), ("Content-Encoding", "gzip, gzip")]
    monkeypatch.setenv("QUEST_LISTING_MAX_BYTES", str(256 * 1024))
    with raw_server() as raw:
        path = "/pub/time.series/" + ("pr/" if which == "survey listing" else "")
        raw.serve(path, bomb, headers)
        monkeypatch.setenv("QUEST_BLS_BASE_URL", raw.url + "/pub/time.series/")
        capsys.readouterr()
        assert main(["sync", "--survey", "all"] if which == "root listing" else ["sync"]) == 1
    line = _one_error_line(capsys)
    assert "262,144-byte limit (QUEST_LISTING_MAX_BYTES)" in line and raw.url + path in line, line
    assert _snapshot(store) == before
