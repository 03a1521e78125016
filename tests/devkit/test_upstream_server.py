"""The loopback upstream itself: what it serves, its switches and its log."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from flows.core.listing import parse_listing
from flows.devkit.upstream_server import GeneratedFile, UpstreamServer


@pytest.fixture
def up():
    with UpstreamServer(
        {"pr": {"pr.a": b"abc", "pr.big": GeneratedFile(3 * 1024 * 1024 + 5, seed=1)}}
    ) as server:
        yield server


def test_listing_and_files(up):
    up.add_folder("pr", "archive")
    page = httpx.get(up.survey_url("pr"))
    assert page.status_code == 200 and "[To Parent Directory]" in page.text and "&lt;dir&gt;" in page.text
    listing = parse_listing(page.text, up.survey_url("pr"))
    assert [(e.name, e.size) for e in listing.entries] == [("pr.a", 3), ("pr.big", 3 * 1024 * 1024 + 5)]
    assert listing.folders == ("archive",)
    big = httpx.get(up.survey_url("pr") + "pr.big")
    assert int(big.headers["content-length"]) == len(big.content) == 3 * 1024 * 1024 + 5
    assert hashlib.sha256(big.content).hexdigest() == GeneratedFile(3 * 1024 * 1024 + 5, seed=1).sha256()
    head = httpx.head(up.survey_url("pr") + "pr.a")
    assert head.headers["last-modified"] == "Thu, 06 Jun 2024 08:30:00 GMT" and head.content == b""
    assert httpx.get(up.survey_url("pr") + "missing").status_code == 404
    assert [(r.method, r.status) for r in up.requests][-2:] == [("HEAD", 200), ("GET", 404)]


def test_mutators_move_the_listed_date(up):
    before = up.listed("pr")["pr.a"][1]
    up.put_file("pr", "pr.a", b"abcd")
    size, when = up.listed("pr")["pr.a"]
    assert size == 4 and when > before
    up.replace_survey("pr", {"pr.a": b"abcd", "pr.new": b"x"})
    assert sorted(up.listed("pr")) == ["pr.a", "pr.new"] and up.listed("pr")["pr.a"][1] == when


def test_switches(up):
    up.fail("*/pr.a", 503, times=1, retry_after=7)
    first = httpx.get(up.survey_url("pr") + "pr.a")
    assert first.status_code == 503 and first.headers["retry-after"] == "7"
    assert httpx.get(up.survey_url("pr") + "pr.a").status_code == 200
    up.cut("*/pr.big", after_bytes=1000)
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(up.survey_url("pr") + "pr.big")
    up.set_listing_mode("pr", "empty")
    assert "pr.a" not in httpx.get(up.survey_url("pr")).text
    up.clear_faults()
    assert "pr.a" in httpx.get(up.survey_url("pr")).text


def test_require_contact():
    with UpstreamServer({"pr": {"pr.a": b"x"}}, require_contact=True) as up:
        assert httpx.get(up.survey_url("pr")).status_code == 403
        ok = httpx.get(up.survey_url("pr"), headers={"User-Agent": "quest/0.1 (+me@example.com)"})
        assert ok.status_code == 200


def test_a_trickled_request_ends_in_the_log_when_its_last_byte_goes_out(up):
    """The trickle pauses a second after each piece, the last one too; the client is done at the
    last byte and may send its next request, so the log must not count the pause as in flight."""
    import time

    up.trickle("*/pr.a", bytes_per_second=2, times=1)  # "ab", then "c": two pieces
    began = time.monotonic()
    with httpx.Client() as client:
        assert client.get(up.survey_url("pr") + "pr.a").content == b"abc"
        received = time.monotonic()
        time.sleep(1.5)  # the server's pause after the last piece is over
        client.get(up.survey_url("pr") + "pr.a")  # the same connection: the next request
    first, second = up.file_gets()
    assert first.ended <= received + 0.05, "logged as in flight after the client had the body"
    assert first.ended - began >= 0.9  # one pause, between the two pieces
    assert first.ended <= second.started
    assert up.peak_concurrency() == 1
