"""The loopback upstream's `time.series/` root: one folder per survey, its switches, its GET count."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from flows.core.discovery import parse_root_listing
from flows.core.errors import ListingError
from flows.core.listing import parse_listing
from flows.devkit.upstream_server import ERROR_PAGE, UpstreamServer


@pytest.fixture
def up():
    with UpstreamServer({"pr": {"pr.a": b"abc"}, "cu": {"cu.a": b"1", "cu.b": b"22"}}) as server:
        yield server


def _root(up):
    return parse_root_listing(httpx.get(up.bls_base_url).text, up.bls_base_url)


def test_root_lists_one_folder_per_survey_dated_by_its_newest_file(up):
    newest = datetime(2025, 3, 18, 9, 10, tzinfo=UTC)
    up.put_file("cu", "cu.c", b"333", last_modified=newest)
    page = httpx.get(up.bls_base_url)
    assert page.status_code == 200 and page.headers["content-type"] == "text/html"
    assert ' 3/18/2025  9:10 AM  &lt;dir&gt; <A HREF="/pub/time.series/cu/">cu</A>' in page.text
    assert _root(up).surveys == ("cu", "pr")
    head = httpx.head(up.bls_base_url)
    assert head.status_code == 200 and head.content == b"" and int(head.headers["content-length"]) > 0
    # The root is not a survey: a survey's listing parser finds no files in it.
    with pytest.raises(ListingError, match="names no files"):
        parse_listing(page.text, up.bls_base_url)


def test_add_and_remove_surveys_and_root_entries(up):
    up.add_survey("ap", {"ap.x": b"x"})
    up.add_survey("zz", {})
    up.add_root_entry("Not-A-Survey")
    up.add_root_entry("overview.txt", 120)
    root = _root(up)
    assert root.surveys == ("ap", "cu", "pr", "zz")
    assert root.skipped == ("Not-A-Survey",) and root.files == ("overview.txt",)
    assert httpx.get(up.survey_url("ap") + "ap.x").content == b"x"
    assert up.surveys() == ["ap", "cu", "pr", "zz"]
    up.remove_survey("cu")
    assert _root(up).surveys == ("ap", "pr", "zz")
    assert httpx.get(up.survey_url("cu")).status_code == 404


@pytest.mark.parametrize("mode", ["html_error", "empty"])
def test_root_listing_modes(up, mode):
    up.set_root_listing_mode(mode)
    page = httpx.get(up.bls_base_url)
    assert page.status_code == 200
    if mode == "html_error":
        assert page.content == ERROR_PAGE
        with pytest.raises(ListingError, match="not a directory listing"):
            parse_root_listing(page.text, up.bls_base_url)
    else:
        assert "[To Parent Directory]" in page.text and "&lt;dir&gt;" not in page.text
        with pytest.raises(ListingError, match="names no survey folders"):
            parse_root_listing(page.text, up.bls_base_url)
    assert httpx.get(up.survey_url("pr")).text.count("pr.a") == 2  # survey listings are untouched
    up.clear_faults()
    assert _root(up).surveys == ("cu", "pr")
    with pytest.raises(ValueError, match="listing mode"):
        up.set_root_listing_mode("bogus")


def test_root_gets_are_counted_apart_from_survey_listings(up):
    httpx.get(up.bls_base_url)
    httpx.head(up.bls_base_url)
    httpx.get(up.survey_url("pr"))
    httpx.get(up.survey_url("cu"))
    httpx.get(up.survey_url("pr") + "pr.a")
    assert [r.path for r in up.root_gets()] == ["/pub/time.series/"]
    assert sorted(r.path for r in up.listing_gets()) == ["/pub/time.series/cu/", "/pub/time.series/pr/"]
    assert len(up.listing_gets("pr")) == 1 and len(up.file_gets()) == 1
    r = up.root_gets()[0]
    assert r.status == 200 and r.ended >= r.started > 0


def test_faults_apply_to_the_root(up):
    up.fail("/pub/time.series/", 503, times=1, retry_after=1)
    assert httpx.get(up.bls_base_url).status_code == 503
    assert httpx.get(up.bls_base_url).status_code == 200
    assert [r.status for r in up.root_gets()] == [503, 200]
