"""Rendering the reports for people: fixed-width text tables (logs, terminal) and Markdown (summary.md).

Pure functions over the contract JSON object (`Reports.to_json()`), so the CLI, the flow's log
lines, the Markdown summary and the Prefect artifacts all show the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

POPULATION_COLUMNS = ("start_year", "end_year", "years", "missing_years", "mean", "std", "std_population")
BEST_YEAR_COLUMNS = ("series_id", "year", "value")
SERIES_COLUMNS = ("series_id", "period", "year", "value", "population")


def cell(value: Any) -> str:
    """One table cell: integers plainly, floats without noise, lists joined, null as an empty cell."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) >= 1e6 else f"{value:.10g}"
    if isinstance(value, list | tuple):
        return ", ".join(cell(v) for v in value)
    return str(value)


def _rows(records: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> list[list[str]]:
    return [[cell(r.get(c)) for c in columns] for r in records]


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
    out.extend("| " + " | ".join(v.replace("|", "\\|") for v in r) + " |" for r in _rows(records, columns))
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


def summary_markdown(
    result: Mapping[str, Any], series_id: str, period: str, location: str, quarters_only: bool = False
) -> str:
    inputs = result.get("inputs", {})
    lines = [
        "# Reports",
        "",
        f"- BLS file: `{inputs.get('bls_key')}`",
        f"- population snapshot: `{inputs.get('population_key')}`",
        f"- BLS rows dropped as unreadable: {dropped_text(inputs)}",
        f"- written to: `{location}`",
    ]
    for title, records, columns in report_sections(result, series_id, period, quarters_only):
        lines += ["", f"## {title}", "", markdown_table(records, columns)]
    return "\n".join(lines) + "\n"
