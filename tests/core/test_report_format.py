"""Report tables for people: cells, fixed-width text, Markdown."""

from __future__ import annotations

from flows.core.report_format import cell, markdown_table, text_table


def test_cells():
    assert [cell(None), cell(True), cell(3), cell(0.1 + 0.2), cell(322069808.0), cell([2013, 2014])] == [
        "",
        "true",
        "3",
        "0.3",
        "322,069,808.00",
        "2013, 2014",
    ]


def test_text_table_right_aligns_numbers_and_says_when_empty():
    table = text_table([{"id": "a", "n": 5}, {"id": "bbb", "n": 12345}], ["id", "n"])
    assert table.splitlines() == ["id       n", "---  -----", "a        5", "bbb  12345"]
    assert text_table([], ["id"]).splitlines()[-1] == "(no rows)"


def test_markdown_table_escapes_pipes():
    md = markdown_table([{"id": "a|b", "n": 1}], ["id", "n"])
    assert md.splitlines() == ["| id | n |", "| --- | --- |", "| a\\|b | 1 |"]
    assert markdown_table([], ["id"]) == "_(no rows)_"


def test_people_counts_have_thousands_separators_and_years_do_not():
    from flows.core.report_format import cell

    assert cell(316128839, "population") == "316,128,839"
    assert cell(4158441.040908095, "std") == "4,158,441.04"
    assert cell(2013, "year") == "2013" and cell(2013) == "2013"


def test_the_headline_names_the_gap_and_its_reason():
    from flows.core.report_format import headline, population_gaps

    result = {
        "population_stats": {
            "start_year": 2013,
            "end_year": 2018,
            "years": [2013, 2014, 2015, 2016, 2017, 2018],
            "missing_years": [],
            "mean": 322069808.0,
            "std": 4158441.040908095,
            "std_population": 3796128.1,
        },
        "best_year_by_series": [{"series_id": "X", "year": 2014, "value": 1.0}] * 282,
        "inputs": {
            "bls_key": "bls/pr/pr.data.0.Current",
            "population_key": "population/x.json",
            "dropped_rows": 0,
        },
    }
    assert population_gaps([2013, 2019, 2021]) == [2014, 2015, 2016, 2017, 2018, 2020]
    text = "\n".join(headline(result, [2013, 2014, 2015, 2016, 2017, 2018, 2019, 2021]))
    assert "mean 322,069,808.00**" in text and "4,158,441.04 (sample, ddof=1)" in text
    assert "2020: no ACS 1-year estimates were released for 2020" in text
    assert "282 series" in text and "dropped as unreadable: 0" in text
