"""The report maths: pure pandas, no I/O, no Prefect. The reports flow (`flows/reports.py`) is the shell.

Inputs are the bytes of a BLS time-series data file (`pr.data.0.Current`) and the population as
(year, population) pairs (`flows.core.population.normalise_population` reads either API generation).
Outputs are plain frames plus `Reports.to_json()`, the JSON object `quest reports --json` prints
(a contract read by checks outside the project).
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from flows.core.errors import BlsFormatError, PopulationDataError

POPULATION_START_YEAR = 2013
POPULATION_END_YEAR = 2018
DEFAULT_SERIES_ID = "PRS30006032"
DEFAULT_PERIOD = "Q01"
QUARTERS: tuple[str, ...] = ("Q01", "Q02", "Q03", "Q04")
# Sums are compared after rounding, so floating-point noise (0.1 + 0.2) cannot pick the year.
SUM_DECIMALS = 6
# Above this many series x year cells the best-year report groups instead of filling a dense grid.
DENSE_CELLS_LIMIT = 20_000_000

BLS_COLUMNS: tuple[str, ...] = ("series_id", "year", "period", "value")


@dataclass(frozen=True)
class BlsData:
    """The usable rows of a BLS data file, strings stripped, plus the series seen and rows dropped."""

    frame: pd.DataFrame  # series_id (category), year (int64), period (category), value (float64)
    series_ids: tuple[str, ...]  # every series in the file, sorted, including ones with no usable row
    dropped_rows: int
    dropped_reasons: Mapping[str, int] = field(default_factory=dict)  # reason -> rows, in DROP_REASONS order


@dataclass(frozen=True)
class PopulationStats:
    start_year: int
    end_year: int
    years: tuple[int, ...]
    missing_years: tuple[int, ...]
    mean: float
    std: float | None  # sample std (ddof=1); None with fewer than two years
    std_population: float  # population std (ddof=0)

    def to_json(self) -> dict[str, Any]:
        return {
            "start_year": self.start_year,
            "end_year": self.end_year,
            "years": list(self.years),
            "mean": self.mean,
            "std": self.std,
            "std_population": self.std_population,
            "missing_years": list(self.missing_years),
        }


@dataclass(frozen=True)
class Reports:
    population_stats: PopulationStats
    best_year: pd.DataFrame  # series_id, year (Int64, <NA> = no data), value (Float64)
    series_with_population: pd.DataFrame  # series_id, period, year, value, population (Int64)
    inputs: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The contract object of `quest reports --json` and the reports flow's return value."""
        return {
            "population_stats": self.population_stats.to_json(),
            "best_year_by_series": frame_records(self.best_year),
            "series_with_population": frame_records(self.series_with_population),
            "inputs": dict(self.inputs),
        }


# --------------------------------------------------------------------------- loading

# Row rules. BLS files are plain TAB-separated text: no quoting, no escapes, LF or CRLF line ends.
# A year is 4 ASCII digits in a range that holds every BLS series (the oldest, CPI, start in 1913)
# and refuses garbage such as 0000, 9999, -2019, 1e3 or 2019.0.
YEAR_MIN = 1800
YEAR_MAX = 2200
# Periods as BLS writes them: monthly M01-M12 (+ M13 annual), quarterly Q01-Q04 (+ Q05 annual),
# semi-annual S01-S02 (+ S03 annual), annual A01.
PERIOD_PATTERN = re.compile(r"M(?:0[1-9]|1[0-3])|Q0[1-5]|S0[1-3]|A01")
# Series ids are a survey prefix of letters then letters and digits (PRS30006032, CUUR0000SA0).
SERIES_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9]*")
YEAR_PATTERN = re.compile(r"[0-9]{4}")
# Fields are padded with spaces (left-aligned ids, right-aligned values); only spaces are padding.
PAD = " "
# A value is a finite number in decimal notation, read by pandas' C float parser: BLS prints `2.6`,
# `-4.9`, `116.953`; a sign, a bare point (`.5`, `5.`) or an exponent (`1e3`) read as the number they
# write. Markers (`-`, `(NA)`, blank), `nan`, `inf` and overflowing figures (`1e400`) are dropped.
# _NUMBER_LIKE is what that parser accepts (an exponent needs a digit: it refuses `1e`); the numbers
# always come from the parser itself, so a row reads the same on the fast path and on the all-text
# path. Its repeats are possessive (`++`, `*+`, `?+`: never given back), which matches the same texts
# because each is followed by characters it cannot match, and fails in one pass: with `[0-9]+\.?[0-9]*`
# 16 kB of digits ending in `x` took 11 s (every split of the digits was tried). Texts the parser
# refuses are isolated by halving, one parse per half; the pattern keeps them out (thousands of `5e`
# values cost one parse, not thousands).
_BLANKS = r"[ \t\n\v\f\r]*+"
_NUMBER_LIKE = re.compile(
    _BLANKS + r"[+-]?+(?:[0-9]++(?:\.[0-9]*+)?+|\.[0-9]++)" + r"(?:[eE][+-]?+[0-9]++)?+" + _BLANKS
)
_BOM = b"\xef\xbb\xbf"
_NOT_SEPARATORS = bytes(b for b in range(256) if b not in b"\t\n\r\x00")

# Why a row was dropped, in the order the checks apply (a row is counted once, under its first reason).
NOT_UTF8 = "not utf-8"
CONTROL = "control character"  # NUL, or a carriage return that does not end the line
FIELD_COUNT = "wrong number of fields"
REPEATED_HEADER = "repeated header"
BAD_SERIES = "bad series_id"
BAD_YEAR = "bad year"
BAD_PERIOD = "bad period"
BAD_VALUE = "bad value"
DROP_REASONS: tuple[str, ...] = (
    NOT_UTF8,
    CONTROL,
    FIELD_COUNT,
    REPEATED_HEADER,
    BAD_SERIES,
    BAD_YEAR,
    BAD_PERIOD,
    BAD_VALUE,
)


@dataclass(frozen=True)
class _Screened:
    """The header line plus the data lines worth parsing, and the lines dropped before parsing."""

    data: bytes
    rows: int
    dropped: dict[str, int]


def read_bls(data: bytes) -> BlsData:
    """Parse a BLS data file; every row that cannot be read is dropped and counted by reason.

    Lines are screened first (UTF-8, control characters, field count), then the four columns are
    parsed once and checked per distinct text (series_id, year, period) or per number (value), so
    the cost stays one typed pandas parse on clean files. Quotes are ordinary characters; empty
    lines are not rows. Raises BlsFormatError only for a file without a usable header.
    """
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    if not data or data.isspace():  # isspace stops at the first other byte; strip() would copy the file
        raise BlsFormatError("the BLS file is empty")
    names, start = _header(data)
    positions = [names.index(c) for c in BLS_COLUMNS]
    screened = _screen_lines(data, start, len(names))
    columns = _parse_columns(screened, len(names), positions)
    return _usable_rows(columns, screened.dropped)


def _header(data: bytes) -> tuple[list[str], int]:
    """Column names of the first line, and where the data lines start."""
    end = data.find(b"\n")
    start = len(data) if end < 0 else end + 1
    raw = data[: len(data) if end < 0 else end]
    raw = raw[:-1] if raw.endswith(b"\r") else raw
    if b"\r" in raw:
        raise BlsFormatError("the BLS header line holds a carriage return: lines must end in LF or CRLF")
    try:
        header = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BlsFormatError(f"the BLS header line is not UTF-8: {raw[:120]!r}") from exc
    names = [name.strip() for name in header.split("\t")]
    missing = [c for c in BLS_COLUMNS if c not in names]
    if missing:
        raise BlsFormatError(
            f"the BLS file has no column(s) {', '.join(missing)} (tab-separated header: {header[:120]!r})"
        )
    if len(set(names)) != len(names):
        raise BlsFormatError(f"the BLS file repeats a column name: {names[:20]}")
    return names, start


def _screen_lines(data: bytes, start: int, n_fields: int) -> _Screened:
    """Keep the lines pandas can split safely; count the others. Clean files are certified in one pass."""
    rows = _clean_line_count(data, start, n_fields)
    if rows is not None:
        return _Screened(data, rows, {})
    return _screen_each_line(data, np.frombuffer(data, dtype=np.uint8)[start:], start, n_fields)


def _clean_line_count(data: bytes, start: int, n_fields: int) -> int | None:
    """The number of data lines when every one is UTF-8 with `n_fields - 1` tabs, one kind of line end
    and no NUL or stray CR; else None. One C-speed pass: drop every byte but TAB, LF, CR and NUL, and
    compare what is left with the pattern a clean file leaves."""
    if not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return None
    left = data.translate(None, _NOT_SEPARATORS)[len(data[:start].translate(None, _NOT_SEPARATORS)) :]
    tabs = b"\t" * (n_fields - 1)
    unterminated = start < len(data) and not data.endswith(b"\n")
    if unterminated:
        if not left.endswith(tabs):
            return None
        left = left[: len(left) - len(tabs)]
    for line_end in (b"\r\n", b"\n"):
        line = tabs + line_end
        count, rest = divmod(len(left), len(line))
        if not rest and left == line * count:
            return count + unterminated
    return None


def _screen_each_line(data: bytes, view: np.ndarray, start: int, n_fields: int) -> _Screened:
    """The per-line screen, vectorised: a line goes for bad UTF-8, a NUL or stray CR, or its field count."""
    ends = np.flatnonzero(view == 10)
    if len(view) and view[-1] != 10:
        ends = np.append(ends, len(view))
    starts = np.concatenate(([0], ends[:-1] + 1)).astype(np.int64)
    has_cr = (ends > starts) & (view[np.maximum(ends - 1, 0)] == 13)
    content_end = ends - has_cr
    tabs = np.flatnonzero(view == 9)
    fields_ok = np.searchsorted(tabs, content_end) - np.searchsorted(tabs, starts) == n_fields - 1
    blank = content_end == starts

    control = np.zeros(len(ends), dtype=bool)
    nul = np.flatnonzero(view == 0)
    control[np.searchsorted(ends, nul)] = True
    cr = np.flatnonzero(view == 13)
    cr_line = np.searchsorted(ends, cr)
    control[cr_line[cr != content_end[cr_line]]] = True

    not_utf8 = np.zeros(len(ends), dtype=bool)
    if not data.isascii():
        for line in np.unique(np.searchsorted(ends, np.flatnonzero(view >= 0x80))):
            try:
                data[start + starts[line] : start + content_end[line]].decode("utf-8")
            except UnicodeDecodeError:
                not_utf8[line] = True

    dropped: dict[str, int] = {}
    remaining = ~blank
    for reason, bad in ((NOT_UTF8, not_utf8), (CONTROL, control), (FIELD_COUNT, ~fields_ok)):
        hit = int(np.count_nonzero(bad & remaining))
        if hit:
            dropped[reason] = hit
        remaining &= ~bad
    return _Screened(_join_lines(data, start, starts, ends, remaining), int(remaining.sum()), dropped)


def _join_lines(data: bytes, start: int, starts: np.ndarray, ends: np.ndarray, keep: np.ndarray) -> bytes:
    """The header plus the kept lines, copied as runs of consecutive lines (few runs when few lines go)."""
    edges = np.flatnonzero(np.diff(np.concatenate(([False], keep, [False])).astype(np.int8)))
    pieces = [data[:start]]
    for first, stop in zip(edges[::2], edges[1::2], strict=True):
        piece = data[start + starts[first] : start + ends[stop - 1] + 1]
        pieces.append(piece if piece.endswith(b"\n") else piece + b"\n")
    return b"".join(pieces)


@dataclass(frozen=True)
class _Columns:
    """The four columns as codes into distinct texts; `value` is numbers (NaN = unreadable) per row."""

    series: tuple[np.ndarray, list[str]]
    year: tuple[np.ndarray, list[str]]
    period: tuple[np.ndarray, list[str]]
    value: np.ndarray


def _parse_columns(screened: _Screened, n_fields: int, positions: list[int]) -> _Columns:
    """One typed parse (value as float64); any unparseable value makes a second, all-text parse."""
    series_at, year_at, period_at, value_at = positions
    options: dict[str, Any] = {
        "sep": "\t",
        "header": 0,
        "names": list(range(n_fields)),
        "usecols": positions,
        "quoting": csv.QUOTE_NONE,
        "na_filter": False,
        "encoding": "utf-8",
        "skip_blank_lines": False,
    }
    typed: dict[int, Any] = {
        series_at: "category",
        year_at: object,
        period_at: "category",
        value_at: "float64",
    }
    try:
        frame: pd.DataFrame = pd.read_csv(io.BytesIO(screened.data), dtype=typed, **options)
        series, period = _distinct(frame[series_at]), _distinct(frame[period_at])
        if all(isinstance(t, str) for t in series[1] + period[1]):
            columns = _Columns(series, _distinct(frame[year_at]), period, frame[value_at].to_numpy())
            return _checked(columns, screened.rows)
    except (ValueError, OverflowError):
        pass  # some value is not a number: read every column as text
    try:
        frame = pd.read_csv(io.BytesIO(screened.data), dtype=object, **options)
    except (ValueError, OverflowError) as exc:
        raise BlsFormatError(f"the BLS file cannot be parsed as tab-separated data: {exc}") from exc
    value_codes, value_texts = _distinct(frame[value_at])
    columns = _Columns(
        _distinct(frame[series_at]),
        _distinct(frame[year_at]),
        _distinct(frame[period_at]),
        _numbers(value_texts)[value_codes],
    )
    return _checked(columns, screened.rows)


def _checked(columns: _Columns, rows: int) -> _Columns:
    if len(columns.value) != rows:  # the screen guarantees one row per line; refuse rather than guess
        raise BlsFormatError(f"the BLS file gave {len(columns.value)} rows for {rows} lines")
    return columns


def _distinct(column: pd.Series) -> tuple[np.ndarray, list[str]]:
    """(codes, distinct texts): rules are checked once per distinct text, not once per row."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        return column.cat.codes.to_numpy(dtype=np.int64), list(column.cat.categories)
    codes, uniques = pd.factorize(column.to_numpy(dtype=object))
    return codes.astype(np.int64), list(uniques)


def _numbers(texts: list[str]) -> np.ndarray:
    """Each text as the C float parser reads it (the fast path's parser), NaN where it cannot."""
    result = np.full(len(texts) + 1, np.nan)  # the extra NaN is what code -1 picks
    candidates = [i for i, text in enumerate(texts) if isinstance(text, str) and _NUMBER_LIKE.fullmatch(text)]
    if candidates:
        result[candidates] = _parse_floats([texts[i] for i in candidates])
    return result


def _parse_floats(texts: list[str]) -> np.ndarray:
    """pandas' own float parse of one text per line; halves the list to isolate what it refuses."""
    try:
        frame = pd.read_csv(
            io.BytesIO("\n".join(texts).encode("utf-8") + b"\n"),
            sep="\t",
            header=None,
            names=[0],
            dtype={0: "float64"},
            quoting=csv.QUOTE_NONE,
            na_filter=False,
            skip_blank_lines=False,
        )
        values = frame[0].to_numpy(dtype=np.float64)
        if len(values) == len(texts):
            return values
    except (ValueError, OverflowError):
        pass
    if len(texts) == 1:
        return np.array([np.nan])
    middle = len(texts) // 2
    return np.concatenate((_parse_floats(texts[:middle]), _parse_floats(texts[middle:])))


def _text_rule(texts: list[str], rule: Callable[[str], Any]) -> list[Any]:
    return [rule(t.strip(PAD)) if isinstance(t, str) else None for t in texts]


def _series_id(text: str) -> str | None:
    return text if SERIES_PATTERN.fullmatch(text) else None


def _year(text: str) -> int | None:
    if not YEAR_PATTERN.fullmatch(text):
        return None
    year = int(text)
    return year if YEAR_MIN <= year <= YEAR_MAX else None


def _period(text: str) -> str | None:
    return text if PERIOD_PATTERN.fullmatch(text) else None


def _recode(codes: np.ndarray, cleaned: list[str | None]) -> tuple[np.ndarray, list[str]]:
    """Codes into the sorted distinct valid texts (-1 where the text is not valid)."""
    categories = sorted({c for c in cleaned if c is not None})
    index = {c: i for i, c in enumerate(categories)}
    lookup = np.array([index[c] if c is not None else -1 for c in cleaned] + [-1], dtype=np.int64)
    return lookup[codes], categories


def _usable_rows(columns: _Columns, dropped: dict[str, int]) -> BlsData:
    """Apply the row rules, count each dropped row once under its first failing rule, build the frame."""
    series_codes, series_texts = columns.series
    series_clean = _text_rule(series_texts, _series_id)
    series, series_ids = _recode(series_codes, series_clean)
    period, periods = _recode(columns.period[0], _text_rule(columns.period[1], _period))
    year_values = _text_rule(columns.year[1], _year)
    year_lookup = np.array([y if y is not None else -1 for y in year_values] + [-1], dtype=np.int64)
    year = year_lookup[columns.year[0]]
    value = columns.value
    counts = dict(dropped)
    good = (series >= 0) & (year >= 0) & (period >= 0) & np.isfinite(value)
    if not good.all():
        header = np.array([t == "series_id" for t in _text_rule(series_texts, str)] + [False])[series_codes]
        remaining = np.ones(len(value), dtype=bool)
        checks = (
            (REPEATED_HEADER, header),
            (BAD_SERIES, series < 0),
            (BAD_YEAR, year < 0),
            (BAD_PERIOD, period < 0),
            (BAD_VALUE, ~np.isfinite(value)),
        )
        for reason, bad in checks:
            hit = int(np.count_nonzero(bad & remaining))
            if hit:
                counts[reason] = counts.get(reason, 0) + hit
            remaining &= ~bad
        series, year, period, value = series[good], year[good], period[good], value[good]
    frame = pd.DataFrame(
        {
            "series_id": pd.Categorical.from_codes(series, categories=pd.Index(series_ids, dtype=object)),
            "year": year,
            "period": pd.Categorical.from_codes(period, categories=pd.Index(periods, dtype=object)),
            "value": value,
        }
    )
    reasons = {r: counts[r] for r in DROP_REASONS if counts.get(r)}
    return BlsData(
        frame=frame,
        series_ids=tuple(series_ids),
        dropped_rows=sum(reasons.values()),
        dropped_reasons=reasons,
    )


def population_by_year(pairs: Iterable[tuple[int, int]]) -> dict[int, int]:
    """Year → population; a year given twice with different values is an error, not a silent pick."""
    result: dict[int, int] = {}
    for year, population in pairs:
        year, population = int(year), int(population)
        if year in result and result[year] != population:
            raise PopulationDataError(
                f"the population data gives {year} twice: {result[year]} and {population}"
            )
        result[year] = population
    return result


# --------------------------------------------------------------------------- the three reports


def population_stats(
    population: Mapping[int, int],
    start_year: int = POPULATION_START_YEAR,
    end_year: int = POPULATION_END_YEAR,
) -> PopulationStats:
    """Mean and std of the annual population over [start_year, end_year]; missing years are reported."""
    wanted = range(start_year, end_year + 1)
    years = tuple(y for y in wanted if y in population)
    missing = tuple(y for y in wanted if y not in population)
    if not years:
        raise PopulationDataError(
            f"the population data has no year in {start_year}-{end_year} "
            f"(it has {', '.join(map(str, sorted(population))) or 'no years'})"
        )
    values = pd.Series([population[y] for y in years], dtype="float64")
    std = float(values.std(ddof=1))
    return PopulationStats(
        start_year=start_year,
        end_year=end_year,
        years=years,
        missing_years=missing,
        mean=float(values.mean()),
        std=None if math.isnan(std) else std,
        std_population=float(values.std(ddof=0)),
    )


def best_year_by_series(
    bls: BlsData, quarters_only: bool = False, dense_limit: int = DENSE_CELLS_LIMIT
) -> pd.DataFrame:
    """For every series, the year whose summed value is largest (rounded sums; ties → earliest year).

    By default every period counts (Q05 is BLS's annual figure; Q05-only series must appear).
    With `quarters_only`, Q01-Q04 only, and series without quarterly rows get year/value <NA>.
    """
    frame = bls.frame
    if quarters_only:
        frame = frame[frame["period"].isin(QUARTERS)]
    categories = frame["series_id"].cat.categories
    series_codes = frame["series_id"].cat.codes.to_numpy()
    year_codes, years = pd.factorize(frame["year"].to_numpy(), sort=True)
    if len(categories) * max(len(years), 1) <= dense_limit:
        best_year, best_value = _best_dense(
            series_codes, year_codes, np.asarray(years), frame, len(categories)
        )
    else:
        best_year, best_value = _best_grouped(frame, categories)
    result = pd.DataFrame(
        {
            "series_id": pd.Series(categories.astype(str), dtype="str"),
            "year": pd.array(best_year, dtype="Int64"),
            "value": pd.array(best_value, dtype="Float64"),
        }
    )
    result = result[result["series_id"].isin(bls.series_ids)]
    return result.sort_values("series_id", kind="stable").reset_index(drop=True)


def _best_dense(
    series_codes: np.ndarray, year_codes: np.ndarray, years: np.ndarray, frame: pd.DataFrame, n_series: int
) -> tuple[list[int | None], list[float | None]]:
    """One pass of bincount into a (series x year) grid: O(rows), no sort, no Python-level groups."""
    n_years = max(len(years), 1)
    cell = series_codes.astype(np.int64) * n_years + year_codes
    size = n_series * n_years
    sums = np.bincount(cell, weights=frame["value"].to_numpy(), minlength=size).reshape(n_series, n_years)
    present = np.bincount(cell, minlength=size).reshape(n_series, n_years) > 0
    sums = np.where(present, np.round(sums, SUM_DECIMALS), -np.inf)
    # argmax returns the first maximum and years are sorted: the earliest year wins a tie.
    pick = np.asarray(sums.argmax(axis=1) if len(years) else np.zeros(n_series, dtype=np.int64))
    has = np.asarray(present.any(axis=1) if len(years) else np.zeros(n_series, dtype=bool))
    best_year = [int(years[j]) if h else None for j, h in zip(pick, has, strict=True)]
    best_value = [float(sums[i, j]) if h else None for i, (j, h) in enumerate(zip(pick, has, strict=True))]
    return best_year, best_value


def _best_grouped(frame: pd.DataFrame, categories: pd.Index) -> tuple[list[int | None], list[float | None]]:
    """The same rule through groupby, for files whose series x years grid would be too large."""
    sums = frame.groupby(["series_id", "year"], observed=True, sort=True)["value"].sum().round(SUM_DECIMALS)
    best: dict[str, tuple[int, float]] = {}
    if len(sums):
        top = sums.loc[sums.groupby(level="series_id", observed=True).idxmax()]
        best = {str(key[0]): (int(key[1]), float(v)) for key, v in top.items() if isinstance(key, tuple)}
    names_ = [str(c) for c in categories]
    return [best[n][0] if n in best else None for n in names_], [
        best[n][1] if n in best else None for n in names_
    ]


def series_with_population(
    bls: BlsData,
    population: Mapping[int, int],
    series_id: str = DEFAULT_SERIES_ID,
    period: str = DEFAULT_PERIOD,
) -> pd.DataFrame:
    """Every year's value of one series and period, with that year's population (<NA> where unknown)."""
    series_id, period = series_id.strip(), period.strip()
    frame = bls.frame
    rows = frame[(frame["series_id"] == series_id) & (frame["period"] == period)]
    rows = rows.sort_values("year", kind="stable")
    years = rows["year"].to_numpy()
    pops = pd.array([population.get(int(y)) for y in years], dtype="Int64")
    return pd.DataFrame(
        {
            "series_id": pd.Series([series_id] * len(rows), dtype="str"),
            "period": pd.Series([period] * len(rows), dtype="str"),
            "year": pd.array(years, dtype="Int64"),
            "value": pd.array(rows["value"].to_numpy(), dtype="Float64"),
            "population": pops,
        }
    )


def compute_reports(
    bls: BlsData,
    population: Mapping[int, int],
    *,
    quarters_only: bool = False,
    series_id: str = DEFAULT_SERIES_ID,
    period: str = DEFAULT_PERIOD,
    inputs: Mapping[str, Any] | None = None,
) -> Reports:
    """All three reports; `inputs` (keys read) is carried into the result with the rows dropped and why."""
    return Reports(
        population_stats=population_stats(population),
        best_year=best_year_by_series(bls, quarters_only=quarters_only),
        series_with_population=series_with_population(bls, population, series_id, period),
        inputs={
            **(inputs or {}),
            "dropped_rows": bls.dropped_rows,
            "dropped_reasons": dict(bls.dropped_reasons),
        },
    )


# --------------------------------------------------------------------------- JSON


def json_scalar(value: Any) -> Any:
    """numpy/pandas scalars → plain Python; NA/NaN → None (JSON has no NaN)."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def frame_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    columns = list(frame.columns)
    return [
        {c: json_scalar(v) for c, v in zip(columns, row, strict=True)}
        for row in frame.itertuples(index=False, name=None)
    ]
