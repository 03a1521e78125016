"""The reports flow under the session's Prefect API: files written, artifacts published, clear errors."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
from xml.etree import ElementTree

import pytest
from prefect.client.orchestration import get_client
from reports_data import BLS_KEY, artifacts_of, expected, seed_store

from flows.cli import main
from flows.core.errors import QuestError
from flows.io.store import LocalStore, S3Store
from flows.reports import reports, reports_folder

TS = "20250102T030405Z"


@pytest.fixture
def local_store(tmp_path, monkeypatch):
    monkeypatch.setenv("QUEST_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("QUEST_RETRY_DELAY_SECONDS", "0")
    return LocalStore(tmp_path / "store")


def test_flow_writes_the_four_files_and_publishes_artifacts(prefect_harness, local_store):
    key, bls, body = seed_store(local_store)
    with reports_folder(TS):
        state = reports(return_state=True)
    result = state.result().result
    assert result == expected(bls, body, key)
    prefix = f"reports/{TS}/"
    assert local_store.list_keys(prefix) == [
        prefix + name
        for name in (
            "best_year_by_series.csv",
            "population_by_year.svg",
            "population_stats.json",
            "series_PRS30006032_Q01.csv",
            "series_PRS30006032_Q01.svg",
            "summary.md",
        )
    ]
    for chart in ("population_by_year.svg", "series_PRS30006032_Q01.svg"):  # well-formed SVG with points
        svg = ElementTree.fromstring(local_store.read_bytes(prefix + chart))
        assert svg.tag == "{http://www.w3.org/2000/svg}svg"
        assert len(svg.findall(".//{http://www.w3.org/2000/svg}circle")) >= 5
    assert json.loads(local_store.read_bytes(prefix + "population_stats.json")) == result["population_stats"]
    best = list(
        csv.DictReader(io.StringIO(local_store.read_bytes(prefix + "best_year_by_series.csv").decode()))
    )
    assert [(r["series_id"], int(r["year"]), float(r["value"])) for r in best] == [
        (r["series_id"], r["year"], r["value"]) for r in result["best_year_by_series"]
    ]
    series = list(
        csv.DictReader(io.StringIO(local_store.read_bytes(prefix + "series_PRS30006032_Q01.csv").decode()))
    )
    assert [(int(r["year"]), r["population"] or None) for r in series] == [
        (r["year"], None if r["population"] is None else str(r["population"]))
        for r in result["series_with_population"]
    ]
    assert any(r["population"] is None for r in result["series_with_population"])  # 2020 has no ACS 1-year
    summary = local_store.read_bytes(prefix + "summary.md").decode()
    assert "PRS30006032" in summary and key in summary
    assert "![US population by year](population_by_year.svg)" in summary
    stats = result["population_stats"]
    assert f"mean {stats['mean']:,.2f}**" in summary
    n_best = len(result["best_year_by_series"])
    assert summary.count("\n| PRS") <= 2 * 10 and f"{n_best:,} rows" in summary  # top rows, not all
    assert "2020: no ACS 1-year estimates were released for 2020" in summary  # the gap, explained

    artifacts = sorted(asyncio.run(artifacts_of(state.state_details.flow_run_id)), key=lambda a: a.created)
    by_key = {a.key: a for a in artifacts}
    assert [a.key for a in artifacts] == [
        "reports-headline",
        "reports-charts",
        "population-stats",
        "best-year-by-series",
        "series-prs30006032-q01",
        "reports-summary",
    ]
    assert {a.type for a in artifacts} == {"table", "markdown"}
    assert "PRS30006032" in by_key["reports-summary"].data
    assert by_key["reports-charts"].data.count("](data:image/svg+xml;base64,") == 2
    assert "standard deviation" in by_key["reports-headline"].data
    assert by_key["best-year-by-series"].description.endswith(f": {n_best:,} rows")
    assert not re.search(r"\d\.\d{7,}", by_key["population-stats"].data)  # no raw floats
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
    assert run.name == f"reports {TS}"


def test_legacy_generation_and_quarters_only(prefect_harness, local_store):
    key, bls, body = seed_store(local_store, generation="legacy")
    with reports_folder(TS):
        result = reports(population_key=key, quarters_only=True).result
    assert result == expected(bls, body, key, quarters_only=True)
    # The sample survey carries an annual-only series: listed, with no quarterly data.
    assert {"series_id": "PRS30006131", "year": None, "value": None} in result["best_year_by_series"]


def test_newest_snapshot_is_the_default(prefect_harness, local_store):
    seed_store(local_store, ts="20240101T000000Z")
    key, bls, body = seed_store(local_store, ts="20250101T000000Z")
    local_store.put_bytes("population/notes.txt", b"not a snapshot")
    # A JSON body under a non-timestamp key sorts after the snapshots as text; it must not be chosen.
    local_store.put_bytes("population/manual-note.json", b'{"data": [{"Year": 2015, "Population": 1}]}')
    with reports_folder(TS):
        result = reports().result
    assert result["inputs"]["population_key"] == key
    assert result == expected(bls, body, key)


def test_missing_bls_file_is_a_clear_error_without_retries(prefect_harness, local_store, monkeypatch):
    monkeypatch.setenv("QUEST_RETRY_DELAY_SECONDS", "30")  # a retry would make this test hang for minutes
    seed_store(local_store)
    local_store.delete(BLS_KEY)
    with (
        pytest.raises(QuestError, match=r"pr\.data\.0\.Current is not in the store: run `quest sync`"),
        reports_folder(TS),
    ):
        reports()
    assert local_store.list_keys("reports/") == []


def test_no_snapshot_and_bad_parameters_are_clear_errors(prefect_harness, local_store):
    with pytest.raises(QuestError, match="no population snapshot"):
        reports()
    seed_store(local_store)
    with pytest.raises(QuestError, match="not population/<timestamp>.json"):
        reports(population_key="bls/pr/pr.data.0.Current")
    with pytest.raises(QuestError, match="series_id must be letters and digits"):
        reports(series_id="../x")


def test_cli_reports_json_prints_exactly_one_object(prefect_harness, local_store, capsys):
    key, bls, body = seed_store(local_store)
    assert main(["reports", "--json"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out) == expected(bls, body, key)
    assert out.count("\n") == 1
    assert main(["reports", "--quarters-only", "--population-key", key]) == 0
    text = capsys.readouterr().out
    assert "Best year per series (largest sum of value over Q01-Q04)" in text
    assert "reports written to" in text


def test_cli_reports_error_is_one_line(prefect_harness, local_store, capsys):
    assert main(["reports"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("quest reports: error: no population snapshot")


def test_flow_reads_s3(prefect_harness, s3_bucket, s3_client, monkeypatch):
    monkeypatch.setenv("QUEST_STORE", f"s3://{s3_bucket}/root")
    store = S3Store(s3_bucket, "root", client=s3_client)
    key, bls, body = seed_store(store)
    with reports_folder(TS):
        assert reports().result == expected(bls, body, key)
    assert len(store.list_keys(f"reports/{TS}/")) == 6  # four reports and two charts
