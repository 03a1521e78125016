"""The BLS reader on hostile files: every unreadable row is dropped, counted by reason, never a crash or a
wrong number. Expected rows and sums are worked out here in plain Python, not by the reader."""

from __future__ import annotations

from collections import defaultdict

import pytest

from flows.core.errors import BlsFormatError
from flows.core.report_format import summary_markdown, text_report
from flows.core.report_maths import best_year_by_series, compute_reports, read_bls
from flows.devkit.samples import REPORT_SERIES_ID, BlsRow, bls_data_rows, format_bls_data

HEADER = b"series_id        \tyear\tperiod\t       value\tfootnote_codes\r\n"
POP = {2013: 10, 2014: 20, 2015: 30, 2016: 40, 2017: 50, 2018: 60}


def line(series: str, year: str, period: str, value: str, foot: str = "") -> bytes:
    return f"{series:<17}\t{year}\t{period}\t{value:>12}\t{foot}\r\n".encode()


def good(year: int = 2019, period: str = "Q01", value: str = "1.5") -> bytes:
    return line("PRS1", str(year), period, value)


def rows_of(data: bytes) -> list[tuple[str, int, str, float]]:
    frame = read_bls(data).frame
    return [
        (str(s), int(y), str(p), float(v))
        for s, y, p, v in zip(frame["series_id"], frame["year"], frame["period"], frame["value"], strict=True)
    ]


def sample_rows() -> list[BlsRow]:
    return bls_data_rows("pr", seed=11, n_series=6, years=range(1995, 2025))


def test_stray_quotes_in_footnotes_are_plain_characters():
    """Issue 9: two stray quotes swallowed the rows between them (22 of 30 Q01 rows, 0 dropped)."""
    rows = sample_rows()
    target = [i for i, r in enumerate(rows) if r.series_id == REPORT_SERIES_ID]
    quoted = list(rows)
    quoted[target[3]] = BlsRow(**{**vars(rows[target[3]]), "footnote": '"R'})
    quoted[target[-4]] = BlsRow(**{**vars(rows[target[-4]]), "footnote": 'P"'})
    parsed = read_bls(format_bls_data(quoted))
    expected = sorted(
        (r.year, r.value) for r in rows if r.series_id == REPORT_SERIES_ID and r.period == "Q01"
    )
    out = compute_reports(parsed, POP).to_json()
    assert [(r["year"], r["value"]) for r in out["series_with_population"]] == expected
    assert len(parsed.frame) == len(rows) and parsed.dropped_rows == 0

    one_quote = list(rows)
    one_quote[target[0]] = BlsRow(**{**vars(rows[target[0]]), "footnote": '"'})
    assert len(read_bls(format_bls_data(one_quote)).frame) == len(rows)  # was: the whole report failed


def test_generated_file_with_hostile_lines_keeps_the_exact_sums():
    """Bad lines spread through a real-format file: the good rows' best years are as if they were alone."""
    rows = sample_rows()
    hostile = [
        b"PRS\xff30006032\t2001\tQ01\t1.0\t\r\n",  # not UTF-8
        line("PRS30006032", "99999999999999999999", "Q01", "5"),
        line("PRS30006032", "2001", "Q01", "1e400"),
        b"PRS30006032\t2001\tQ01\t1.0\r\n",  # a field short
        b"PRS30006032\t2001\tQ01\t1\t.0\t\r\n",  # a tab inside the value
        line("PRS30006032", "2001", "Q09", "3"),
        HEADER,
    ]
    data = b"".join(
        [HEADER]
        + [
            line(r.series_id, str(r.year), r.period, repr(r.value), r.footnote)
            + (hostile[i // 50] if i % 50 == 0 and i // 50 < len(hostile) else b"")
            for i, r in enumerate(rows)
        ]
    )
    parsed = read_bls(data)
    assert parsed.dropped_rows == len(hostile)
    assert parsed.dropped_reasons == {
        "not utf-8": 1,
        "wrong number of fields": 2,
        "repeated header": 1,
        "bad year": 1,
        "bad period": 1,
        "bad value": 1,
    }
    sums: dict[str, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    for r in rows:
        sums[r.series_id][r.year] += r.value
    expected = []
    for sid in sorted(sums):
        by_year = {y: round(v, 6) for y, v in sums[sid].items()}
        top = max(by_year.values())
        expected.append(
            {"series_id": sid, "year": min(y for y, v in by_year.items() if v == top), "value": top}
        )
    assert best_year_by_series(parsed).to_dict("records") == expected


def test_a_non_utf8_byte_drops_only_its_row():
    data = HEADER + good(2019) + b"PRS1\t2020\tQ01\t2.0\t\xe9\r\n" + good(2021)
    parsed = read_bls(data)
    assert rows_of(data) == [("PRS1", 2019, "Q01", 1.5), ("PRS1", 2021, "Q01", 1.5)]
    assert parsed.dropped_reasons == {"not utf-8": 1}


@pytest.mark.parametrize(
    "year",
    ["99999999999999999999", "-2019", "1e3", "2019.0", "+2019", "02019", "1799", "2201", "20x9", "", "٢٠١٩"],
)
@pytest.mark.parametrize("slow", [False, True], ids=["clean-file", "file-with-a-bad-value"])
def test_a_year_that_is_not_4_digits_in_range_is_dropped(year, slow):
    data = HEADER + good(2019) + line("PRS1", year, "Q02", "2") + (good(2020, value="-") if slow else b"")
    parsed = read_bls(data)
    assert rows_of(data) == [("PRS1", 2019, "Q01", 1.5)]
    assert parsed.dropped_reasons == {"bad year": 1, **({"bad value": 1} if slow else {})}


def test_padded_years_and_range_edges_are_read_next_to_refused_ones():
    data = HEADER + line("PRS1", " 2019 ", "Q01", "1") + line("PRS1", "1800", "Q01", "2")
    data += line("PRS1", "2200", "Q01", "3") + line("PRS1", "12019", "Q01", "4")
    assert rows_of(data) == [
        ("PRS1", 2019, "Q01", 1.0),
        ("PRS1", 1800, "Q01", 2.0),
        ("PRS1", 2200, "Q01", 3.0),
    ]
    assert read_bls(data).dropped_reasons == {"bad year": 1}


def test_utf8_bom_is_stripped():
    data = b"\xef\xbb\xbf" + HEADER + good()
    assert rows_of(data) == [("PRS1", 2019, "Q01", 1.5)]


@pytest.mark.parametrize(
    "bad, reason",
    [
        (b"PRS1\t2019\tQ01\t1.5\r\n", "wrong number of fields"),
        (b"PRS1\t2019\tQ01\t1.5\t\tR\r\n", "wrong number of fields"),
        (b"PRS1\t2019\tQ01\t1\t5\t\r\n", "wrong number of fields"),
        (b"garbage\r\n", "wrong number of fields"),
        (b"PRS1\t2019\tQ01\t1.5\t\x00\r\n", "control character"),
        (b"PRS1\t2019\tQ01\t1.5\t\rPRS1\t2019\tQ02\t2.5\t\r\n", "control character"),
        (b"PRS1\t2019\tQ01\t1.5\t\r\r\n", "control character"),
        (b"PRS\xc31\t2019\tQ01\t1.5\t\r\n", "not utf-8"),
        (HEADER, "repeated header"),
        (line("PRS-1", "2019", "Q01", "1"), "bad series_id"),
        (line("", "2019", "Q01", "1"), "bad series_id"),
        (line("1PRS", "2019", "Q01", "1"), "bad series_id"),
    ],
)
def test_malformed_lines_are_dropped_with_their_reason(bad, reason):
    data = HEADER + good(2018) + bad + good(2020)
    parsed = read_bls(data)
    assert rows_of(data) == [("PRS1", 2018, "Q01", 1.5), ("PRS1", 2020, "Q01", 1.5)]
    assert parsed.dropped_rows == 1 and parsed.dropped_reasons == {reason: 1}


def test_periods_must_be_bls_periods():
    valid = ["M01", "M12", "M13", "Q01", "Q05", "S01", "S03", "A01", " Q02 "]
    invalid = ["M00", "M14", "Q00", "Q06", "S04", "A02", "q01", "Q1", "", "Q01X"]
    data = HEADER + b"".join(line("PRS1", "2019", p, "1") for p in valid + invalid)
    parsed = read_bls(data)
    assert [p for _, _, p, _ in rows_of(data)] == [p.strip() for p in valid]
    assert parsed.dropped_reasons == {"bad period": len(invalid)}


@pytest.mark.parametrize(
    "value", ["1e400", "-1e400", "inf", "-inf", "Infinity", "nan", "NaN", "-", "(NA)", ""]
)
@pytest.mark.parametrize("slow", [False, True], ids=["alone", "with-a-dash-row"])
def test_values_that_are_not_finite_numbers_are_dropped(value, slow):
    data = HEADER + good(2018) + line("PRS1", "2019", "Q01", value) + (good(2020, value="-") if slow else b"")
    parsed = read_bls(data)
    assert rows_of(data) == [("PRS1", 2018, "Q01", 1.5)]
    assert parsed.dropped_reasons == {"bad value": 2 if slow else 1}


@pytest.mark.parametrize(
    "value, number",
    [("-0.5", -0.5), (".5", 0.5), ("5.", 5.0), ("+2", 2.0), ("116.953", 116.953), ("1e3", 1000.0)],
)
def test_finite_decimal_forms_are_read_the_same_on_both_paths(value, number):
    clean = HEADER + line("PRS1", "2019", "Q01", value)
    assert rows_of(clean) == [("PRS1", 2019, "Q01", number)]
    dirty = clean + good(2020, value="(NA)")  # one unreadable value: the all-text path
    assert rows_of(dirty) == [("PRS1", 2019, "Q01", number)]
    assert read_bls(dirty).dropped_reasons == {"bad value": 1}


def test_header_only_file_gives_empty_reports_not_an_error():
    for data in (HEADER, HEADER.rstrip(b"\r\n"), HEADER + b"\r\n\r\n", b"\xef\xbb\xbf" + HEADER):
        parsed = read_bls(data)
        assert len(parsed.frame) == 0 and parsed.dropped_rows == 0 and parsed.series_ids == ()
    assert read_bls(HEADER + HEADER).dropped_reasons == {"repeated header": 1}
    out = compute_reports(read_bls(HEADER), POP).to_json()
    assert out["best_year_by_series"] == [] and out["series_with_population"] == []


def test_line_ends_lf_crlf_mixed_and_a_missing_last_one_read_alike():
    crlf = HEADER + good(2018) + good(2019)
    lf = crlf.replace(b"\r\n", b"\n")
    mixed = HEADER + good(2018).replace(b"\r\n", b"\n") + good(2019)
    unterminated = crlf[:-2]
    expected = [("PRS1", 2018, "Q01", 1.5), ("PRS1", 2019, "Q01", 1.5)]
    for data in (crlf, lf, mixed, unterminated, crlf + b"\r\n", b"\xef\xbb\xbf" + lf):
        assert rows_of(data) == expected and read_bls(data).dropped_rows == 0


def test_very_long_lines_are_dropped_not_fatal():
    data = (
        HEADER + good(2018) + b"PRS1\t2019\tQ01\t" + b"9" * 2_000_000 + b"\t\r\n" + b"x" * 3_000_000 + b"\r\n"
    )
    parsed = read_bls(data)
    assert rows_of(data) == [("PRS1", 2018, "Q01", 1.5)]
    assert parsed.dropped_reasons == {"wrong number of fields": 1, "bad value": 1}


def test_header_problems_are_the_only_format_errors():
    with pytest.raises(BlsFormatError, match="carriage return"):
        read_bls(HEADER.replace(b"\r\n", b"\r") + good())
    with pytest.raises(BlsFormatError, match="not UTF-8"):
        read_bls(b"series_id\xff\tyear\tperiod\tvalue\r\n" + good())


def test_dropped_reasons_reach_the_contract_and_the_summary():
    data = HEADER + good(2015) + line("PRS1", "-2019", "Q01", "1") + line("PRS1", "2016", "Q01", "(NA)")
    data += line("PRS1", "2017", "Q01", "-")
    out = compute_reports(
        read_bls(data), POP, series_id="PRS1", inputs={"bls_key": "b", "population_key": "p"}
    )
    doc = out.to_json()
    assert doc["inputs"]["dropped_rows"] == 3
    assert doc["inputs"]["dropped_reasons"] == {"bad year": 1, "bad value": 2}
    assert list(doc["inputs"]["dropped_reasons"]) == ["bad year", "bad value"]
    summary = summary_markdown(doc, "PRS1", "Q01", "file:///x")
    assert "BLS rows dropped as unreadable: 3 (bad year: 1, bad value: 2)" in summary
    assert "3 (bad year: 1, bad value: 2)" in text_report(doc, "PRS1", "Q01")
