"""DataUSA population: read either API generation (pure; `flows.io.fetch` does the capped GET).

Two generations exist: the retired `datausa.io/api/data` (`"ID Year": 2019, "Year": "2019"`,
integer `Population`) and the current tesseract endpoint (`"Year": 2023`, float `Population`,
plus `columns`/`page`/`annotations`). The body is stored exactly as returned, so the reading
happens twice: once before storing (to refuse junk) and again in the reports.
"""

from __future__ import annotations

import heapq
import json
import math
import re
from typing import Any

from flows.core.errors import PopulationFormatError

# The first US census was taken in 1790; nothing is published for the distant future.
YEAR_MIN = 1790
YEAR_MAX = 2200
# No nation has 2 billion people (India and China are near 1.4 billion): a larger figure is junk.
POPULATION_MAX = 2_000_000_000
DEFAULT_MAX_BYTES = 1024 * 1024
_YEAR_TEXT = re.compile(r"[0-9]{4}")


def _whole_number(value: Any) -> int | None:
    """A JSON number that is a whole number (331893745.0 is; 331893745.4, NaN, inf, true are not)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            return None
        return int(value)
    return value


def _year(row: dict[str, Any]) -> int | None:
    """`ID Year` (legacy) or `Year`: the first one present decides; a number, or 4 digits as text."""
    for key in ("ID Year", "Year"):
        if key not in row:
            continue
        value = row[key]
        year = value.strip() if isinstance(value, str) else value
        if isinstance(year, str):
            year = int(year) if _YEAR_TEXT.fullmatch(year) else None
        else:
            year = _whole_number(year)
        return year if year is not None and YEAR_MIN <= year <= YEAR_MAX else None
    return None


def _population_problem(value: Any) -> str | None:
    """Why `value` cannot be a nation's population (None: it can)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "is not a number"
    if isinstance(value, float) and not math.isfinite(value):
        return "is not finite"
    population = _whole_number(value)
    if population is None:
        return "is not a whole number"
    if population <= 0:
        return "is negative" if population < 0 else "is zero"
    if population > POPULATION_MAX:
        return f"exceeds {POPULATION_MAX:,}, more than any nation"
    return None


def _document(body: bytes | str | dict[str, Any]) -> Any:
    """The JSON document of a body; refuses HTML, non-UTF-8 and anything `json` cannot read."""
    if not isinstance(body, bytes | str):
        return body
    if isinstance(body, bytes):
        try:
            body = body.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise PopulationFormatError(f"the body is not UTF-8 (byte {exc.start})") from exc
    stripped = body.lstrip()
    if stripped[:1] == "<":
        raise PopulationFormatError(f"expected JSON, got an HTML/XML page (starts: {stripped[:60]!r})")
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        raise PopulationFormatError(f"the body is not JSON: {exc.msg} at char {exc.pos}") from exc
    except (ValueError, RecursionError) as exc:  # e.g. an integer of 5000 digits, or [[[[...]]]]
        raise PopulationFormatError(f"the body is not JSON we can read: {str(exc)[:120]}") from exc


def normalise_population(body: bytes | str | dict[str, Any]) -> list[tuple[int, int]]:
    """(year, population) pairs sorted by year, from either API generation.

    Used before storing (junk is never stored) and again by the reports. Raises PopulationFormatError
    for HTML, non-JSON, no `data` list, no rows, a row without a year in YEAR_MIN..YEAR_MAX, a
    population that is not a whole number in 1..POPULATION_MAX (strings, booleans, 1e300, NaN,
    331893745.4, negative, zero), or one year given twice with different figures.
    """
    doc = _document(body)
    if not isinstance(doc, dict):
        raise PopulationFormatError(f"expected a JSON object with `data`, got {type(doc).__name__}")
    data = doc.get("data")
    if not isinstance(data, list):
        hint = f" (error: {str(doc['error'])[:120]})" if "error" in doc else ""
        keys = heapq.nsmallest(8, map(str, doc))  # sorted(doc)[:8] without sorting 10^6 keys
        raise PopulationFormatError(f"the body has no `data` list{hint}; keys: {keys}")
    if not data:
        raise PopulationFormatError("the body's `data` list is empty")
    years: dict[int, int] = {}
    for i, row in enumerate(data):
        if not isinstance(row, dict):
            raise PopulationFormatError(f"data[{i}] is not an object")
        year = _year(row)
        if year is None:
            raise PopulationFormatError(
                f"data[{i}] has no year (`ID Year` or `Year`) in {YEAR_MIN}-{YEAR_MAX}: {_short(row)}"
            )
        problem = _population_problem(row.get("Population"))
        if problem is not None:
            raise PopulationFormatError(f"data[{i}]: `Population` {problem}: {_short(row)}")
        population = int(row["Population"])
        if years.get(year, population) != population:
            raise PopulationFormatError(f"year {year} appears twice with different populations")
        years[year] = population
    return sorted(years.items())


def _short(row: dict[str, Any]) -> str:
    try:
        return json.dumps(row)[:120]
    except ValueError:  # NaN is allowed in, out only as text
        return repr(row)[:120]
