"""The `time.series/` root listing read into survey names, and discovered vs stored surveys."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.core.discovery import (
    MAX_SURVEY_CHARS,
    check_retire_guard,
    compare_surveys,
    describe_discovery,
    is_survey_name,
    parse_root_listing,
)
from flows.core.errors import IncompleteListing, ListingError, MassDeleteError
from flows.devkit.upstream_server import BLS_ROOT, render_iis_listing

ROOT = "https://download.bls.gov/pub/time.series/"

REAL = (
    "<html><head><title>download.bls.gov - /pub/time.series/</title></head><body><H1>download.bls.gov - "
    '/pub/time.series/</H1><hr>\r\n\r\n<pre><A HREF="/pub/">[To Parent Directory]</A><br><br>'
    '  3/18/2025  9:10 AM        &lt;dir&gt; <A HREF="/pub/time.series/ap/">ap</A><br>'
    ' 11/14/2025  8:30 AM        &lt;dir&gt; <A HREF="/pub/time.series/CU/">CU</A><br>'
    '  6/6/2024  8:30 AM        &lt;dir&gt; <A HREF="/pub/time.series/pr/">pr</A><br>'
    "</pre><hr></body></html>\r\n"
)


def _row(href: str, text: str, size: str = "&lt;dir&gt;") -> str:
    return f'  6/6/2024  8:30 AM  {size:>12} <A HREF="{href}">{text}</A><br>'


def _with(*rows: str) -> str:
    return REAL.replace("</pre>", "".join(rows) + "</pre>")


def test_real_root_layout_gives_lowercase_sorted_surveys():
    root = parse_root_listing(REAL, ROOT)
    assert root.surveys == ("ap", "cu", "pr")
    assert root.skipped == root.problems == root.files == ()
    assert root.url == ROOT
    assert parse_root_listing(REAL, ROOT.rstrip("/")).surveys == root.surveys


def test_folders_that_are_no_survey_names_are_skipped_and_reported():
    page = _with(
        _row("/pub/time.series/Not-A-Survey/", "Not-A-Survey"),
        _row("/pub/time.series/" + "a" * (MAX_SURVEY_CHARS + 1) + "/", "long"),
        _row("/pub/time.series/overview.txt", "overview.txt", "1234"),
    )
    root = parse_root_listing(page, ROOT)
    assert root.surveys == ("ap", "cu", "pr")
    assert root.skipped == ("Not-A-Survey", "a" * (MAX_SURVEY_CHARS + 1))
    assert "'Not-A-Survey' is not a survey name" in root.problems[0] and len(root.problems) == 2
    assert root.files == ("overview.txt",)


@pytest.mark.parametrize(
    "href",
    [
        "http://evil.example/pub/time.series/xx/",
        "//evil.example/pub/time.series/xx/",
        "/pub/other/xx/",
        "/pub/time.series/ap/xx/",
        "/pub/time.series/../xx/",
        "/pub/time.series/xx/?q=1",
        "/pub/time.series//",
    ],
)
def test_hrefs_leaving_the_root_are_skipped(href):
    root = parse_root_listing(_with(_row(href, "xx")), ROOT)
    assert root.surveys == ("ap", "cu", "pr")
    assert root.skipped == (href,)


def test_a_survey_listed_twice_or_in_two_cases_counts_once():
    root = parse_root_listing(
        _with(_row("/pub/time.series/AP/", "AP"), _row("/pub/time.series/ap/", "ap")), ROOT
    )
    assert root.surveys == ("ap", "cu", "pr")


@pytest.mark.parametrize(
    ("page", "reason"),
    [
        ("<html><body><h1>Access Denied</h1></body></html>", "not a directory listing"),
        ("", "not a directory listing"),
        ("<html><body><pre></pre></body></html>", "not a directory listing"),
        (REAL.split("  3/18")[0] + "</pre><hr></body></html>", "names no survey folders"),
        (
            REAL.split("  3/18")[0] + _row("/pub/time.series/x.txt", "x.txt", "10") + "</pre></html>",
            "names no survey folders",
        ),
        (REAL.split("  3/18")[0] + _row("/pub/time.series/No-Way/", "No-Way") + "</pre></html>", "no survey"),
    ],
)
def test_a_root_naming_no_survey_is_an_error_never_every_survey_gone(page, reason):
    with pytest.raises(ListingError, match=reason) as info:
        parse_root_listing(page, ROOT)
    assert ROOT in str(info.value)


def test_every_cut_of_the_root_is_refused_or_complete():
    whole = parse_root_listing(REAL, ROOT)
    end = REAL.lower().rindex("</html>") + len("</html>")
    for cut in range(len(REAL)):
        if cut >= end:
            assert parse_root_listing(REAL[:cut], ROOT) == whole
            continue
        with pytest.raises(ListingError):
            parse_root_listing(REAL[:cut], ROOT)
    with pytest.raises(IncompleteListing):
        parse_root_listing(REAL[: REAL.index("</pre>")], ROOT)


@pytest.mark.parametrize(
    ("name", "ok"), [("pr", True), ("a1", True), ("", False), ("p-r", False), ("PR", False), ("é", False)]
)
def test_survey_name_rule(name, ok):
    assert is_survey_name(name) is ok


def test_compare_and_describe():
    changes = compare_surveys(["pr", "ap", "cu"], ["zz", "pr", "cu"])
    assert (changes.new, changes.gone, changes.kept) == (("ap",), ("zz",), ("cu", "pr"))
    line = describe_discovery(ROOT, ["ap", "cu", "pr"], changes.new, changes.gone)
    assert line == (
        f"discovered 3 surveys at {ROOT}: 1 new (ap), 1 gone (zz; kept: pass --allow-mass-delete to remove)"
    )
    assert describe_discovery(ROOT, ["pr"], [], []) == f"discovered 1 surveys at {ROOT}: 0 new, 0 gone"
    many = describe_discovery(ROOT, [], [f"s{i:02d}" for i in range(12)], [], skipped=["X-Y"])
    assert "12 new (s00, " in many and "s09, ... 2 more)" in many and "1 folders skipped (X-Y" in many


# --------------------------------------------------------------------------- properties

_survey = st.from_regex(r"[a-z0-9]{1,32}", fullmatch=True)
_when = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2099, 12, 31))
_file = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,20}", fullmatch=True)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    surveys=st.dictionaries(_survey, _when, min_size=1, max_size=30),
    files=st.dictionaries(_file, st.tuples(st.integers(0, 10**12), _when), max_size=5),
    one_line=st.booleans(),
)
def test_any_rendered_root_round_trips(surveys, files, one_line):
    files = {n: v for n, v in files.items() if n not in surveys}
    rows = [(name, None, when) for name, when in surveys.items()]
    rows += [(name, size, when) for name, (size, when) in files.items()]
    page = render_iis_listing(BLS_ROOT, rows, one_line=one_line).decode()
    root = parse_root_listing(page, "http://127.0.0.1:8080" + BLS_ROOT)
    assert root.surveys == tuple(sorted(surveys))
    assert set(root.files) == set(files) and root.skipped == ()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=400))
def test_junk_raises_or_names_surveys_never_an_empty_list(page):
    try:
        root = parse_root_listing(page, ROOT)
    except ListingError:
        return
    assert root.surveys and all(is_survey_name(s) for s in root.surveys)


_pieces = st.sampled_from(
    [
        '<A HREF="/pub/time.series/ap/">ap</A><br>',
        '<A HREF="/pub/time.series/x.txt">x.txt</A>',
        '<A HREF="http://evil/pub/time.series/cu/">cu</A>',
        '<A HREF="/pub/">[To Parent Directory]</A>',
        "  6/6/2024  8:30 AM      &lt;dir&gt; ",
        "  6/6/2024  8:30 AM      15 ",
        "<br>",
        "</pre>",
        "<pre>",
        "<hr></body></html>",
        "</html>",
        "\r\n",
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_pieces, max_size=25))
def test_assembled_pages_raise_or_name_surveys_from_the_root_only(pieces):
    try:
        root = parse_root_listing("".join(pieces), ROOT)
    except ListingError:
        return
    assert root.surveys == ("ap",)


@given(st.lists(_survey, max_size=20), st.lists(_survey, max_size=20))
def test_compare_partitions_both_sides(discovered, stored):
    c = compare_surveys(discovered, stored)
    assert set(c.new) | set(c.kept) == set(discovered)
    assert set(c.gone) | set(c.kept) == set(stored)
    assert (
        not (set(c.new) & set(c.kept)) and not (set(c.gone) & set(c.kept)) and not (set(c.new) & set(c.gone))
    )
    for part in (c.new, c.gone, c.kept):
        assert list(part) == sorted(set(part))


# ---------------------------------------------------------------- unreadable rows hold their survey

_R = "/pub/time.series/"
_DIR = "  6/6/2024  8:30 AM        &lt;dir&gt; "
_SIZE = "  6/6/2024  8:30 AM          1234 "


def _a(href: str, text: str) -> str:
    return f'<A HREF="{href}">{text}</A><br>'


def _pct2(s: str) -> str:
    return "".join(f"%25{ord(c):02X}" for c in s)


def _wide(s: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) for c in s)


# Ways a root row naming survey `s` can fail to read as a clean survey folder.
MANGLES = {
    "no trailing slash": lambda s: _DIR + _a(_R + s, s),
    "query": lambda s: _DIR + _a(f"{_R}{s}/?x=1", s),
    "query, no slash": lambda s: _DIR + _a(f"{_R}{s}?x=1", s),
    "fragment": lambda s: _DIR + _a(f"{_R}{s}/#top", s),
    "size instead of <dir>": lambda s: _SIZE + _a(f"{_R}{s}/", s),
    "a file row": lambda s: _SIZE + _a(_R + s, s),
    "undated, no slash": lambda s: "  99/99/2024  8:30 AM  &lt;dir&gt; " + _a(_R + s, s),
    "href elsewhere, text names it": lambda s: _DIR + _a("http://evil.example/x/", s),
    "another host": lambda s: _DIR + _a(f"http://evil.example{_R}{s}/", s),
    "nested folder": lambda s: _DIR + _a(f"{_R}{s}/sub/", "sub"),
    "leaves and comes back": lambda s: _DIR + _a(f"{_R}../time.series/{s}/", s),
    "percent-encoded twice": lambda s: _DIR + _a(f"{_R}{_pct2(s)}/", _pct2(s)),
    "upper-case path": lambda s: _DIR + _a(f"/PUB/TIME.SERIES/{s.upper()}/", s.upper()),
    "trailing space": lambda s: _DIR + _a(f"{_R}{s} /", s + " "),
    "backslash": lambda s: _DIR + _a(f"{_R}{s}\\", s),
    "full-width letters": lambda s: _DIR + _a(f"{_R}{_wide(s)}/", _wide(s)),
    "zero-width space": lambda s: _DIR + _a(f"{_R}{s}\u200b/", s + "&#8203;"),
    "markup in the text": lambda s: _DIR + _a("http://evil.example/", f"<b>{s}</b>"),
    "single-quoted href": lambda s: _DIR + f"<A HREF='{_R}{s}/'>{s}</A><br>",
    "unquoted href": lambda s: _DIR + f"<A HREF={_R}{s}/>{s}</A><br>",
    "lower-case anchor, no text": lambda s: _DIR + f"<a href='{_R}{s}/'></a><br>",
    "no closing </A>": lambda s: _DIR + f'<A HREF="{_R}{s}/">{s}<br>',
    "stray text": lambda s: f"  6/6/2024  8:30 AM  {s} <br>",
    "parent link text": lambda s: _DIR + _a(f"{_R}{s}/", f"[To Parent Directory] {s}"),
}


@pytest.mark.parametrize("mangle", sorted(MANGLES))
@pytest.mark.parametrize("where", ["first", "last"])
def test_a_mangled_row_of_a_stored_survey_holds_it_never_gone(mangle, where):
    row = MANGLES[mangle]("pr")
    clean = REAL.replace(
        '  6/6/2024  8:30 AM        &lt;dir&gt; <A HREF="/pub/time.series/pr/">pr</A><br>', ""
    )
    assert "time.series/pr/" not in clean
    if where == "first":
        page = clean.replace("<br><br>", "<br><br>" + row, 1)
    else:
        page = clean.replace("</pre>", row + "</pre>")
    root = parse_root_listing(page, ROOT)
    changes = compare_surveys(root.surveys, ["ap", "cu", "pr", "zz"], root.held)
    assert "pr" not in changes.gone and "pr" not in changes.new
    assert changes.gone == ("zz",)  # a survey no row names is still gone
    assert set(root.surveys) <= {"ap", "cu", "pr"}  # a row swallowed by a broken one is held, not gone
    if "pr" not in root.surveys:
        assert changes.held == ("pr",) and "pr" in root.held


def test_a_clean_root_holds_nothing_and_junk_folders_hold_only_what_they_spell():
    assert parse_root_listing(REAL, ROOT).held == {}
    page = _with(_row(_R + "Not-A-Survey/", "Not-A-Survey"), _row(_R + "overview.txt", "overview.txt", "9"))
    root = parse_root_listing(page, ROOT)
    assert set(root.held) == {"not", "a", "survey", "overview", "txt"}
    changes = compare_surveys(root.surveys, ["pr", "zz", "survey"], root.held)
    assert (changes.gone, changes.held, changes.kept) == (("zz",), ("survey",), ("pr",))


_mangle = st.sampled_from(sorted(MANGLES))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    clean=st.lists(_survey, min_size=1, max_size=6, unique=True),
    mangled=st.dictionaries(_survey, _mangle, min_size=1, max_size=6),
    absent=st.lists(_survey, max_size=4),
    shuffle=st.randoms(use_true_random=False),
)
def test_any_mangled_row_never_makes_its_survey_gone(clean, mangled, absent, shuffle):
    """For any stored survey, a root page on which its row is mangled (in any of the MANGLES ways,
    among clean rows of other surveys) never lists it as gone, nor any survey listed cleanly."""
    rows = [_row(f"{_R}{s}/", s) for s in clean if s not in mangled] + [
        MANGLES[how](s) for s, how in mangled.items()
    ]
    shuffle.shuffle(rows)
    page = REAL.split("  3/18")[0] + "".join(rows) + "</pre><hr></body></html>\r\n"
    stored = set(clean) | set(mangled) | set(absent)
    try:
        root = parse_root_listing(page, ROOT)
    except ListingError:
        return  # nothing read, nothing gone
    changes = compare_surveys(root.surveys, stored, root.held)
    assert not set(changes.gone) & (set(clean) | set(mangled))
    assert set(root.surveys) <= set(clean) | set(mangled)


def test_compare_with_held_names():
    changes = compare_surveys(["pr"], ["pr", "cu", "zz"], held=["cu", "ap"])
    assert (changes.new, changes.gone, changes.kept, changes.held) == ((), ("zz",), ("pr",), ("cu",))


@pytest.mark.parametrize(
    ("retiring", "stored", "fraction", "refused"),
    [
        (0, 0, 0.0, False),
        (1, 10, 0.1, False),
        (2, 10, 0.1, True),
        (1, 2, 0.1, True),
        (1, 2, 0.5, False),
        (60, 60, 1.0, False),
        (3, 0, 0.5, True),
        (1, 1, 0.99, True),
    ],
)
def test_retire_guard_is_a_share_of_the_stored_surveys(retiring, stored, fraction, refused):
    if not refused:
        check_retire_guard(retiring, stored, fraction)
        return
    with pytest.raises(MassDeleteError, match=rf"refusing to retire {retiring} of \d+ stored surveys"):
        check_retire_guard(retiring, stored, fraction)


def test_describe_counts_every_skipped_folder_but_quotes_only_the_first_few():
    line = describe_discovery(ROOT, ["pr"], [], [], skipped=["a-1", "b-2"], skipped_count=50_000, held=["cu"])
    assert line.endswith("; 50,000 folders skipped (a-1, b-2, ... 49,998 more: not survey folders)")
    assert "1 held (cu: a root row that is no clean folder may name them)" in line
    long = describe_discovery(ROOT, ["pr"], [], [], skipped=["x" * 10_000])
    assert len(long) < 400
