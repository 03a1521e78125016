"""The worst shapes of upstream bytes we could think of, for each parser, at any size.

Each builder takes a size in characters (or bytes) and returns a body of about that size shaped
to defeat a parser's patterns: a terminator that never comes (`<A HREF=...>` without `</A>`, `<pre`
without `>`), runs a pattern scans from many starts (whitespace, `<br>`, dates), fields a regex
may backtrack through (a number of 10^6 digits ending in `x`), and bodies that are merely large.
`tests/core/test_parsers_linear.py` checks that every parser stays linear on them and
`benchmarks/parse_bench.py` prints the times.
"""

from __future__ import annotations

from collections.abc import Callable

LISTING_URL = "https://download.bls.gov/pub/time.series/pr/"
ROOT_URL = "https://download.bls.gov/pub/time.series/"
PAGE_HEAD = "<html><head><title>x</title></head><body><H1>x</H1><hr>\r\n\r\n<pre>"
PAGE_TAIL = "</pre><hr></body></html>\r\n"
ROW = (
    ' 6/6/2024  8:30 AM      1504795 <A HREF="/pub/time.series/pr/pr.data.0.Current">'
    "pr.data.0.Current</A><br>"
)
FOLDER = ' 6/6/2024  8:30 AM        &lt;dir&gt; <A HREF="/pub/time.series/ab/">ab</A><br>'
BLS_HEADER = b"series_id        \tyear\tperiod\t       value\tfootnote_codes\r\n"
BLS_ROW = b"PRS30006032      \t2019\tQ01\t         1.5\t\r\n"


def repeat(unit: str, size: int) -> str:
    """`unit` repeated to at least `size` characters."""
    return unit * (size // len(unit) + 1)


def repeat_bytes(unit: bytes, size: int) -> bytes:
    return unit * (size // len(unit) + 1)


def listing_page(rows: str) -> str:
    """A complete IIS listing page around `rows` (the `<pre>` block)."""
    return PAGE_HEAD + rows + PAGE_TAIL


def _one_row_after(head: str) -> str:
    return listing_page(head + '<A HREF="/pub/time.series/pr/x">x</A>')


# Pages for `parse_listing` and `parse_root_listing`, built to about `size` characters.
LISTING_SHAPES: dict[str, Callable[[int], str]] = {
    "anchors without </A>": lambda n: listing_page(repeat('<A HREF="/pub/time.series/pr/x">x', n)),
    "anchors without closing quote": lambda n: listing_page(repeat('<A HREF="', n)),
    "anchors without >": lambda n: listing_page(repeat('<A HREF="/x"', n)),
    "anchors without a quote": lambda n: listing_page(repeat("<A HREF=", n)),
    "<A and whitespace runs": lambda n: listing_page(repeat("<A" + " " * 64, n)),
    "opened anchors, one </A> at the end": lambda n: listing_page(repeat('<A HREF="x">', n) + "</A>"),
    "no <pre>, only <": lambda n: repeat("<", n),
    "no <pre>, unclosed tags": lambda n: repeat("<a ", n),
    "no <pre>, unclosed anchors": lambda n: repeat('<A HREF="x">', n),
    "<pre without >": lambda n: repeat("<pre ", n),
    "</pre without >": lambda n: PAGE_HEAD + repeat("</pre   ", n),
    "<br> runs in one row": lambda n: _one_row_after(repeat("<br  ", n)),
    "whitespace before </html>": lambda n: PAGE_HEAD + "</pre>" + repeat("</html>" + " " * 50 + "x", n),
    "whitespace run after </html>": lambda n: PAGE_HEAD + "</pre></html>" + " " * n + "x",
    "dates in one row": lambda n: _one_row_after(repeat("12/12/2024 ", n)),
    "dates glued in one word": lambda n: _one_row_after(repeat("12/12/2024", n) + " 1:00 AM 1 "),
    "dates as the size": lambda n: _one_row_after("12/12/2024 1:00 AM " + repeat("1/1/2024", n)),
    "dates and whitespace runs": lambda n: _one_row_after(repeat("1/1/2024" + " " * 30, n)),
    "a whitespace run in a row": lambda n: _one_row_after("1/1/2024  1:00 AM 12" + " " * n + "x"),
    "one huge href": lambda n: listing_page(' 6/6/2024  8:30 AM  1 <A HREF="' + "a" * n + '">x</A>'),
    "one huge link text of entities": lambda n: listing_page(
        ' 6/6/2024  8:30 AM  1 <A HREF="/pub/time.series/pr/x">' + repeat("&amp;", n) + "</A>"
    ),
    "many file rows": lambda n: listing_page(repeat(ROW, n)),
    "many folder rows": lambda n: listing_page(repeat(FOLDER, n)),
}


def _bls(lines: bytes) -> bytes:
    """A BLS data file: the header, one good row, then `lines`."""
    return BLS_HEADER + BLS_ROW + lines


def _bls_value(value: bytes) -> bytes:
    return _bls(b"PRS1\t2019\tQ01\t" + value + b"\t\r\n")


# BLS data files for `read_bls`, built to about `size` bytes.
BLS_SHAPES: dict[str, Callable[[int], bytes]] = {
    "a value of digits ending in x": lambda n: _bls_value(b"1" * n + b"x"),
    "a value of digits, a point, x": lambda n: _bls_value(b"1" * n + b".x"),
    "a value with a long exponent, x": lambda n: _bls_value(b"1e" + b"1" * n + b"x"),
    "a value of blanks, x": lambda n: _bls_value(b" " * n + b"x"),
    "a series id of digits, -": lambda n: _bls(b"P" + b"1" * n + b"-\t2019\tQ01\t1\t\r\n"),
    "many distinct values the float parser refuses": lambda n: _bls(
        b"".join(b"PRS1\t2019\tQ01\t%de\t\r\n" % i for i in range(n // 20))
    ),
    "one line without tabs": lambda n: _bls(b"x" * n + b"\r\n"),
    "many lines without tabs": lambda n: _bls(repeat_bytes(b"x\r\n", n)),
    "many lines of tabs": lambda n: _bls(repeat_bytes(b"\t" * 30 + b"\r\n", n)),
    "many stray CRs and NULs": lambda n: _bls(repeat_bytes(b"PRS1\t2019\r\tQ01\t1\x00\t\r\n", n)),
    "many lines not UTF-8": lambda n: _bls(repeat_bytes(b"PRS1\t2019\tQ01\t1\t\x80\r\n", n)),
    "many distinct bad years": lambda n: _bls(
        b"".join(b"PRS1\t%d\tQ01\t1\t\r\n" % (10_000 + i) for i in range(n // 20))
    ),
    "a wide header": lambda n: _wide(n // 16),
    "many good rows": lambda n: BLS_HEADER + repeat_bytes(BLS_ROW, n),
}


def _wide(columns: int) -> bytes:
    """A header of `columns` extra columns and one row filling them."""
    header = b"series_id\tyear\tperiod\tvalue" + b"".join(b"\tc%d" % i for i in range(columns))
    return header + b"\r\n" + b"PRS1\t2019\tQ01\t1" + b"\t" * columns + b"\r\n"


# DataUSA population bodies for `normalise_population`, built to about `size` bytes.
POPULATION_SHAPES: dict[str, Callable[[int], bytes]] = {
    "deeply nested lists": lambda n: b'{"data": ' + b"[" * (n // 2) + b"]" * (n // 2) + b"}",
    "deeply nested objects": lambda n: b'{"data": [' + b'{"a":' * (n // 5) + b"1" + b"}" * (n // 5) + b"]}",
    "a number of n digits": lambda n: b'{"data": [{"Year": 2019, "Population": ' + b"1" * n + b"}]}",
    "a float of n digits": lambda n: b'{"data": [{"Year": 2019, "Population": 1.' + b"1" * n + b"}]}",
    "an exponent of n digits": lambda n: b'{"data": [{"Year": 2019, "Population": 1e' + b"1" * n + b"}]}",
    "a long string": lambda n: b'{"data": [{"Year": 2019, "Population": "' + b"a" * n + b'"}]}',
    "a string of escapes": lambda n: b'{"data": [{"Year": "' + repeat_bytes(b"\\u0041", n) + b'"}]}',
    "an unterminated string": lambda n: b'{"data": [{"Year": "' + b"a" * n,
    "an error of n characters": lambda n: b'{"error": "' + b"e" * n + b'"}',
    "many keys, no data": lambda n: b"{" + b",".join(b'"k%d": 1' % i for i in range(n // 10)) + b"}",
    "whitespace then junk": lambda n: b" " * n + b"x",
    "many rows": lambda n: (
        b'{"data": ['
        + b",".join(b'{"Year": %d, "Population": 1}' % (1800 + i % 400) for i in range(n // 32))
        + b"]}"
    ),
}
