"""Population bodies: impossible figures are refused before storing, and the body is capped while it
streams in (a loopback server on 127.0.0.1 plays DataUSA)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.core.errors import HttpStatusError, PopulationBodyTooLarge, PopulationFormatError, QuestError
from flows.core.population import POPULATION_MAX, normalise_population
from flows.core.report_maths import population_by_year, population_stats
from flows.devkit.samples import population_body, sample_population
from flows.io.fetch import fetch_population
from flows.io.http import make_client
from flows.settings import Settings


def body(*rows: dict) -> bytes:
    return json.dumps({"data": list(rows)}).encode()


@pytest.mark.parametrize(
    "population, reason",
    [
        (1e300, "exceeds"),
        (POPULATION_MAX + 1, "exceeds"),
        (331893745.4, "not a whole number"),
        (-5, "negative"),
        (0, "zero"),
        (0.0, "zero"),
        (True, "not a number"),
        ("331893745", "not a number"),
        (None, "not a number"),
        ([1], "not a number"),
    ],
)
def test_impossible_populations_are_refused(population, reason):
    with pytest.raises(PopulationFormatError, match=reason):
        normalise_population(body({"Year": 2019, "Population": population}))


@pytest.mark.parametrize("text", ["1e300", "1e400", "-1e400", "Infinity", "NaN", "1" + "0" * 5000])
def test_impossible_numbers_in_the_json_text_are_refused(text):
    raw = b'{"data": [{"Year": 2019, "Population": ' + text.encode() + b"}]}"
    with pytest.raises(PopulationFormatError):
        normalise_population(raw)


@pytest.mark.parametrize(
    "row",
    [
        {"Year": 1789, "Population": 5},
        {"Year": 2201, "Population": 5},
        {"Year": 2019.5, "Population": 5},
        {"Year": 1e300, "Population": 5},
        {"Year": "2019.0", "Population": 5},
        {"Year": "²⁰¹⁹", "Population": 5},
        {"Year": "-2019", "Population": 5},
        {"ID Year": "x", "Year": 2019, "Population": 5},
    ],
)
def test_impossible_years_are_refused(row):
    with pytest.raises(PopulationFormatError, match="no year"):
        normalise_population(body(row))


def test_whole_floats_padded_year_texts_and_the_bounds_are_accepted():
    rows = normalise_population(
        body(
            {"Year": 2021, "Population": 331893745.0},
            {"ID Year": 2019, "Year": " 2019 ", "Population": 328239523},
            {"Year": "1790", "Population": 1},
            {"Year": 2200.0, "Population": POPULATION_MAX},
        )
    )
    assert rows == [(1790, 1), (2019, 328239523), (2021, 331893745), (2200, POPULATION_MAX)]


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"\xef\xbb\xbf" + population_body(), None),
        (b'{"data": [{"Year": 2019, "Population": 5, "Nation": "\xff"}]}', "not UTF-8"),
        (b"[" * 100_000, "cannot read|not JSON"),
    ],
)
def test_encoding_and_deep_nesting(raw, reason):
    if reason is None:
        assert normalise_population(raw) == sorted(sample_population().items())
    else:
        with pytest.raises(PopulationFormatError, match=reason):
            normalise_population(raw)


def test_stored_1e300_no_longer_reaches_the_statistics():
    """Issue 9: `1e300` was stored and the reports then died with OverflowError."""
    raw = body(*({"Year": y, "Population": 1e300 if y == 2016 else 3e8} for y in range(2013, 2019)))
    with pytest.raises(PopulationFormatError, match=r"data\[3\]: `Population` exceeds"):
        population_stats(population_by_year(normalise_population(raw)))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
rows = st.dictionaries(
    st.sampled_from(["Year", "ID Year", "Population", "Nation"]),
    st.one_of(json_values, st.integers(1700, 2300), st.floats(0, 3e9), st.integers(-5, 3 * 10**9)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.builds(lambda d: json.dumps({"data": d}), st.lists(rows, max_size=6)),
        st.builds(json.dumps, json_values),
        st.binary(max_size=200),
        st.text(max_size=200),
    )
)
def test_any_body_gives_plausible_pairs_or_a_population_error(raw):
    try:
        pairs = normalise_population(raw)
    except PopulationFormatError:
        return
    assert pairs and pairs == sorted(pairs)
    for year, population in pairs:
        assert type(year) is int and type(population) is int
        assert 1790 <= year <= 2200 and 0 < population <= POPULATION_MAX
    population_stats(population_by_year(pairs), 1790, 2200)  # no OverflowError, whatever the figures


# --------------------------------------------------------------------------- the capped fetch


class _Handler(BaseHTTPRequestHandler):
    """/ok: the sample body; /declared-huge: Content-Length 500 MB; /endless: no length, keeps sending."""

    sent: dict[str, int] = {}

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/ok":
            payload = population_body()
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        elif self.path == "/declared-huge":
            self.send_response(200)
            self.send_header("Content-Length", str(500 * 1024 * 1024))
            self.end_headers()
            self.wfile.write(b'{"data": [')
        elif self.path == "/endless":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            chunk = b" " * 65536
            try:
                for _ in range(8000):  # 500 MB if nobody stops reading
                    self.wfile.write(chunk)
                    _Handler.sent["/endless"] = _Handler.sent.get("/endless", 0) + len(chunk)
            except OSError:
                pass
        else:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()


@pytest.fixture
def loopback() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_fetch_reads_a_normal_body(loopback):
    with httpx.Client() as client:
        assert fetch_population(client, loopback + "/ok", 4096) == population_body()


def test_fetch_refuses_a_declared_length_over_the_cap_before_reading(loopback):
    with httpx.Client() as client, pytest.raises(PopulationBodyTooLarge, match="Content-Length"):
        fetch_population(client, loopback + "/declared-huge", 1024 * 1024)


def test_fetch_stops_reading_an_endless_body_at_the_cap(loopback):
    start = time.monotonic()
    with httpx.Client() as client, pytest.raises(PopulationBodyTooLarge, match="exceeds the 1,048,576-byte"):
        fetch_population(client, loopback + "/endless", 1024 * 1024)
    assert time.monotonic() - start < 10
    assert isinstance(PopulationBodyTooLarge("x"), QuestError)


def test_fetch_with_the_project_client_and_settings_cap(loopback, monkeypatch):
    monkeypatch.setenv("QUEST_CONTACT", "tests@example.com")
    cfg = Settings(population_max_bytes=2048)
    with make_client(cfg, loopback + "/ok") as client:
        assert fetch_population(client, loopback + "/ok", cfg.population_max_bytes) == population_body()
        with pytest.raises(PopulationBodyTooLarge):
            fetch_population(client, loopback + "/endless", cfg.population_max_bytes)
        with pytest.raises(HttpStatusError):
            fetch_population(client, loopback + "/missing", cfg.population_max_bytes)
