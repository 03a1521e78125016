"""The report maths: pure pandas, no I/O, no Prefect. The reports flow (`flows/reports.py`) is the shell.

Inputs are the bytes of a BLS time-series data file (`pr.data.0.Current`) and the population as
(year, population) pairs (`flows.sources.datausa.normalise_population` reads either API generation).
Outputs are plain frames plus `Reports.to_json()`, the JSON object `quest reports --json` prints
(a contract read by checks outside the project).
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from flows.errors import QuestError

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


class BlsFormatError(QuestError):
    """The BLS file is not a tab-separated time-series data file."""


class PopulationDataError(QuestError):
    """The population data cannot give the requested statistics."""


@dataclass(frozen=True)
class BlsData:
    """The usable rows of a BLS data file, strings stripped, plus the series seen and rows dropped."""

    frame: pd.DataFrame  # series_id (category), year (int64), period (category), value (float64)
    series_ids: tuple[str, ...]  # every series in the file, sorted, including ones with no usable row
    dropped_rows: int


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


def read_bls(data: bytes) -> BlsData:
    """Parse a BLS data file: tab-separated, CRLF, padded headers and strings, left-padded values.

    Headers and string columns are stripped before anything filters or joins on them. Rows whose
    value (or year) is not a finite number are dropped and counted. Clean files (the normal case)
    take one fast typed parse; only a file with bad values pays for string-to-number coercion.
    """
    if not data.strip():
        raise BlsFormatError("the BLS file is empty")
    header = data.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", errors="replace")
    names = [name.strip() for name in header.split("\t")]
    missing = [c for c in BLS_COLUMNS if c not in names]
    if missing:
        raise BlsFormatError(
            f"the BLS file has no column(s) {', '.join(missing)} (tab-separated header: {header[:120]!r})"
        )
    if len(set(names)) != len(names):
        raise BlsFormatError(f"the BLS file repeats a column name: {names}")
    usecols = [names.index(c) for c in BLS_COLUMNS]
    options: dict[str, Any] = {"sep": "\t", "header": 0, "names": names, "usecols": usecols}
    try:
        frame = pd.read_csv(
            io.BytesIO(data),
            dtype={"series_id": "category", "period": "category", "year": "int64", "value": "float64"},
            **options,
        )
        frame = frame[list(BLS_COLUMNS)]
    except (ValueError, TypeError):
        frame = None
    except pd.errors.ParserError as exc:
        raise BlsFormatError(f"the BLS file cannot be parsed as tab-separated data: {exc}") from exc
    if frame is None or frame["value"].isna().any() or not np.isfinite(frame["value"].to_numpy()).all():
        frame = _read_bls_coercing(data, options)
    series = _strip_categories(frame["series_id"])
    frame = frame.assign(series_id=series, period=_strip_categories(frame["period"]))
    all_series = tuple(str(s) for s in series.cat.categories if str(s))
    usable = frame["value"].notna() & frame["series_id"].notna() & (frame["series_id"] != "")
    dropped = int((~usable).sum())
    if dropped:
        frame = frame[usable].reset_index(drop=True)
    return BlsData(frame=frame, series_ids=tuple(sorted(all_series)), dropped_rows=dropped)


def _read_bls_coercing(data: bytes, options: dict[str, Any]) -> pd.DataFrame:
    """The slow path: read value and year as text and coerce; what is not a finite number becomes NaN."""
    try:
        frame = pd.read_csv(
            io.BytesIO(data),
            dtype={"series_id": "category", "period": "category", "year": "str", "value": "str"},
            keep_default_na=False,
            **options,
        )[list(BLS_COLUMNS)]
    except (ValueError, pd.errors.ParserError) as exc:
        raise BlsFormatError(f"the BLS file cannot be parsed as tab-separated data: {exc}") from exc
    value = pd.to_numeric(frame["value"].str.strip(), errors="coerce").astype("float64")
    value = value.where(np.isfinite(value.to_numpy()))
    year = pd.to_numeric(frame["year"].str.strip(), errors="coerce").astype("float64")
    good_year = year.notna() & (year == year.round())
    value = value.where(good_year)
    return frame.assign(value=value, year=year.where(good_year, 0).astype("int64"))


def _strip_categories(column: pd.Series) -> pd.Series:
    """Strip a categorical string column by stripping its (few) categories, not its (many) rows."""
    if not isinstance(column.dtype, pd.CategoricalDtype):
        column = column.astype("category")
    cats = column.cat.categories
    stripped = np.array([str(c).strip() for c in cats], dtype=object)
    uniq, inverse = np.unique(stripped, return_inverse=True) if len(stripped) else (stripped, stripped)
    codes = column.cat.codes.to_numpy()
    new_codes = np.where(codes >= 0, np.asarray(inverse, dtype=np.int64)[np.maximum(codes, 0)], -1)
    return pd.Series(
        pd.Categorical.from_codes(new_codes, categories=pd.Index(list(uniq), dtype=object)),
        index=column.index,
        name=column.name,
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
    pick = sums.argmax(axis=1) if len(years) else np.zeros(n_series, dtype=np.int64)
    has = present.any(axis=1) if len(years) else np.zeros(n_series, dtype=bool)
    best_year = [int(years[j]) if h else None for j, h in zip(pick, has, strict=True)]
    best_value = [float(sums[i, j]) if h else None for i, (j, h) in enumerate(zip(pick, has, strict=True))]
    return best_year, best_value


def _best_grouped(frame: pd.DataFrame, categories: pd.Index) -> tuple[list[int | None], list[float | None]]:
    """The same rule through groupby, for files whose series x years grid would be too large."""
    sums = frame.groupby(["series_id", "year"], observed=True, sort=True)["value"].sum().round(SUM_DECIMALS)
    best: dict[str, tuple[int, float]] = {}
    if len(sums):
        top = sums.loc[sums.groupby(level="series_id", observed=True).idxmax()]
        best = {str(s): (int(y), float(v)) for (s, y), v in top.items()}
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
    """All three reports; `inputs` (keys read) is carried into the result with `dropped_rows`."""
    return Reports(
        population_stats=population_stats(population),
        best_year=best_year_by_series(bls, quarters_only=quarters_only),
        series_with_population=series_with_population(bls, population, series_id, period),
        inputs={**(inputs or {}), "dropped_rows": bls.dropped_rows},
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
