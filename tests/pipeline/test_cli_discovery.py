"""`quest sync --survey all` / `QUEST_BLS_SURVEYS=all quest sync`: discovery from the CLI."""

from __future__ import annotations

import pytest

from flows.cli import main
from flows.devkit.upstream_server import UpstreamServer
from flows.io.store import LocalStore


@pytest.fixture
def upstream():
    with UpstreamServer({"pr": {"pr.a": b"a\n"}, "cu": {"cu.a": b"c\n", "cu.b": b"d\n"}}) as up:
        yield up


@pytest.fixture
def store(monkeypatch, upstream, tmp_path):
    monkeypatch.setenv("QUEST_BLS_BASE_URL", upstream.bls_base_url)
    monkeypatch.setenv("QUEST_STORE", str(tmp_path / "data"))
    monkeypatch.setenv("QUEST_RETRY_DELAY_SECONDS", "0.01")
    monkeypatch.setenv("QUEST_RETRIES", "1")
    return LocalStore(tmp_path / "data")


def test_sync_all_discovers_reports_gone_and_removes_only_when_allowed(
    prefect_harness, upstream, store, monkeypatch, capsys
):
    assert main(["sync", "--survey", "all"]) == 0
    out = capsys.readouterr().out
    assert f"discovered 2 surveys at {upstream.bls_base_url}: 2 new (cu, pr), 0 gone" in out
    assert "cu: 2 added" in out and "pr: 1 added" in out
    assert len(upstream.root_gets()) == 1

    monkeypatch.setenv("QUEST_BLS_SURVEYS", "all")
    upstream.remove_survey("cu")
    upstream.add_survey("ap", {"ap.a": b"x\n"})
    upstream.clear_log()
    assert main(["sync"]) == 0
    out = capsys.readouterr().out
    assert "1 new (ap), 1 gone (cu; kept: pass --allow-mass-delete to remove)" in out
    assert "ap: 1 added" in out and "pr: 0 added, 0 updated, 0 deleted, 1 kept" in out
    assert store.list_keys("bls/cu/") == ["bls/cu/cu.a", "bls/cu/cu.b"]
    assert len(upstream.root_gets()) == 1 and upstream.listing_gets("cu") == []

    assert main(["sync", "--dry-run", "--allow-mass-delete"]) == 0  # a dry run removes nothing
    assert store.list_keys("bls/cu/") == ["bls/cu/cu.a", "bls/cu/cu.b"]
    capsys.readouterr()

    # --allow-mass-delete alone does not retire 1 of 3 stored surveys (> QUEST_MAX_RETIRE_FRACTION, 10%).
    assert main(["sync", "--allow-mass-delete"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("quest sync: error: refusing to retire 1 of 3 stored surveys at once")
    assert store.list_keys("bls/cu/") == ["bls/cu/cu.a", "bls/cu/cu.b"]

    monkeypatch.setenv("QUEST_MAX_RETIRE_FRACTION", "0.5")
    assert main(["sync", "--allow-mass-delete"]) == 0
    out = capsys.readouterr().out
    assert "1 gone (cu; removed (--allow-mass-delete))" in out
    assert store.list_keys("bls/") == ["bls/ap/ap.a", "bls/pr/pr.a"]


@pytest.mark.parametrize("mode", ["html_error", "empty"])
def test_a_bad_root_is_one_error_line_and_changes_nothing(prefect_harness, upstream, store, capsys, mode):
    assert main(["sync", "--survey", "all"]) == 0
    before = store.list_keys()
    upstream.set_root_listing_mode(mode)
    capsys.readouterr()
    assert main(["sync", "--survey", "all", "--allow-mass-delete"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"quest sync: error: {upstream.bls_base_url}: ")
    assert store.list_keys() == before


def test_an_explicit_survey_makes_no_root_get(prefect_harness, upstream, store, capsys):
    assert main(["sync", "--survey", "pr"]) == 0
    assert "discovered" not in capsys.readouterr().out
    assert upstream.root_gets() == [] and store.list_keys("bls/") == ["bls/pr/pr.a"]


def test_a_failing_survey_is_named_and_the_others_are_mirrored(prefect_harness, upstream, store, capsys):
    upstream.set_listing_mode("cu", "empty")
    assert main(["sync", "--survey", "all"]) == 1
    captured = capsys.readouterr()
    assert "pr: 1 added" in captured.out
    assert captured.err.strip().splitlines()[-1].startswith("quest sync: error: 1 of 2 surveys failed: cu: ")
    assert store.list_keys("bls/") == ["bls/pr/pr.a"]
