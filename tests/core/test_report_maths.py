"""The report maths on small hand-computed inputs, and on generated files against plain-Python sums."""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict

import pytest

from flows.core.errors import BlsFormatError, PopulationDataError
from flows.core.report_maths import (
    DENSE_CELLS_LIMIT,
    best_year_by_series,
    compute_reports,
    json_scalar,
    population_by_year,
    population_stats,
    read_bls,
    series_with_population,
)
from flows.devkit.samples import BlsRow, bls_data_rows, format_bls_data

HEADER = b"series_id        \tyear\tperiod\t       value\tfootnote_codes\r\n"


def line(series: str, year: str, period: str, value: str, foot: str = "") -> bytes:
    return f"{series:<17}\t{year}\t{period}\t{value:>12}\t{foot}\r\n".encode()


def bls(*lines: bytes) -> bytes:
    return HEADER + b"".join(lines)


POP = {2013: 10, 2014: 20, 2015: 30, 2016: 40, 2017: 50, 2018: 60, 2019: 70}


def test_padded_crlf_file_is_stripped_before_filters_and_joins():
    data = bls(
        line("PRS1", "2013", "Q01", "1.5"),
        line("PRS1", "2013", "Q05 ", "2.5", "R"),
        line(" PRS1", "2014", "Q01", "4"),
    )
    parsed = read_bls(data)
    assert parsed.series_ids == ("PRS1",)
    assert parsed.dropped_rows == 0
    assert list(parsed.frame.columns) == ["series_id", "year", "period", "value"]
    assert sorted(parsed.frame["period"].astype(str).unique()) == ["Q01", "Q05"]
    rows = series_with_population(parsed, POP, "PRS1", "Q01")
    assert rows.to_dict("records") == [
        {"series_id": "PRS1", "period": "Q01", "year": 2013, "value": 1.5, "population": 10},
        {"series_id": "PRS1", "period": "Q01", "year": 2014, "value": 4.0, "population": 20},
    ]


def test_non_numeric_values_are_dropped_counted_and_reported():
    data = bls(
        line("PRS1", "2013", "Q01", "1.5"),
        line("PRS1", "2013", "Q02", "-"),
        line("PRS1", "2014", "Q01", ""),
        line("PRS1", "2014", "Q02", "(NA)"),
        line("PRS1", "20x4", "Q02", "3.0"),
        line("PRS1", "2015", "Q02", "nan"),
        line("PRS2", "2015", "Q01", "7.25"),
    )
    parsed = read_bls(data)
    assert parsed.dropped_rows == 5
    assert parsed.frame["value"].tolist() == [1.5, 7.25]
    result = compute_reports(parsed, POP, series_id="PRS1", inputs={"bls_key": "b", "population_key": "p"})
    out = result.to_json()
    assert out["inputs"] == {
        "bls_key": "b",
        "population_key": "p",
        "dropped_rows": 5,
        "dropped_reasons": {"bad year": 1, "bad value": 4},
    }
    assert out["best_year_by_series"] == [
        {"series_id": "PRS1", "year": 2013, "value": 1.5},
        {"series_id": "PRS2", "year": 2015, "value": 7.25},
    ]


def test_best_year_sums_all_periods_and_keeps_q05_only_series():
    data = bls(
        # PRSA: 2013 = 1+2+3+4+10 = 20; 2014 = 5+5+5+5 = 20 + Q05 1 = 21 -> 2014
        line("PRSA", "2013", "Q01", "1"),
        line("PRSA", "2013", "Q02", "2"),
        line("PRSA", "2013", "Q03", "3"),
        line("PRSA", "2013", "Q04", "4"),
        line("PRSA", "2013", "Q05", "10"),
        line("PRSA", "2014", "Q01", "5"),
        line("PRSA", "2014", "Q02", "5"),
        line("PRSA", "2014", "Q03", "5"),
        line("PRSA", "2014", "Q04", "5"),
        line("PRSA", "2014", "Q05", "1"),
        # PRSQ: annual figures only
        line("PRSQ", "2013", "Q05", "3.5"),
        line("PRSQ", "2014", "Q05", "-2.0"),
    )
    parsed = read_bls(data)
    assert best_year_by_series(parsed).to_dict("records") == [
        {"series_id": "PRSA", "year": 2014, "value": 21.0},
        {"series_id": "PRSQ", "year": 2013, "value": 3.5},
    ]
    quarters = compute_reports(parsed, POP, quarters_only=True).to_json()["best_year_by_series"]
    # Q01-Q04 only: 2013 = 10, 2014 = 20; the annual-only series has no quarterly data.
    assert quarters == [
        {"series_id": "PRSA", "year": 2014, "value": 20.0},
        {"series_id": "PRSQ", "year": None, "value": None},
    ]


@pytest.mark.parametrize("dense_limit", [DENSE_CELLS_LIMIT, 0], ids=["dense", "grouped"])
def test_ties_go_to_the_earliest_year_after_rounding_away_float_noise(dense_limit):
    data = bls(
        # 0.1 + 0.2 = 0.30000000000000004 in floats; 0.3 must still tie, so 2010 wins.
        line("PRST", "2012", "Q01", "0.1"),
        line("PRST", "2012", "Q02", "0.2"),
        line("PRST", "2010", "Q01", "0.3"),
        line("PRST", "2011", "Q01", "-1"),
        # an exact tie between later years, listed out of order
        line("PRSU", "2020", "Q01", "2"),
        line("PRSU", "2019", "Q01", "2"),
    )
    assert 0.1 + 0.2 != 0.3
    best = best_year_by_series(read_bls(data), dense_limit=dense_limit).to_dict("records")
    assert best == [
        {"series_id": "PRST", "year": 2010, "value": 0.3},
        {"series_id": "PRSU", "year": 2019, "value": 2.0},
    ]


def test_best_year_is_sorted_by_series_id():
    data = bls(
        line("PRSZ", "2013", "Q01", "1"), line("PRSB", "2013", "Q01", "1"), line("PRSM", "2013", "Q01", "1")
    )
    assert best_year_by_series(read_bls(data))["series_id"].tolist() == ["PRSB", "PRSM", "PRSZ"]


def test_population_stats_exact():
    stats = population_stats(POP)
    assert stats.years == (2013, 2014, 2015, 2016, 2017, 2018)
    assert stats.missing_years == ()
    assert stats.mean == 35.0
    assert stats.std == pytest.approx(math.sqrt(350.0), rel=1e-15)  # sum of squares 1750 / 5
    assert stats.std_population == pytest.approx(math.sqrt(1750.0 / 6), rel=1e-15)


def test_population_stats_reports_missing_years():
    pop = {y: p for y, p in POP.items() if y not in (2016, 2018)}
    stats = population_stats(pop).to_json()
    assert stats["years"] == [2013, 2014, 2015, 2017]
    assert stats["missing_years"] == [2016, 2018]
    assert stats["mean"] == 27.5
    assert stats["std"] == pytest.approx(statistics.stdev([10, 20, 30, 50]), rel=1e-15)
    assert stats["std_population"] == pytest.approx(statistics.pstdev([10, 20, 30, 50]), rel=1e-15)


def test_population_stats_one_year_has_no_sample_std_and_none_is_an_error():
    one = population_stats({2015: 7, 2020: 9}).to_json()
    assert one["years"] == [2015] and one["mean"] == 7.0
    assert one["std"] is None and one["std_population"] == 0.0
    with pytest.raises(PopulationDataError, match="no year in 2013-2018"):
        population_stats({2020: 1, 2021: 2})


def test_population_by_year_rejects_conflicting_duplicates():
    assert population_by_year([(2013, 1), (2013, 1), (2014, 2.0)]) == {2013: 1, 2014: 2}
    with pytest.raises(PopulationDataError, match="2013 twice"):
        population_by_year([(2013, 1), (2013, 2)])


def test_series_with_population_is_null_where_the_year_is_unknown():
    data = bls(
        line("PRS30006032", "2019", "Q01", "1.1"),
        line("PRS30006032", "2020", "Q01", "-4.9"),
        line("PRS30006032", "2020", "Q02", "9.9"),
        line("PRS30006099", "2020", "Q01", "5"),
    )
    out = compute_reports(read_bls(data), {2013: 1, 2019: 328}).to_json()["series_with_population"]
    assert out == [
        {"series_id": "PRS30006032", "period": "Q01", "year": 2019, "value": 1.1, "population": 328},
        {"series_id": "PRS30006032", "period": "Q01", "year": 2020, "value": -4.9, "population": None},
    ]


def test_contract_json_shape_and_types():
    data = bls(line("PRS30006032", "2013", "Q01", "1"), line("PRS30006032", "2014", "Q01", "2"))
    out = compute_reports(
        read_bls(data), POP, inputs={"bls_key": "bls/pr/x", "population_key": "population/y.json"}
    )
    doc = json.loads(json.dumps(out.to_json(), allow_nan=False))
    assert set(doc) == {"population_stats", "best_year_by_series", "series_with_population", "inputs"}
    stats = doc["population_stats"]
    assert {"start_year", "end_year", "years", "mean", "std", "std_population"} <= set(stats)
    assert (stats["start_year"], stats["end_year"]) == (2013, 2018)
    assert isinstance(stats["mean"], float) and isinstance(stats["std"], float)
    row = doc["best_year_by_series"][0]
    assert set(row) == {"series_id", "year", "value"}
    assert type(row["year"]) is int and type(row["value"]) is float
    srow = doc["series_with_population"][0]
    assert set(srow) == {"series_id", "period", "year", "value", "population"}
    assert type(srow["population"]) is int and type(srow["value"]) is float
    assert doc["inputs"] == {
        "bls_key": "bls/pr/x",
        "population_key": "population/y.json",
        "dropped_rows": 0,
        "dropped_reasons": {},
    }


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty"),
        (b"series_id\tyear\tperiod\r\nPRS1\t2013\tQ01\r\n", "no column"),
        (b"<html>Access Denied</html>\r\n", "no column"),
    ],
)
def test_bad_files_are_clear_errors(data, message):
    with pytest.raises(BlsFormatError, match=message):
        read_bls(data)


@pytest.mark.parametrize("dense_limit", [DENSE_CELLS_LIMIT, 0], ids=["dense", "grouped"])
def test_generated_survey_matches_a_plain_python_computation(dense_limit):
    rows = bls_data_rows("pr", seed=7, n_series=25, years=range(2000, 2024))
    rows.append(BlsRow("PRS99999999", 2001, "Q05", 1.0))
    parsed = read_bls(format_bls_data(rows))
    for quarters_only in (False, True):
        sums: dict[str, dict[int, float]] = defaultdict(lambda: defaultdict(float))
        for r in rows:
            if not quarters_only or r.period != "Q05":
                sums[r.series_id][r.year] += r.value
        expected = []
        for sid in sorted({r.series_id for r in rows}):
            by_year = {y: round(v, 6) for y, v in sums[sid].items()}
            if not by_year:
                expected.append({"series_id": sid, "year": None, "value": None})
                continue
            top = max(by_year.values())
            year = min(y for y, v in by_year.items() if v == top)
            expected.append({"series_id": sid, "year": year, "value": top})
        frame = best_year_by_series(parsed, quarters_only=quarters_only, dense_limit=dense_limit)
        got = [{k: json_scalar(v) for k, v in r.items()} for r in frame.to_dict("records")]
        assert got == expected
    assert any(e["year"] is None for e in got)  # the annual-only series, in quarters-only mode
