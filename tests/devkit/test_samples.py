"""The generated sample data has the real BLS / DataUSA layouts and is deterministic."""

from __future__ import annotations

import json

import pytest

from flows.devkit.samples import (
    REPORT_SERIES_ID,
    BlsRow,
    bls_data_rows,
    format_bls_data,
    population_body,
    sample_bls_survey,
    sample_population,
)


def test_format_matches_the_real_layout():
    data = format_bls_data(
        [BlsRow("PRS30006011", 1995, "Q01", 2.6), BlsRow("PRS88003203", 2023, "Q04", 115.824, "R")]
    )
    assert data == (
        b"series_id        \tyear\tperiod\t       value\tfootnote_codes\r\n"
        b"PRS30006011      \t1995\tQ01\t         2.6\t\r\n"
        b"PRS88003203      \t2023\tQ04\t     115.824\tR\r\n"
    )


def test_sample_survey_shape():
    files = sample_bls_survey("pr", seed=3)
    assert {"pr.data.0.Current", "pr.data.1.AllData", "pr.series", "pr.period", "pr.measure"} <= set(files)
    current = files["pr.data.0.Current"].decode("ascii")
    lines = current.split("\r\n")
    assert lines[-1] == "" and all("\n" not in line for line in lines)
    body = [line.split("\t") for line in lines[1:-1]]
    assert all(len(cols) == 5 and len(cols[0]) == 17 and len(cols[3]) == 12 for cols in body)
    by_series: dict[str, set[str]] = {}
    for cols in body:
        by_series.setdefault(cols[0].strip(), set()).add(cols[2])
    assert "Q01" in by_series[REPORT_SERIES_ID]
    assert any(periods == {"Q05"} for periods in by_series.values())
    assert {p for periods in by_series.values() for p in periods} == {"Q01", "Q02", "Q03", "Q04", "Q05"}
    # AllData holds the Current rows and earlier years of the same series.
    all_lines = set(files["pr.data.1.AllData"].decode().split("\r\n"))
    assert set(lines) <= all_lines and len(all_lines) > len(lines)


def test_rows_round_trip_through_the_file():
    rows = bls_data_rows(seed=5)
    parsed = [line.split("\t") for line in format_bls_data(rows).decode().split("\r\n")[1:-1]]
    assert [(c[0].strip(), int(c[1]), c[2], float(c[3]), c[4]) for c in parsed] == [
        (r.series_id, r.year, r.period, r.value, r.footnote) for r in rows
    ]


def test_deterministic_per_seed():
    assert sample_bls_survey(seed=1) == sample_bls_survey(seed=1)
    assert sample_bls_survey(seed=1)["pr.data.0.Current"] != sample_bls_survey(seed=2)["pr.data.0.Current"]
    assert "cu.data.0.Current" in sample_bls_survey("cu")


def test_population_bodies_both_generations():
    pop = sample_population(range(2013, 2024), missing=(2020,))
    assert 2020 not in pop and pop[2013] == 316128839
    tess = json.loads(population_body("tesseract"))
    assert tess["columns"] == ["Nation ID", "Nation", "Year", "Population"]
    assert {r["Year"]: r["Population"] for r in tess["data"]} == {y: float(p) for y, p in pop.items()}
    legacy = json.loads(population_body("legacy"))
    assert {int(r["Year"]): r["Population"] for r in legacy["data"]} == pop
    assert all(r["ID Year"] == int(r["Year"]) for r in legacy["data"])
    with pytest.raises(ValueError):
        population_body("other")  # type: ignore[arg-type]
