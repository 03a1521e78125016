"""GETs of the upstream sites' documents: a BLS survey listing and the DataUSA population body.

Each GET goes through the caller's client (`flows.io.http.make_client`: same-site only, deadlines,
abortable); the reading itself is pure and lives in `flows.core.listing` / `flows.core.population`.
Both bodies are read whole, so each has a cap on its decoded bytes (`flows.io.http.read_body`),
checked while it is read and decoded: a gzip bomb is refused before it is in memory.
"""

from __future__ import annotations

import httpx

from flows.core.errors import BodyTooLarge, IncompleteListing, ListingError, PopulationBodyTooLarge
from flows.core.listing import DEFAULT_MAX_LISTING_BYTES, Listing, parse_listing
from flows.core.population import DEFAULT_MAX_BYTES
from flows.io.http import BodyCap, check_status, read_body

LISTING_CAP_SETTING = "QUEST_LISTING_MAX_BYTES"
POPULATION_CAP_SETTING = "QUEST_POPULATION_MAX_BYTES"


def fetch_listing_page(
    client: httpx.Client, directory_url: str, max_bytes: int = DEFAULT_MAX_LISTING_BYTES
) -> tuple[str, str]:
    """GET a directory listing page: its text and the URL actually read. HTTP errors raise
    HttpStatusError (the retry policy decides); a non-HTML body, one past `max_bytes` once decoded
    (BodyTooLarge) or one shorter than its Content-Length (h11 already refuses most) is refused,
    so nothing is deleted or replaced."""
    with client.stream("GET", directory_url) as response:
        check_status(response, directory_url)
        content_type = response.headers.get("content-type", "")
        if content_type and "html" not in content_type.lower():
            raise ListingError(f"{directory_url}: expected an HTML listing, got {content_type!r}")
        announced = response.headers.get("content-length", "").strip()
        encoded = "content-encoding" in response.headers  # Content-Length counts the coded bytes
        body = read_body(response, directory_url, BodyCap(max_bytes, LISTING_CAP_SETTING))
        if announced.isdigit() and not encoded and int(announced) != len(body):
            raise IncompleteListing(
                f"{directory_url}: the listing has {len(body)} of its {announced} bytes; "
                "nothing is deleted or replaced"
            )
        return body.decode(response.encoding or "utf-8", errors="replace"), str(response.url)


def fetch_listing(
    client: httpx.Client, directory_url: str, max_bytes: int = DEFAULT_MAX_LISTING_BYTES
) -> Listing:
    """GET and parse a survey directory; entries resolve against the URL actually read, so a
    same-site redirect keeps hrefs honest."""
    return parse_listing(*fetch_listing_page(client, directory_url, max_bytes))


def fetch_population(client: httpx.Client, url: str, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """GET the population body, streamed: refused as soon as it exceeds `max_bytes` once decoded (a
    junk or hostile body must not fill memory). Raises HttpStatusError on a non-success status."""
    with client.stream("GET", url) as response:
        check_status(response, url)
        try:
            return read_body(response, url, BodyCap(max_bytes, POPULATION_CAP_SETTING))
        except BodyTooLarge as exc:
            raise PopulationBodyTooLarge(str(exc)) from None
