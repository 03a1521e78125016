"""The IIS listing parser, on the real layout (one line or many), folders and hostile hrefs."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from flows.sources.bls import ListingError, parse_listing
from flows.upstream_server import render_iis_listing

DIR = "https://download.bls.gov/pub/time.series/pr/"

REAL = (
    "<html><head><title>download.bls.gov - /pub/time.series/pr/</title></head><body><H1>download.bls.gov - "
    '/pub/time.series/pr/</H1><hr>\r\n\r\n<pre><A HREF="/pub/time.series/">[To Parent Directory]</A><br><br>'
    '  3/27/2024  8:30 AM          102 <A HREF="/pub/time.series/pr/pr.class">pr.class</A><br>'
    '  6/6/2024  8:30 AM      1504795 <A HREF="/pub/time.series/pr/pr.data.0.Current">'
    "pr.data.0.Current</A><br>"
    ' 12/13/2023  1:05 PM       &lt;dir&gt; <A HREF="/pub/time.series/pr/old/">old</A><br>'
    ' 12/13/2023 12:00 AM        18343 <A HREF="/pub/time.series/pr/pr.txt">pr.txt</A><br>'
    "</pre><hr></body></html>\r\n"
)


def test_real_layout_one_line():
    listing = parse_listing(REAL, DIR)
    assert [(e.name, e.size, e.last_modified) for e in listing.entries] == [
        ("pr.class", 102, "2024-03-27T08:30"),
        ("pr.data.0.Current", 1504795, "2024-06-06T08:30"),
        ("pr.txt", 18343, "2023-12-13T00:00"),
    ]
    assert listing.entries[1].url == DIR + "pr.data.0.Current"
    assert listing.folders == ("old",) and listing.skipped == ()


def test_rows_on_separate_lines_and_pm_hours():
    page = REAL.replace("<br>", "<br>\r\n").replace("1:05 PM", "1:05 PM")
    listing = parse_listing(page, DIR)
    assert len(listing.entries) == 3
    when = datetime(2024, 1, 2, 13, 7, tzinfo=UTC)
    rendered = render_iis_listing("/pub/time.series/pr/", [("a.b", 5, when)], one_line=False).decode()
    assert "  1/2/2024  1:07 PM            5 <A HREF" in rendered
    assert (
        parse_listing(rendered, "http://127.0.0.1:8/pub/time.series/pr/").entries[0].last_modified
        == "2024-01-02T13:07"
    )


@pytest.mark.parametrize(
    "href",
    [
        "http://evil.example/pub/time.series/pr/pr.x",
        "//evil.example/pub/time.series/pr/pr.x",
        "/pub/time.series/cu/cu.data",
        "/pub/time.series/pr/../cu/cu.data",
        "/pub/time.series/pr/sub/pr.x",
        "/pub/time.series/pr/a%2Fb",
        "/pub/time.series/pr/a%0Ab",
        "/pub/time.series/pr/..",
        "/pub/time.series/pr/pr.x?download=1",
        "javascript:alert(1)",
    ],
)
def test_hostile_hrefs_are_ignored(href):
    row = f'  6/6/2024  8:30 AM          10 <A HREF="{href}">pr.x</A><br>'
    listing = parse_listing(REAL.replace("<br></pre>", "<br>" + row + "</pre>"), DIR)
    assert [e.name for e in listing.entries] == ["pr.class", "pr.data.0.Current", "pr.txt"]
    assert listing.skipped == (href,)


def test_odd_but_safe_names_are_kept_and_quoted():
    row = '  6/6/2024  8:30 AM          10 <A HREF="/pub/time.series/pr/pr%20x&amp;y">pr x&amp;y</A><br>'
    listing = parse_listing(REAL.replace("<br></pre>", "<br>" + row + "</pre>"), DIR)
    entry = listing.by_name()["pr x&y"]
    assert entry.url == DIR + "pr%20x&y"


@pytest.mark.parametrize(
    ("page", "reason"),
    [
        ("<html><body><h1>Access Denied</h1></body></html>", "not a directory listing"),
        ("", "not a directory listing"),
        ('<pre><A HREF="/pub/time.series/">[To Parent Directory]</A><br><br></pre>', "names no files"),
        (
            REAL.split("  3/27")[0] + ' 12/13/2023  1:05 PM  &lt;dir&gt; <A HREF="/x/">x</A></pre>',
            "names no files",
        ),
    ],
)
def test_not_a_listing_or_empty_is_an_error(page, reason):
    with pytest.raises(ListingError, match=reason) as info:
        parse_listing(page, DIR)
    assert DIR in str(info.value)
