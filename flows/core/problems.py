"""Per-row upstream problems as ONE log line: a count and the first few (pure).

A hostile listing can hold 50,000 junk rows; one warning per row floods the run log (a 4.4 MB run
page) and buries the lines that matter. Every place that logs what a listing skipped or could
not read goes through `summarise`, so the log grows with the number of kinds of problem, not
with the number of rows an upstream chose to send.
"""

from __future__ import annotations

from collections.abc import Iterable

FIRST_FEW = 5  # problems quoted in full; the rest are counted
MAX_PROBLEM_CHARS = 200  # one quoted problem (a row's href can be megabytes long)


def _clip(text: str, limit: int = MAX_PROBLEM_CHARS) -> str:
    text = " ".join(text.split())  # one line, whatever the upstream put in it
    return text if len(text) <= limit else text[: limit - 1] + "…"


def summarise(problems: Iterable[str], first: int = FIRST_FEW) -> str:
    """`2 rows: a; b` or `50,000 rows, the first 5: a; b; c; d; e; ... 49,995 more` ('' for none).

    Reads the iterable once and keeps only `first` items, so the line's size is bounded whatever
    the count.
    """
    shown: list[str] = []
    count = 0
    for problem in problems:
        count += 1
        if len(shown) < first:
            shown.append(_clip(problem))
    if count == 0:
        return ""
    noun = "row" if count == 1 else "rows"
    if count <= first:
        return f"{count:,} {noun}: " + "; ".join(shown)
    return (
        f"{count:,} {noun}, the first {len(shown)}: "
        + "; ".join(shown)
        + f"; ... {count - len(shown):,} more"
    )
