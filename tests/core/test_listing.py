"""The IIS listing parser, on the real layout (one line or many), folders and hostile hrefs."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from flows.core.errors import ListingError
from flows.core.listing import parse_listing
from flows.devkit.upstream_server import render_iis_listing

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
        (
            '<html><pre><A HREF="/pub/time.series/">[To Parent Directory]</A><br><br></pre></html>',
            "names no files",
        ),
        (
            REAL.split("  3/27")[0] + ' 12/13/2023  1:05 PM  &lt;dir&gt; <A HREF="/x/">x</A></pre></html>',
            "names no files",
        ),
        ("<html><body><pre></pre></body></html>", "not a directory listing"),
    ],
)
def test_not_a_listing_or_empty_is_an_error(page, reason):
    with pytest.raises(ListingError, match=reason) as info:
        parse_listing(page, DIR)
    assert DIR in str(info.value)


# --------------------------------------------------------------------------- cut and malformed pages

ROWS = "".join(
    f" {1 + i % 12}/{1 + i % 28}/2024  {1 + i % 12}:{i % 60:02d} {'AM' if i % 2 else 'PM'}   "
    f'{1000 + i * 37:>10} <A HREF="/pub/time.series/pr/pr.f{i:02d}">pr.f{i:02d}</A><br>'
    for i in range(30)
)
FULL = REAL.replace("</pre>", ROWS + "</pre>")


def test_every_cut_of_a_listing_is_refused_or_complete():
    """A page cut anywhere (a dropped connection with no Content-Length) never reads as fewer files."""
    whole = parse_listing(FULL, DIR)
    assert len(whole.entries) == 33
    end = FULL.rstrip().lower().rindex("</html>") + len("</html>")
    for cut in range(len(FULL)):
        page = FULL[:cut]
        if cut >= end:
            assert parse_listing(page, DIR) == whole
            continue
        with pytest.raises(ListingError):
            parse_listing(page, DIR)


@pytest.mark.parametrize(
    "head",
    [
        "13/45/2024  8:30 AM   10",  # impossible date
        "2/30/2024  8:30 AM   10",  # no such day
        "6/6/2024  13:30 PM   10",  # no such hour
        "6/6/2024  8:75 AM   10",  # no such minute
        "6/6/2024  8:30 AM   1O",  # letter O in the size
        "6/6/2024  8:30 AM   -10",
        "6/6/2024  8:30 AM",  # no size
        "garbage",
        "",
    ],
)
def test_a_malformed_row_holds_its_file_and_keeps_the_others(head):
    row = f'  {head} <A HREF="/pub/time.series/pr/pr.data.0.Current">pr.data.0.Current</A><br>'
    current = '<A HREF="/pub/time.series/pr/pr.data.0.Current">pr.data.0.Current</A><br>'
    page = REAL.replace("  6/6/2024  8:30 AM      1504795 " + current, row)
    assert page != REAL
    listing = parse_listing(page, DIR)
    assert [e.name for e in listing.entries] == ["pr.class", "pr.txt"]
    assert listing.unreadable == ("pr.data.0.Current",)
    assert "pr.data.0.Current" in listing.problems[0]


def test_a_file_listed_twice_with_different_facts_is_held():
    row = '  6/7/2024  8:30 AM          99 <A HREF="/pub/time.series/pr/pr.class">pr.class</A><br>'
    listing = parse_listing(REAL.replace("</pre>", row + "</pre>"), DIR)
    assert "pr.class" not in listing.by_name() and listing.unreadable == ("pr.class",)
    same = '  3/27/2024  8:30 AM          102 <A HREF="/pub/time.series/pr/pr.class">pr.class</A><br>'
    assert parse_listing(REAL.replace("</pre>", same + "</pre>"), DIR).unreadable == ()


def test_only_unreadable_rows_is_not_an_empty_listing():
    page = REAL
    for date in ("3/27/2024", "6/6/2024", "12/13/2023 12:00"):
        page = page.replace(date, "99/99/2024" + date[len(date.split(" ")[0]) :], 1)
    listing = parse_listing(page, DIR)
    assert listing.entries == () and set(listing.unreadable) == {"pr.class", "pr.data.0.Current", "pr.txt"}


# --------------------------------------------------------------------------- properties

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=400))
def test_any_text_is_a_listing_or_a_listing_error(page):
    try:
        listing = parse_listing(page, DIR)
    except ListingError:
        return
    assert listing.entries or listing.unreadable
    for entry in listing.entries:
        assert entry.url.startswith(DIR) and "/" not in entry.name and entry.size >= 0


_pieces = st.sampled_from(
    [
        '<A HREF="/pub/time.series/pr/pr.a">pr.a</A><br>',
        '<A HREF="/pub/time.series/pr/pr.b">pr.b</A>',
        '<A HREF="http://evil/pub/time.series/pr/pr.c">x</A>',
        '<A HREF="/pub/time.series/pr/sub/">sub</A>',
        "  6/6/2024  8:30 AM      15 ",
        " 13/45/2024 8:30 AM 15 ",
        "&lt;dir&gt;",
        "<br>",
        "</pre>",
        "<pre>",
        "</html>",
        '"',
        "\r\n",
        "\x00",
        "é",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_pieces, max_size=30), st.integers(min_value=0, max_value=2000))
def test_hostile_rows_and_cuts_raise_only_listing_errors(pieces, cut):
    page = ("<html><body><pre>" + "".join(pieces) + "</pre><hr></body></html>")[: cut or None]
    try:
        listing = parse_listing(page, DIR)
    except ListingError:
        return
    names = {e.name for e in listing.entries}
    assert names <= {"pr.a", "pr.b"} and not names & set(listing.unreadable)


# --------------------------------------------------------------------------- linear, and the same as before
# The parser reads in linear time (`tests/core/test_parsers_linear.py`) by searching its patterns
# only where they can match; these compare it with the plain searches it replaces, on small
# hostile pages where a quadratic search costs nothing.

import html as _html  # noqa: E402
import re as _re  # noqa: E402

from flows.core import listing as _listing  # noqa: E402
from flows.core.errors import IncompleteListing  # noqa: E402


def _plain_rows(block):
    """`listing_rows` as it was: one `finditer` to the end of the block, one `search` per head."""
    rows, previous_end = [], 0
    for anchor in _listing._ANCHOR.finditer(block):
        head = _re.sub(r"<br\s*/?>", " ", block[previous_end : anchor.start()], flags=_re.IGNORECASE).strip()
        previous_end = anchor.end()
        row = _listing._ROW_HEAD.search(head)
        rows.append(
            (_html.unescape(anchor["href"]), _html.unescape(anchor["text"]).strip(), head, row and row.span())
        )
    return rows, block[previous_end:]


def _plain_block(page):
    """`_row_block` as it was, its outcome as a value: the block, or the error's type and message."""
    opened = _listing._PRE_OPEN.search(page)
    if opened is None:
        snippet = " ".join(_re.sub(r"<[^>]+>", " ", page).split())[:80]
        if _listing._ANCHOR.search(page) or _listing._PARENT.search(page):
            return IncompleteListing, f"{DIR}: the listing has no opening <pre>; not read"
        return ListingError, f"{DIR}: the response is not a directory listing (starts: {snippet!r})"
    closed = _listing._PRE_CLOSE.search(page, opened.end())
    if closed is None or not _listing._HTML_CLOSE.search(page, closed.end()):
        return IncompleteListing, "cut"
    return page[opened.end() : closed.start()]


def _block_outcome(page):
    try:
        return _listing.listing_block(page, DIR)
    except ListingError as exc:
        message = str(exc)
        return type(exc), "cut" if "was cut off" in message else message


_markup = st.sampled_from(
    [
        "<A HREF=",
        "<a  href = ",
        '"',
        '"/pub/time.series/pr/x"',
        ">",
        "</A>",
        "</a>",
        "</A",
        "<",
        "<>",
        "<pre",
        "<PRE ",
        "<prefix>",
        "</pre>",
        "</html>",
        "</HTML >",
        "<br>",
        "<BR />",
        " ",
        "\n",
        "\x1c",
        "x",
        "[To Parent Directory]",
        "&lt;dir&gt;",
        "<dir>",
        "&amp;",
        " 6/6/2024  8:30 AM      15 ",
        "12/31/2024 ",
        "10:30",
        "PM ",
        "1/2/20245",
    ]
)


_row_markup = st.sampled_from(
    [
        ' 6/6/2024  8:30 AM      15 <A HREF="/pub/time.series/pr/pr.a">pr.a</A><br>',
        ' 12/13/2023 1:05 PM &lt;dir&gt; <a href="/pub/time.series/pr/old/">old</a><BR/>',
        '<A HREF="/pub/time.series/">[To Parent Directory]</A><br><br>',
        '<A HREF="/pub/time.series/pr/x">',
        "12/31/2024 10:30AM <dir> ",
    ]
)
_page = st.tuples(
    st.sampled_from(["", "<html><body><pre>", "<PRE class=x>", "<pre", "<html><pre>"]),
    st.lists(st.one_of(_markup, _row_markup), max_size=30).map("".join),
    st.sampled_from(
        ["", "</pre><hr></body></html>\r\n", "</PRE></HTML >  ", "</pre>", "</pre></html>x", "</A>"]
    ),
).map("".join)


@settings(max_examples=1000, deadline=None)
@given(_page)
def test_the_linear_reading_finds_what_the_plain_patterns_find(text):
    assert _block_outcome(text) == _plain_block(text)
    rows, tail = _plain_rows(text)
    read = _listing.listing_rows(text)
    assert [(r.href, r.text, r.head, r.row and r.row.span()) for r in read] == rows
    assert [r.row and r.row.groupdict() for r in read] == [
        (m := _listing._ROW_HEAD.search(r.head)) and m.groupdict() for r in read
    ]
    assert _listing.trailing_text(text) == tail


_head_words = st.sampled_from(
    ["1", "12", "/", "2024", "20245", ":", "00", "AM", "pm", "M", "123", "&lt;dir&gt;", "<dir>", "x", "٣"]
    + ["1/1/2024", "12/31/2024", "10:30", "10:30AM", "9999999999999999", "x12/31/2024", "1/2/٣٣٣٣"]
)
_spaces = st.sampled_from([" ", "  ", "\t", "\x1c", "\x85", "\u3000", ""])
_gap = st.one_of(st.just(" "), _spaces)
_row_parts = st.tuples(  # a row's words (date, time, AM/PM, size), mostly valid, with spaces between
    st.one_of(
        st.just("6/6/2024"),
        st.sampled_from(["12/31/2024", "x12/31/2024", "1/1/20245", "13/45/2024", "1/٣/2024"]),
    ),
    _gap,
    st.one_of(st.just("8:30"), st.sampled_from(["12:00", "1:5", "10:30AM", "8:30 PM", ":30"])),
    _gap,
    st.one_of(st.just("AM"), st.sampled_from(["pm", "", "XM"])),
    _gap,
    st.one_of(
        st.just("15"), st.sampled_from(["1504795", "&lt;dir&gt;", "<DIR>", "1234567890123456", "-1", ""])
    ),
)


@settings(max_examples=2000, deadline=None)
@given(
    st.lists(st.tuples(_head_words, _spaces), max_size=6),
    st.one_of(_row_parts, st.none()),
    st.lists(st.tuples(_spaces, _head_words), max_size=1),
)
def test_a_row_head_is_read_as_the_plain_search_reads_it(before, row, after):
    head = "".join(w + s for w, s in before) + "".join(row or ()) + "".join(s + w for s, w in after)
    for text in (head, head.strip()):
        plain = _listing._ROW_HEAD.search(text)
        read = _listing._read_row_head(text)
        assert (read and (read.span(), read.groupdict())) == (plain and (plain.span(), plain.groupdict()))
