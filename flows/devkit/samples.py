"""Sample upstream data the project generates itself, in the real BLS and DataUSA formats.

Tests, the offline run, the demo and the benchmarks use these instead of copies of real data.
Everything is deterministic for a given seed, so tests can compute expectations from the same
generators (`bls_data_rows`, `sample_population`) that produced the bytes.

Layout facts (checked against real `pr` files with `cat -A`): TAB separated, CRLF line endings,
`series_id` left-aligned in 17 characters, `value` right-aligned in 12, an empty
`footnote_codes` column unless a footnote applies, periods Q01-Q05 where Q05 is the annual
average, some series carrying only Q05 rows, and the newest year only partly published.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

# The series the reports look at; every sample `pr` survey carries it with Q01 rows.
REPORT_SERIES_ID = "PRS30006032"

DATA_HEADER = ("series_id", "year", "period", "value", "footnote_codes")
SERIES_ID_WIDTH = 17
VALUE_WIDTH = 12
QUARTERS = ("Q01", "Q02", "Q03", "Q04")
ANNUAL = "Q05"

# ACS 1-year estimates as published (no 1-year estimate exists for 2020).
_KNOWN_POPULATION: dict[int, int] = {
    2013: 316128839,
    2014: 318857056,
    2015: 321418821,
    2016: 323127515,
    2017: 325719178,
    2018: 327167439,
    2019: 328239523,
    2021: 331893745,
    2022: 333287562,
    2023: 334914896,
}

Generation = Literal["tesseract", "legacy"]


@dataclass(frozen=True)
class BlsRow:
    """One row of a BLS time-series data file. `value` is already rounded to what the file shows."""

    series_id: str
    year: int
    period: str
    value: float
    footnote: str = ""


# --------------------------------------------------------------------------- BLS data files


def format_value(value: float) -> str:
    """The shortest decimal that round-trips (as BLS prints: `2.6`, `-4.9`, `116.953`, `0.0`)."""
    text = repr(float(value))
    if "e" in text or "E" in text:  # never produced by the generators, but keep the column numeric
        text = f"{value:.6f}".rstrip("0")
        text = text + "0" if text.endswith(".") else text
    return text


def format_bls_data(rows: Iterable[BlsRow]) -> bytes:
    """A data file exactly as BLS lays it out (header included)."""
    lines = [_data_line(*DATA_HEADER)]
    for row in rows:
        lines.append(
            _data_line(row.series_id, str(row.year), row.period, format_value(row.value), row.footnote)
        )
    return "".join(lines).encode("ascii")


def _data_line(series_id: str, year: str, period: str, value: str, footnote: str) -> str:
    return f"{series_id:<{SERIES_ID_WIDTH}}\t{year}\t{period}\t{value:>{VALUE_WIDTH}}\t{footnote}\r\n"


def _table(header: Iterable[str], rows: Iterable[Iterable[object]]) -> bytes:
    """A plain tab-separated mapping file (pr.period, pr.measure, ...), CRLF."""
    lines = ["\t".join(header)] + ["\t".join(str(c) for c in row) for row in rows]
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


@dataclass(frozen=True)
class _Series:
    series_id: str
    sector: str
    klass: str
    measure: str
    duration: str
    annual_only: bool


_SECTORS = ("3000", "3100", "3200", "8400", "8500", "8800")
_MEASURES = ("01", "02", "03", "04", "05", "06", "07", "08", "09", "10", "11", "12", "13", "20")


def _survey_series(survey: str, rng: random.Random, n_series: int) -> list[_Series]:
    """Series ids shaped like `pr` ones: PR + S + sector(4) + class(1) + measure(2) + duration(1)."""
    prefix = survey.upper()[:2].ljust(2, "X")
    fixed = [
        # The reports' series: sector 3000, all workers, measure 03, % change from previous quarter.
        _Series(f"{prefix}S30006032", "3000", "6", "03", "2", annual_only=False),
        # An annual-only series, as real `pr` has (e.g. PRS30006131).
        _Series(f"{prefix}S30006131", "3000", "6", "13", "1", annual_only=True),
    ]
    seen = {s.series_id for s in fixed}
    series = list(fixed)
    while len(series) < max(n_series, len(fixed)):
        sector = rng.choice(_SECTORS)
        klass = rng.choice(("3", "6"))
        measure = rng.choice(_MEASURES)
        duration = rng.choice(("1", "2", "3"))
        sid = f"{prefix}S{sector}{klass}{measure}{duration}"
        if sid in seen:
            continue
        seen.add(sid)
        series.append(_Series(sid, sector, klass, measure, duration, annual_only=rng.random() < 0.15))
    return sorted(series, key=lambda s: s.series_id)


def bls_data_rows(
    survey: str = "pr",
    seed: int = 0,
    n_series: int = 12,
    years: Iterable[int] = range(1995, 2025),
) -> list[BlsRow]:
    """The rows of the sample `<survey>.data.*` file, sorted by series then year then period.

    The last year is only partly published (Q01 only, no annual average), like the real file.
    Index series (duration 3) have three decimals; percent changes one decimal.
    """
    rng = random.Random(f"{survey}:{seed}")
    series = _survey_series(survey, rng, n_series)
    return _rows(series, sorted(years), rng, partial_last=True)


def _rows(
    series: list[_Series], year_list: list[int], rng: random.Random, partial_last: bool
) -> list[BlsRow]:
    rows: list[BlsRow] = []
    for s in series:
        level = rng.uniform(60.0, 120.0)
        for year in year_list:
            partial = partial_last and year == year_list[-1] and len(year_list) > 1
            periods: tuple[str, ...]
            if s.annual_only:
                periods = () if partial else (ANNUAL,)
            else:
                periods = QUARTERS[:1] if partial else (*QUARTERS, ANNUAL)
            for period in periods:
                if s.duration == "3":
                    level *= 1 + rng.uniform(-0.01, 0.02)
                    value = round(level, 3)
                else:
                    value = round(rng.uniform(-6.0, 8.0), 1)
                footnote = "R" if partial_last and year == year_list[-1] - 1 and rng.random() < 0.2 else ""
                rows.append(BlsRow(s.series_id, year, period, value, footnote))
    return rows


def sample_bls_survey(
    survey: str = "pr",
    seed: int = 0,
    n_series: int = 12,
    years: Iterable[int] = range(1995, 2025),
) -> dict[str, bytes]:
    """File name → bytes for a plausible survey directory (data files, mapping files, docs).

    `<survey>.data.0.Current` holds `years`; `<survey>.data.1.AllData` adds seven earlier years.
    """
    year_list = sorted(years)
    current = bls_data_rows(survey, seed, n_series, year_list)
    series = _survey_series(survey, random.Random(f"{survey}:{seed}"), n_series)
    early = _rows(
        series, list(range(year_list[0] - 7, year_list[0])), random.Random(f"{survey}:{seed}:early"), False
    )
    all_rows = sorted(early + current, key=lambda r: (r.series_id, r.year, r.period))
    s = survey
    files: dict[str, bytes] = {
        f"{s}.data.0.Current": format_bls_data(current),
        f"{s}.data.1.AllData": format_bls_data(all_rows),
        f"{s}.series": _series_file(series, current),
        f"{s}.period": _table(
            ("period", "period_abbr", "period_name"),
            [
                ("Q01", "QTR1", "1st Quarter"),
                ("Q02", "QTR2", "2nd Quarter"),
                ("Q03", "QTR3", "3rd Quarter"),
                ("Q04", "QTR4", "4th Quarter"),
                ("Q05", "AN AV", "Annual Average"),
            ],
        ),
        f"{s}.measure": _table(
            ("measure_code", "measure_text", "display_level", "selectable", "sort_sequence"),
            [(m, f"Measure {m}", 0, "T", i + 1) for i, m in enumerate(_MEASURES)],
        ),
        f"{s}.sector": _table(
            ("sector_code", "sector_name", "display_level", "selectable", "sort_sequence"),
            [(c, f"Sector {c}", 0, "T", i + 1) for i, c in enumerate(_SECTORS)],
        ),
        f"{s}.class": _table(
            ("class_code", "class_text", "display_level", "selectable", "sort_sequence"),
            [(3, "Employees", 0, "T", 2), (6, "All workers", 0, "T", 1)],
        ),
        f"{s}.duration": _table(
            ("duration_code", "duration_text", "display_level", "selectable", "sort_sequence"),
            [
                (1, "% Change same quarter 1 year ago", 0, "T", 1),
                (2, "% Change from previous quarter", 0, "T", 2),
                (3, "Index (2017=100)", 0, "T", 3),
            ],
        ),
        f"{s}.seasonal": _table(
            ("Seasonal_code", "Seasonal_text"), [("S", "Seasonal Adjusted"), ("U", "Not Seasonally Adjusted")]
        ),
        f"{s}.footnote": _table(("footnote_code", "footnote_text"), [("R", "revised")]),
        f"{s}.contacts": (
            f"Sample contacts for survey {s} (generated by the project)\r\n\r\n"
            "E-mail: nobody@example.invalid\r\n"
        ).encode("ascii"),
        f"{s}.txt": (
            f"                Sample survey ({s.upper()})\r\n"
            f"                                    {s}.txt\r\n\r\n"
            "Generated sample data in the BLS time-series layout; not real statistics.\r\n"
        ).encode("ascii"),
    }
    return dict(sorted(files.items()))


def _series_file(series: list[_Series], rows: list[BlsRow]) -> bytes:
    spans: dict[str, tuple[BlsRow, BlsRow]] = {}
    for row in rows:
        first, _ = spans.get(row.series_id, (row, row))
        spans[row.series_id] = (first, row)
    header = (
        "series_id",
        "sector_code",
        "class_code",
        "measure_code",
        "duration_code",
        "seasonal",
        "base_year",
        "footnote_codes",
        "begin_year",
        "begin_period",
        "end_year",
        "end_period",
    )
    lines = ["\t".join([f"{header[0]:<{SERIES_ID_WIDTH}}", *header[1:]])]
    for s in series:
        if s.series_id not in spans:
            continue
        first, last = spans[s.series_id]
        base = "2017" if s.duration == "3" else "-"
        lines.append(
            "\t".join(
                [
                    f"{s.series_id:<{SERIES_ID_WIDTH}}",
                    s.sector,
                    s.klass,
                    s.measure,
                    s.duration,
                    "S",
                    base,
                    "",
                    str(first.year),
                    first.period,
                    str(last.year),
                    last.period,
                ]
            )
        )
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


# --------------------------------------------------------------------------- DataUSA population


def sample_population(
    years: Iterable[int] = range(2013, 2024), missing: Iterable[int] = (2020,)
) -> dict[int, int]:
    """Year → population for the sample body. Published ACS figures where known, else a smooth trend."""
    skip = set(missing)
    result: dict[int, int] = {}
    for year in sorted(years):
        if year in skip:
            continue
        result[year] = _KNOWN_POPULATION.get(year) or int(316128839 * (1.0065 ** (year - 2013)))
    return result


def population_body(
    generation: Generation = "tesseract",
    years: Iterable[int] = range(2013, 2024),
    missing: Iterable[int] = (2020,),
    population: Mapping[int, int] | None = None,
) -> bytes:
    """A DataUSA response body in either API generation, for `sample_population(years, missing)`.

    tesseract (current): `annotations`, `page`, `columns`, `data` rows with int `Year` and float
    `Population`. legacy (retired datausa.io/api/data): rows with `ID Year` int, `Year` string, int
    `Population`, newest year first, plus a `source` list.
    """
    pop = dict(population) if population is not None else sample_population(years, missing)
    if generation == "tesseract":
        doc: dict[str, object] = {
            "annotations": {
                "dataset_link": "http://www.census.gov/programs-surveys/acs/",
                "source_description": "Sample of the American Community Survey shape (generated).",
                "source_name": "Census Bureau",
                "table_id": "B01003",
                "subtopic": "Demographics",
                "topic": "Diversity",
                "dataset_name": "ACS 1-year Estimate",
            },
            "page": {"limit": 0, "offset": 0, "total": len(pop)},
            "columns": ["Nation ID", "Nation", "Year", "Population"],
            "data": [
                {"Nation ID": "01000US", "Nation": "United States", "Year": y, "Population": float(p)}
                for y, p in sorted(pop.items())
            ],
        }
    elif generation == "legacy":
        doc = {
            "data": [
                {
                    "ID Nation": "01000US",
                    "Nation": "United States",
                    "ID Year": y,
                    "Year": str(y),
                    "Population": p,
                    "Slug Nation": "united-states",
                }
                for y, p in sorted(pop.items(), reverse=True)
            ],
            "source": [
                {
                    "measures": ["Population"],
                    "annotations": {
                        "source_name": "Census Bureau",
                        "dataset_name": "ACS 5-year Estimate",
                        "table_id": "B01003",
                        "topic": "Diversity",
                    },
                    "name": "acs_yg_total_population_5",
                    "substitutions": [],
                }
            ],
        }
    else:
        raise ValueError(f"unknown DataUSA generation {generation!r}")
    return json.dumps(doc, separators=(",", ":")).encode("utf-8")


def sample_upstream(
    seed: int = 0, surveys: Iterable[str] = ("pr",)
) -> tuple[dict[str, dict[str, bytes]], bytes]:
    """Everything a sample upstream serves: {survey: files} and the tesseract population body."""
    return {s: sample_bls_survey(s, seed) for s in surveys}, population_body()
