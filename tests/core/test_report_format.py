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
