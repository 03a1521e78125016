"""The reports' choice and reading of population snapshots, and how dropped BLS rows are reported.

`plain_reports` (the function's plain entry, no flow run) runs against a local store and S3 (moto);
expected figures are computed here from the bodies' own numbers.
"""

from __future__ import annotations

import json
import logging
import statistics

import pytest
from reports_data import BLS_KEY, sample_bls, seed_store

from flows.core.errors import BlsFormatError, PopulationFormatError, QuestError
from flows.devkit.samples import population_body, sample_population
from flows.io.store import LocalStore, S3Store
from flows.runtime.plain import plain_reports as run_reports
from flows.settings import Settings

TS = "20250102T030405Z"
NOTE = json.dumps({"data": [{"Year": y, "Population": 1} for y in range(2013, 2019)]}).encode()


@pytest.fixture
def settings(monkeypatch, tmp_path) -> Settings:
    monkeypatch.setenv("QUEST_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("QUEST_RETRY_DELAY_SECONDS", "0")
    return Settings()


def expected_mean() -> float:
    pop = sample_population()
    return statistics.fmean(pop[y] for y in range(2013, 2019))


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_a_note_under_population_is_never_the_newest_snapshot(backend, settings, tmp_path, request):
    """Issue 9: `population/manual-note.json` sorted last as text and gave a mean of 1.0."""
    if backend == "s3":
        store = S3Store(
            request.getfixturevalue("s3_bucket"), "root", client=request.getfixturevalue("s3_client")
        )
    else:
        store = LocalStore(tmp_path / "store")
    seed_store(store, ts="20240101T000000Z")
    key, _, _ = seed_store(store, ts="20250101T000000Z")
    for junk in ("population/manual-note.json", "population/latest.json", "population/20251399T000000Z.json"):
        store.put_bytes(junk, NOTE, content_type="application/json")
    run = run_reports(settings, reports_ts=TS, store=store)
    assert run.result["inputs"]["population_key"] == key
    assert run.result["population_stats"]["mean"] == pytest.approx(expected_mean(), rel=1e-12)


def test_only_notes_under_population_means_no_snapshot(settings, tmp_path):
    store = LocalStore(tmp_path / "store")
    store.put_bytes(BLS_KEY, sample_bls())
    store.put_bytes("population/manual-note.json", NOTE)
    with pytest.raises(QuestError, match="no population snapshot"):
        run_reports(settings, reports_ts=TS, store=store)


@pytest.mark.parametrize(
    "key",
    ["population/manual-note.json", "population/20251399T000000Z.json", "population/x/20250101T000000Z.json"],
)
def test_a_given_key_that_is_not_a_snapshot_key_is_refused(settings, tmp_path, key):
    store = LocalStore(tmp_path / "store")
    seed_store(store)
    store.put_bytes(key, NOTE)
    with pytest.raises(QuestError, match=r"is not population/<timestamp>\.json"):
        run_reports(settings, population_key=key, reports_ts=TS, store=store)
    assert store.list_keys("reports/") == []


@pytest.mark.parametrize(
    "body, reason",
    [
        (b'{"page": {}}', "the body has no `data` list"),
        (b"<html>502</html>", "HTML"),
        (json.dumps({"data": [{"Year": 2016, "Population": 1e300}]}).encode(), "exceeds"),
        (json.dumps({"data": [{"Year": 2016, "Population": 3.5}]}).encode(), "not a whole number"),
        (json.dumps({"data": [{"Year": 2021, "Population": 5}]}).encode(), "no year in 2013-2018"),
    ],
)
def test_a_corrupt_newest_snapshot_is_named_in_the_error(settings, tmp_path, body, reason):
    store = LocalStore(tmp_path / "store")
    seed_store(store, ts="20240101T000000Z")
    store.put_bytes("population/20250101T000000Z.json", body)
    with pytest.raises(QuestError, match=rf"^population/20250101T000000Z\.json: .*{reason}"):
        run_reports(settings, reports_ts=TS, store=store)
    assert store.list_keys("reports/") == []


def test_a_bls_file_without_a_header_is_named_in_the_error(settings, tmp_path):
    store = LocalStore(tmp_path / "store")
    seed_store(store, bls=b"<html>Access Denied</html>\r\n")
    with pytest.raises(BlsFormatError, match=r"^bls/pr/pr\.data\.0\.Current: the BLS file has no column"):
        run_reports(settings, reports_ts=TS, store=store)


def test_dropped_rows_are_logged_by_reason_and_shown_in_the_summary(settings, tmp_path, caplog):
    clean = sample_bls()
    lines = clean.split(b"\r\n")
    bad = [
        b"PRS30006032     \t20199\tQ01\t       1.0\t",
        b"PRS30006032     \t2019\tQ01\t         (NA)\t",
        b"PRS30006032     \t2019\tQ01\t         -\t",
        b"PRS\xff30006032     \t2019\tQ01\t       1.0\t",
    ]
    dirty = b"\r\n".join(lines[:5] + bad + lines[5:])
    store = LocalStore(tmp_path / "store")
    key, _, _ = seed_store(store, bls=dirty)
    with caplog.at_level(logging.WARNING, logger="flows.runtime.plain"):
        run = run_reports(settings, reports_ts=TS, store=store)
    reasons = {"not utf-8": 1, "bad year": 1, "bad value": 2}
    assert run.result["inputs"]["dropped_rows"] == 4
    assert run.result["inputs"]["dropped_reasons"] == reasons
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        "dropped 4 row(s) that cannot be read (not utf-8: 1, bad year: 1, bad value: 2)" in w
        for w in warnings
    )
    summary = store.read_bytes(f"reports/{TS}/summary.md").decode()
    assert "BLS rows dropped as unreadable: 4 (not utf-8: 1, bad year: 1, bad value: 2)" in summary
    clean_run = run_reports(settings, reports_ts="20250102T030406Z", store=_reseeded(tmp_path, clean))
    assert clean_run.result["best_year_by_series"] == run.result["best_year_by_series"]
    assert clean_run.result["series_with_population"] == run.result["series_with_population"]


def _reseeded(tmp_path, bls: bytes) -> LocalStore:
    store = LocalStore(tmp_path / "clean")
    seed_store(store, bls=bls)
    return store


def test_reports_ts_must_be_a_real_timestamp(settings, tmp_path):
    store = LocalStore(tmp_path / "store")
    seed_store(store)
    for ts in ("2025111T000000Z", "20251399T000000Z", "../x"):
        with pytest.raises(QuestError, match="reports_ts must look like"):
            run_reports(settings, reports_ts=ts, store=store)


def test_legacy_body_reads_and_a_bad_one_keeps_its_class_and_names_its_key(settings, tmp_path):
    store = LocalStore(tmp_path / "store")
    store.put_bytes(BLS_KEY, sample_bls())
    store.put_bytes("population/20250101T000000Z.json", population_body("legacy"))
    run = run_reports(settings, reports_ts=TS, store=store)
    assert run.result["population_stats"]["mean"] == pytest.approx(expected_mean(), rel=1e-12)
    with pytest.raises(
        PopulationFormatError, match=r"^population/20250102T000000Z\.json: expected a JSON object"
    ):
        store.put_bytes("population/20250102T000000Z.json", b"[]")
        run_reports(settings, reports_ts="20250102T030406Z", store=store)
