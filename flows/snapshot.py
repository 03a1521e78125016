"""The population snapshot, as plain steps: what the `population-snapshot` flow orchestrates.

The body is stored exactly as DataUSA returned it, under `population/<ts>.json`, and only after it
was read as population (junk is refused before anything is written). The flow runs the two I/O
steps as tasks; the plain entry (`flows/runtime/plain.py`) runs them directly.
"""

from __future__ import annotations

from pydantic import BaseModel

from flows.core.humanize import human_bytes
from flows.core.markdown import md_code
from flows.core.objects import META_SOURCE_URL
from flows.io.fetch import fetch_population
from flows.io.http import make_client
from flows.io.store import ObjectStore
from flows.mirror import Logger, retried
from flows.settings import Settings


class PopulationSummary(BaseModel):
    """What one population snapshot stored (the flow returns it, so no caller re-reads the body)."""

    key: str
    location: str  # where the snapshot is, for people (s3://... or a path)
    source_url: str
    bytes: int
    years: list[int]


def fetch_population_body(url: str, settings: Settings, logger: Logger) -> bytes:
    with make_client(settings, url) as client:
        return retried(
            lambda: fetch_population(client, url, settings.population_max_bytes),
            settings,
            f"population {url}",
            logger,
        )


def store_population(store: ObjectStore, key: str, body: bytes, url: str) -> str:
    store.put_bytes(key, body, {META_SOURCE_URL: url}, content_type="application/json")
    return store.location(key)


def summarise(
    key: str, location: str, url: str, body: bytes, rows: list[tuple[int, int]], logger: Logger
) -> PopulationSummary:
    years = [y for y, _ in rows]
    logger.info(
        "population snapshot %s: %d years (%d-%d), %s",
        location,
        len(rows),
        years[0],
        years[-1],
        human_bytes(len(body)),
    )
    return PopulationSummary(key=key, location=location, source_url=url, bytes=len(body), years=years)


def snapshot_markdown(url: str, location: str, rows: list[tuple[int, int]]) -> str:
    head = f"# Population snapshot\n{md_code(url)} → {md_code(location)}\n\n"
    return head + "| year | population |\n|---:|---:|\n" + "".join(f"| {y} | {p:,} |\n" for y, p in rows)
