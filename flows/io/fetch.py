"""GETs of the upstream sites' documents: a BLS survey listing and the DataUSA population body.

Each GET goes through the caller's client (`flows.io.http.make_client`: same-site only, deadlines,
abortable); the reading itself is pure and lives in `flows.core.listing` / `flows.core.population`.
"""

from __future__ import annotations

import httpx

from flows.core.errors import IncompleteListing, ListingError, PopulationBodyTooLarge
from flows.core.listing import Listing, parse_listing
from flows.core.population import DEFAULT_MAX_BYTES
from flows.io.http import check_status


def fetch_listing_page(client: httpx.Client, directory_url: str) -> tuple[str, str]:
    """GET a directory listing page: its text and the URL actually read. HTTP errors raise
    HttpStatusError (the retry policy decides); a non-HTML body or one shorter than its
    Content-Length (h11 already refuses most) is refused, so nothing is deleted or replaced."""
    response = client.get(directory_url)
    check_status(response, directory_url)
    content_type = response.headers.get("content-type", "")
    if content_type and "html" not in content_type.lower():
        raise ListingError(f"{directory_url}: expected an HTML listing, got {content_type!r}")
    announced = response.headers.get("content-length", "")
    encoded = response.headers.get("content-encoding", "identity").lower() != "identity"
    if announced.isdigit() and not encoded and int(announced) != len(response.content):
        raise IncompleteListing(
            f"{directory_url}: the listing has {len(response.content)} of its {announced} bytes; "
            "nothing is deleted or replaced"
        )
    return response.text, str(response.url)


def fetch_listing(client: httpx.Client, directory_url: str) -> Listing:
    """GET and parse a survey directory; entries resolve against the URL actually read, so a
    same-site redirect keeps hrefs honest."""
    return parse_listing(*fetch_listing_page(client, directory_url))


def fetch_population(client: httpx.Client, url: str, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """GET the population body, streamed: refused as soon as it exceeds `max_bytes` (a junk or hostile
    body must not fill memory). Raises HttpStatusError on a non-success status."""
    with client.stream("GET", url) as response:
        check_status(response, url)
        declared = response.headers.get("content-length", "")
        if declared.strip().isdigit() and int(declared) > max_bytes:
            raise PopulationBodyTooLarge(
                f"GET {url}: Content-Length {int(declared):,} bytes exceeds the {max_bytes:,}-byte limit"
            )
        chunks: list[bytes] = []
        received = 0
        for chunk in response.iter_bytes():
            received += len(chunk)
            if received > max_bytes:
                raise PopulationBodyTooLarge(
                    f"GET {url}: the body exceeds the {max_bytes:,}-byte limit for a population response"
                )
            chunks.append(chunk)
    return b"".join(chunks)
