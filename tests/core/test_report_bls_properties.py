"""Properties of the BLS reader on random and hostile files.

`reference` is a plain line-by-line reading of the documented rules (report_maths: YEAR_MIN/MAX,
PERIOD_PATTERN, the drop reasons and their order); the reader must keep exactly the rows it keeps,
with the same numbers, and count exactly the rows it drops, whatever else is in the file.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections import Counter

import pandas as pd
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from flows.core.errors import QuestError
from flows.core.report_maths import _NUMBER_LIKE, BlsData, read_bls

HEADER_NAMES = ["series_id", "year", "period", "value", "footnote_codes"]
HEADER = b"series_id        \tyear\tperiod\t       value\tfootnote_codes"
PERIODS = {f"M{m:02d}" for m in range(1, 14)} | {f"Q0{q}" for q in range(1, 6)} | {"S01", "S02", "S03", "A01"}
NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

Row = tuple[str, int, str, float]


def reference(data: bytes) -> tuple[list[Row], Counter[str]]:
    """The documented rules, one line at a time."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    lines = data.split(b"\n")
    names = [n.strip() for n in lines[0].removesuffix(b"\r").decode().split("\t")]
    rows: list[Row] = []
    dropped: Counter[str] = Counter()
    for raw in lines[1:]:
        raw = raw.removesuffix(b"\r")
        if not raw:
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            dropped["not utf-8"] += 1
            continue
        if "\x00" in text or "\r" in text:
            dropped["control character"] += 1
            continue
        fields = text.split("\t")
        if len(fields) != len(names):
            dropped["wrong number of fields"] += 1
            continue
        field = dict(zip(names, fields, strict=True))
        series, year, period = (field[c].strip(" ") for c in ("series_id", "year", "period"))
        value = field["value"].strip(" \t\n\v\f\r")
        number = float(value) if NUMBER.fullmatch(value) else math.nan
        if series == "series_id":
            dropped["repeated header"] += 1
        elif not (series.isascii() and series.isalnum() and series[0].isalpha()):
            dropped["bad series_id"] += 1
        elif not (len(year) == 4 and year.isascii() and year.isdigit() and 1800 <= int(year) <= 2200):
            dropped["bad year"] += 1
        elif period not in PERIODS:
            dropped["bad period"] += 1
        elif not math.isfinite(number):
            dropped["bad value"] += 1
        else:
            rows.append((series, int(year), period, number))
    return rows, dropped


def rows_of(parsed: BlsData) -> list[Row]:
    f = parsed.frame
    return [
        (str(s), int(y), str(p), float(v))
        for s, y, p, v in zip(f["series_id"], f["year"], f["period"], f["value"], strict=True)
    ]


junk = st.text(alphabet=st.sampled_from(list(" \"'\\x-+.,eE0123456789AQMZ_\x00\x0b\x1aé\u2028")), max_size=6)
series_ids = st.one_of(st.sampled_from(["PRS30006032", "PRS85006092", " PRS1 ", "CUUR0000SA0", "True"]), junk)
years = st.one_of(
    st.integers(1790, 2210).map(str), st.sampled_from([" 2019 ", "2019.0", "-2019", "1e3"]), junk
)
periods = st.one_of(st.sampled_from(sorted(PERIODS) + ["Q06", "M00", "q01", " Q01 "]), junk)
decimals = st.builds(
    lambda whole, frac, neg: f"{'-' if neg else ''}{whole}{'.' + frac if frac else ''}",
    st.integers(0, 99_999_999),
    st.text(alphabet="0123456789", max_size=6),
    st.booleans(),
)
values = st.one_of(
    decimals,
    decimals,
    st.sampled_from(["-", "(NA)", "", "nan", "inf", "-Infinity", "1e400", "1e3", "+1.5", ".5", "\x0b2"]),
    junk,
)
footnotes = st.one_of(st.sampled_from(["", "R", '"', '"P', "'"]), junk)


@st.composite
def data_lines(draw: st.DrawFn) -> bytes:
    fields = [draw(series_ids), draw(years), draw(periods), draw(values), draw(footnotes)]
    text = "\t".join(fields).encode("utf-8")
    damage = draw(
        st.sampled_from(
            ["none"] * 6
            + ["extra tab", "drop field", "nul", "lone cr", "latin-1", "blank", "header", "bytes"]
        )
    )
    if damage == "extra tab":
        text = text.replace(b"\t", b"\t\t", 1)
    elif damage == "drop field":
        text = text.rsplit(b"\t", 1)[0]
    elif damage == "nul":
        text = text[:3] + b"\x00" + text[3:]
    elif damage == "lone cr":
        text = text[:5] + b"\r" + text[5:]
    elif damage == "latin-1":
        text = text[:2] + b"\xe9" + text[2:]
    elif damage == "blank":
        text = b""
    elif damage == "header":
        text = HEADER
    elif damage == "bytes":
        text = draw(st.binary(max_size=40)).replace(b"\n", b"")
    return text + draw(st.sampled_from([b"\r\n", b"\n"]))


@st.composite
def bls_files(draw: st.DrawFn) -> bytes:
    body = b"".join(draw(st.lists(data_lines(), max_size=25)))
    if body and draw(st.booleans()):
        body = body.removesuffix(b"\n").removesuffix(b"\r")  # no line end after the last line
    bom = b"\xef\xbb\xbf" if draw(st.booleans()) else b""
    return bom + HEADER + draw(st.sampled_from([b"\r\n", b"\n"])) + body


@FAST
@given(bls_files())
@example(HEADER + b"\r\nPRS1\t99999999999999999999\tQ01\t1\t\r\nPRS1\t2019\tQ01\t-\t\r\n")
@example(HEADER + b'\r\nPRS1\t2019\tQ01\t1\t"\r\nPRS1\t2020\tQ01\t2\t\r\nPRS1\t2021\tQ01\t3\t"\r\n')
def test_reader_keeps_and_counts_exactly_what_the_rules_say(data):
    expected_rows, expected_dropped = reference(data)
    parsed = read_bls(data)
    assert rows_of(parsed) == expected_rows
    assert parsed.dropped_reasons == dict(expected_dropped)
    assert parsed.dropped_rows == sum(expected_dropped.values())
    assert set(parsed.series_ids) >= {r[0] for r in expected_rows}


@FAST
@given(st.lists(values, min_size=1, max_size=8))
def test_a_value_reads_the_same_whatever_its_neighbours(texts):
    """The fast path (one typed parse) and the all-text path (after any unparseable value) agree."""
    lines = [f"PRS1\t{2000 + i}\tQ01\t{t}\t\r\n".encode() for i, t in enumerate(texts)]
    alone = read_bls(HEADER + b"\r\n" + b"".join(lines))
    with_dash = read_bls(HEADER + b"\r\n" + b"".join(lines) + b"PRS1\t2100\tQ01\t-\t\r\n")
    assert rows_of(with_dash) == rows_of(alone)
    assert with_dash.dropped_rows == alone.dropped_rows + 1


@FAST
@given(st.one_of(st.binary(max_size=300), st.builds(lambda b: HEADER + b, st.binary(max_size=300))))
def test_random_bytes_raise_nothing_but_quest_errors(data):
    try:
        parsed = read_bls(data)
    except QuestError:
        return
    assert parsed.dropped_rows == sum(parsed.dropped_reasons.values())
    assert parsed.frame["value"].map(math.isfinite).all()
    assert parsed.frame["year"].between(1800, 2200).all()


# The all-text path screens value texts with `_NUMBER_LIKE` before pandas' float parser reads them.
# It was a superset of what the parser accepts (`1e` passed it) and backtracked quadratically
# (`[0-9]+\.?[0-9]*` on digits ending in `x`); it is now exactly what the parser accepts, in one pass.
_OLD_NUMBER_LIKE = re.compile(
    r"[ \t\n\v\f\r]*[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]*)?[ \t\n\v\f\r]*"
)


def _float_parser_accepts(text: str) -> bool:
    frame = io.BytesIO(text.encode() + b"\n")
    try:
        values = pd.read_csv(
            frame,
            sep="\t",
            header=None,
            names=[0],
            dtype={0: "float64"},
            quoting=csv.QUOTE_NONE,
            na_filter=False,
        )[0]
    except (ValueError, OverflowError):
        return False
    return len(values) == 1 and not math.isnan(values[0])


_number_texts = st.one_of(
    st.text(alphabet="0123456789.eE+- \v\fx", max_size=12),
    st.from_regex(_OLD_NUMBER_LIKE, fullmatch=True).filter(lambda t: "\n" not in t and "\r" not in t),
)


@settings(max_examples=400, deadline=None)
@given(_number_texts.filter(lambda t: "\t" not in t))
@example("1e")
@example("-.5E+")
@example(" 1. ")
@example("1e400")
def test_number_like_is_exactly_what_the_float_parser_accepts(text):
    assert bool(_NUMBER_LIKE.fullmatch(text)) == _float_parser_accepts(text)
    assert bool(_NUMBER_LIKE.fullmatch(text)) == bool(
        _OLD_NUMBER_LIKE.fullmatch(text) and _float_parser_accepts(text)
    )
