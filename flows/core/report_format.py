"""Rendering the reports for people: fixed-width text tables (logs, terminal) and Markdown (summary.md).

Pure functions over the contract JSON object (`Reports.to_json()`), so the CLI, the flow's log
lines, the Markdown summary and the Prefect artifacts all show the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from flows.core.markdown import md_code, md_text

POPULATION_COLUMNS = ("start_year", "end_year", "years", "missing_years", "mean", "std", "std_population")
BEST_YEAR_COLUMNS = ("series_id", "year", "value")
SERIES_COLUMNS = ("series_id", "period", "year", "value", "population")


# Columns of people counts: shown with thousands separators (years and values are not).
THOUSANDS = frozenset({"population", "mean", "std", "std_population"})
TOP_ROWS = 10  # logs and summary.md show this many rows of a long table, then point to the file
# Why a year has no population: the reason the data gives (DataUSA serves ACS 1-year estimates).
KNOWN_GAPS = {2020: "no ACS 1-year estimates were released for 2020, as COVID-19 disrupted collection"}


def cell(value: Any, column: str | None = None) -> str:
    """One table cell: integers plainly, floats without noise, lists joined, null as an empty cell;
    people counts with thousands separators."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if column in THOUSANDS and isinstance(value, int | float):
        return f"{value:,}" if isinstance(value, int) else f"{value:,.2f}"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) >= 1e6 else f"{value:.10g}"
    if isinstance(value, list | tuple):
        return ", ".join(cell(v) for v in value)
    return str(value)


def _rows(records: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> list[list[str]]:
    return [[cell(r.get(c), c) for c in columns] for r in records]


def text_table(records: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A fixed-width table; numbers right-aligned so columns of figures read down."""
    rows = _rows(records, columns)
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
    numeric = [
        all(isinstance(r.get(c), int | float) or r.get(c) is None for r in records) and bool(records)
        for c in columns
    ]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    out = [line(columns), line(["-" * w for w in widths])]
    out.extend(line(r) for r in rows)
    if not rows:
        out.append("(no rows)")
    return "\n".join(out)


def markdown_table(records: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    if not records:
        return "_(no rows)_"
    out = ["| " + " | ".join(columns) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
    out.extend("| " + " | ".join(md_text(v) for v in r) + " |" for r in _rows(records, columns))
    return "\n".join(out)


def report_sections(
    result: Mapping[str, Any], series_id: str, period: str, quarters_only: bool = False
) -> list[tuple[str, list[dict[str, Any]], Sequence[str]]]:
    """(title, records, columns) for each of the three reports, in the order they are shown."""
    stats = result["population_stats"]
    stats_title = f"US population {stats['start_year']}-{stats['end_year']}: mean and standard deviation"
    if stats.get("missing_years"):
        stats_title += f" (no data for {', '.join(map(str, stats['missing_years']))})"
    best_title = "Best year per series (largest sum of value over " + (
        "Q01-Q04)" if quarters_only else "all periods)"
    )
    return [
        (stats_title, [dict(stats)], POPULATION_COLUMNS),
        (best_title, list(result["best_year_by_series"]), BEST_YEAR_COLUMNS),
        (
            f"{series_id} {period}: value per year with that year's US population",
            list(result["series_with_population"]),
            SERIES_COLUMNS,
        ),
    ]


def dropped_text(inputs: Mapping[str, Any]) -> str:
    """`3 (bad value: 2, bad year: 1)`: how many BLS rows could not be read, and why."""
    count = inputs.get("dropped_rows", 0)
    reasons = inputs.get("dropped_reasons") or {}
    if not reasons:
        return str(count)
    return f"{count} ({', '.join(f'{reason}: {n}' for reason, n in reasons.items())})"


def text_report(result: Mapping[str, Any], series_id: str, period: str, quarters_only: bool = False) -> str:
    parts = []
    for title, records, columns in report_sections(result, series_id, period, quarters_only):
        parts.append(f"{title}\n{text_table(records, columns)}")
    inputs = result.get("inputs", {})
    parts.append(
        f"inputs: {inputs.get('bls_key')} + {inputs.get('population_key')}; "
        f"BLS rows dropped as unreadable: {dropped_text(inputs)}"
    )
    return "\n\n".join(parts)


def population_gaps(years: Sequence[int]) -> list[int]:
    """Years missing between the first and last year the population data has."""
    have = set(years)
    return [y for y in range(min(have), max(have) + 1) if y not in have] if have else []


def gap_text(year: int) -> str:
    return f"{year}: {KNOWN_GAPS[year]}" if year in KNOWN_GAPS else f"{year}: not in the data"


def headline(result: Mapping[str, Any], population_years: Sequence[int]) -> list[str]:
    """The numbers a person looks for first, as Markdown bullet lines."""
    stats, inputs = result["population_stats"], result.get("inputs", {})
    window = f"{stats['start_year']}–{stats['end_year']}"
    lines = [
        f"- **US population {window}: mean {cell(stats['mean'], 'mean')}**; standard deviation "
        f"{cell(stats['std'], 'std')} (sample, ddof=1), {cell(stats['std_population'], 'std')} "
        "(population, ddof=0)",
        f"- years used: {', '.join(map(str, stats['years'])) or 'none'}",
    ]
    if stats.get("missing_years"):
        lines.append(f"- missing in {window}: {'; '.join(gap_text(y) for y in stats['missing_years'])}")
    gaps = population_gaps(population_years)
    if gaps:
        lines.append(f"- not in the population data at all: {'; '.join(gap_text(y) for y in gaps)}")
    lines += [
        f"- best year per series: {len(result['best_year_by_series']):,} series",
        f"- BLS rows dropped as unreadable: {dropped_text(inputs)}",
        f"- inputs: {md_code(str(inputs.get('bls_key')))} and {md_code(str(inputs.get('population_key')))}",
    ]
    return lines


def top_rows(records: Sequence[Mapping[str, Any]], where: str) -> tuple[list[Mapping[str, Any]], str]:
    """A long table cut to its first TOP_ROWS rows, with a line pointing to the whole of it."""
    shown = list(records[:TOP_ROWS])
    note = f"{len(records):,} {'row' if len(records) == 1 else 'rows'}" + (
        f"; the first {len(shown)} shown, all of them in {where}" if len(records) > len(shown) else ""
    )
    return shown, note


def summary_markdown(
    result: Mapping[str, Any],
    series_id: str,
    period: str,
    location: str,
    quarters_only: bool = False,
    population_years: Sequence[int] = (),
    files: Mapping[str, str] | None = None,
    charts: Sequence[tuple[str, str]] = (),
) -> str:
    """summary.md: the headline, the charts (files next to it), then each report's first rows and
    the file holding all of it (`files`: report title -> file name)."""
    lines = ["# Reports", "", *headline(result, population_years), f"- written to: {md_code(location)}"]
    for alt, name in charts:
        lines += ["", f"![{md_text(alt)}]({name})"]
    for title, records, columns in report_sections(result, series_id, period, quarters_only):
        where = md_code((files or {}).get(title, "the CSV"))
        shown, note = top_rows(records, where)
        lines += ["", f"## {md_text(title)}", "", markdown_table(shown, columns), "", f"_{note}_"]
    return "\n".join(lines) + "\n"
