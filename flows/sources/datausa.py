"""DataUSA population: fetch the body (httpx) and read either API generation (pure).

Two generations exist: the retired `datausa.io/api/data` (`"ID Year": 2019, "Year": "2019"`,
integer `Population`) and the current tesseract endpoint (`"Year": 2023`, float `Population`,
plus `columns`/`page`/`annotations`). The body is stored exactly as returned, so the reading
happens twice: once before storing (to refuse junk) and again in the reports.
"""

from __future__ import annotations

import json
import math
from typing import Any

from flows.errors import QuestError


class PopulationFormatError(QuestError):
    """The body is not a DataUSA population response."""


def _year(row: dict[str, Any]) -> int | None:
    for key in ("ID Year", "Year"):
        value = row.get(key)
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and value.strip().isdigit():
            return int(value.strip())
    return None


def _population(row: dict[str, Any]) -> int | None:
    value = row.get("Population")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return round(value)


def normalise_population(body: bytes | str | dict[str, Any]) -> list[tuple[int, int]]:
    """(year, population) pairs sorted by year, from either API generation.

    Raises PopulationFormatError for HTML, non-JSON, no `data` list, no usable rows, a row
    without a year or population, or one year given twice with different figures.
    """
    if isinstance(body, bytes | str):
        text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
        stripped = text.lstrip()
        if stripped[:1] == "<":
            raise PopulationFormatError(f"expected JSON, got an HTML/XML page (starts: {stripped[:60]!r})")
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PopulationFormatError(f"the body is not JSON: {exc.msg} at char {exc.pos}") from exc
    else:
        doc = body
    if not isinstance(doc, dict):
        raise PopulationFormatError(f"expected a JSON object with `data`, got {type(doc).__name__}")
    data = doc.get("data")
    if not isinstance(data, list):
        hint = f" (error: {doc['error']})" if "error" in doc else ""
        raise PopulationFormatError(f"the body has no `data` list{hint}; keys: {sorted(doc)[:8]}")
    if not data:
        raise PopulationFormatError("the body's `data` list is empty")
    years: dict[int, int] = {}
    for i, row in enumerate(data):
        if not isinstance(row, dict):
            raise PopulationFormatError(f"data[{i}] is not an object")
        year, population = _year(row), _population(row)
        if year is None:
            raise PopulationFormatError(f"data[{i}] has no year (`ID Year` or `Year`): {_short(row)}")
        if population is None:
            raise PopulationFormatError(f"data[{i}] has no numeric `Population`: {_short(row)}")
        if population < 0:
            raise PopulationFormatError(f"data[{i}] has a negative population: {_short(row)}")
        if years.get(year, population) != population:
            raise PopulationFormatError(f"year {year} appears twice with different populations")
        years[year] = population
    return sorted(years.items())


def _short(row: dict[str, Any]) -> str:
    return json.dumps(row)[:120]


def fetch_population(client: Any, url: str) -> bytes:
    """GET the population body (raises HttpStatusError on a non-success status)."""
    from flows.http import check_status

    response = client.get(url)
    check_status(response, url)
    return response.content
