"""A real HTTP server on 127.0.0.1 playing BLS and DataUSA, for tests, the demo and benchmarks.

BLS side: the `time.series/` root listing (one `<dir>` row per survey, dated by its newest file)
and an IIS-style directory listing at `/pub/time.series/<survey>/` (uppercase tags,
absolute hrefs, `[To Parent Directory]`, `6/6/2024  8:30 AM` dates, right-aligned sizes, all rows
on one line as download.bls.gov serves them) and the files with Content-Length and Last-Modified.
DataUSA side: the population body at the tesseract path.

Everything a test needs to provoke is a switch: status bursts with Retry-After, bodies cut
mid-stream, a refused (403) / HTML-error / empty listing, a User-Agent check like BLS's. Every
request is logged (method, path, status, bytes sent) under a lock, so tests assert on traffic.
Large files can be `GeneratedFile`s that stream N deterministic bytes without being held in memory.

Use as a context manager (`with UpstreamServer(...) as up:`) or from a script
(`python -m flows.devkit.upstream_server --from-dir pr=/path/to/pr`).
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import random
import re
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Protocol, TypeVar
from urllib.parse import urlsplit

BLS_ROOT = "/pub/time.series/"
POPULATION_PATH = "/tesseract/data.jsonrecords"
POPULATION_QUERY = "cube=acs_yg_total_population_1&drilldowns=Year%2CNation&locale=en&measures=Population"
HOST_NAME = "download.bls.gov"
# The server's clock for listed dates: fixed start, one minute per change, so every change shows.
CLOCK_START = datetime(2024, 6, 6, 8, 30, tzinfo=UTC)
_BLOCK = 1024 * 1024


@dataclass(frozen=True)
class GeneratedFile:
    """`size` deterministic bytes (a seeded 1 MiB block repeated), streamed without holding them."""

    size: int
    seed: int = 0

    def block(self) -> bytes:
        return random.Random(self.seed).randbytes(min(_BLOCK, max(self.size, 1)))

    def iter_chunks(self, chunk_size: int = 256 * 1024) -> Iterator[bytes]:
        block = self.block()
        sent = 0
        while sent < self.size:
            offset = sent % len(block)
            n = min(chunk_size, self.size - sent, len(block) - offset)
            yield block[offset : offset + n]
            sent += n

    def sha256(self) -> str:
        sha = hashlib.sha256()
        for chunk in self.iter_chunks():
            sha.update(chunk)
        return sha.hexdigest()


Body = bytes | GeneratedFile


@dataclass
class _File:
    body: Body
    last_modified: datetime

    @property
    def size(self) -> int:
        return len(self.body) if isinstance(self.body, bytes) else self.body.size

    def chunks(self, chunk_size: int = 256 * 1024) -> Iterator[bytes]:
        if isinstance(self.body, bytes):
            for i in range(0, len(self.body), chunk_size):
                yield self.body[i : i + chunk_size]
        else:
            yield from self.body.iter_chunks(chunk_size)


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str
    status: int
    bytes_sent: int
    user_agent: str
    # time.monotonic() when the request line was read and when the response was done: what the
    # politeness tests and the scale benchmark read peak concurrency and requests/s from.
    started: float = 0.0
    ended: float = 0.0


@dataclass
class _Fault:
    pattern: str
    status: int
    remaining: int | None  # None: until cleared
    retry_after: str | None = None
    body: bytes = b""
    content_type: str = "text/html"


@dataclass
class _Cut:
    pattern: str
    after_bytes: int
    remaining: int | None
    announce_length: bool = True  # False: no Content-Length, the close looks like a normal end


@dataclass
class _Redirect:
    pattern: str
    location: str
    status: int
    remaining: int | None


@dataclass
class _Trickle:
    pattern: str
    bytes_per_second: int
    remaining: int | None


@dataclass
class _Delay:
    pattern: str
    seconds: float
    remaining: int | None


class _Rule(Protocol):
    """A fault, cut, redirect or trickle: the paths it applies to and how many more times."""

    pattern: str
    remaining: int | None


_RuleT = TypeVar("_RuleT", bound=_Rule)


@dataclass
class _Survey:
    files: dict[str, _File] = field(default_factory=dict)
    folders: dict[str, datetime] = field(default_factory=dict)
    listing_mode: str = "ok"  # one of LISTING_MODES
    redate_on: str | None = None  # one of REDATE_ON: files re-dated (same bytes) on every look


LISTING_MODES = ("ok", "html_error", "empty")
REDATE_ON = ("listing", "download")

ERROR_PAGE = (
    b"<html><head><title>Access Denied</title></head><body><h1>Access Denied</h1>"
    b"<p>Please contact the site administrator.</p></body></html>"
)


class UpstreamServer:
    """A threaded loopback HTTP server playing BLS and DataUSA. Start with `with` or `start()`."""

    def __init__(
        self,
        surveys: Mapping[str, Mapping[str, Body]] | None = None,
        population: bytes | None = None,
        *,
        require_contact: bool = False,
        one_line_listing: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        self._lock = threading.Lock()
        # Responses whose last bytes are on their way but not yet logged: reading the log waits for
        # them, so a client that has its answer always finds its request in the log.
        self._logged = threading.Condition(self._lock)
        self._finishing = 0
        self._clock = CLOCK_START
        self._surveys: dict[str, _Survey] = {}
        self._root_extra: dict[str, tuple[int | None, datetime]] = {}  # name -> (size or None: folder, date)
        self._root_mode = "ok"  # one of LISTING_MODES
        self._faults: list[_Fault] = []
        self._cuts: list[_Cut] = []
        self._redirects: list[_Redirect] = []
        self._trickles: list[_Trickle] = []
        self._delays: list[_Delay] = []
        self._stopping = threading.Event()
        self._log: list[LoggedRequest] = []
        self.population: bytes | None = population
        self.population_last_modified = CLOCK_START
        self.require_contact = require_contact
        self.one_line_listing = one_line_listing
        self._host, self._port = host, port
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        for survey, files in (surveys or {}).items():
            self._surveys[survey] = _Survey()
            for name, body in sorted(files.items()):
                self._surveys[survey].files[name] = _File(body, self._clock)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> UpstreamServer:
        handler = type("_BoundHandler", (_Handler,), {"upstream": self})
        self._httpd = ThreadingHTTPServer((self._host, self._port), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="upstream", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # trickling responses end instead of holding the shutdown
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> UpstreamServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("server not started")
        host, port = self._httpd.socket.getsockname()[:2]  # what `server_address` holds once bound
        return f"http://{host}:{port}"

    @property
    def bls_base_url(self) -> str:
        return self.base_url + BLS_ROOT

    @property
    def population_url(self) -> str:
        return f"{self.base_url}{POPULATION_PATH}?{POPULATION_QUERY}"

    def survey_url(self, survey: str) -> str:
        return f"{self.bls_base_url}{survey}/"

    # ------------------------------------------------------------------ content mutators

    def _tick(self) -> datetime:
        self._clock += timedelta(minutes=1)
        return self._clock

    def put_file(self, survey: str, name: str, body: Body, last_modified: datetime | None = None) -> None:
        """Add or replace a file; its listed date moves forward (a minute per change) unless given."""
        with self._lock:
            when = last_modified or self._tick()
            self._surveys.setdefault(survey, _Survey()).files[name] = _File(body, when)

    def replace_survey(self, survey: str, files: Mapping[str, Body]) -> None:
        """Make the directory hold exactly `files`: changed or new ones get a new date, others keep theirs."""
        with self._lock:
            state = self._surveys.setdefault(survey, _Survey())
            for name in [n for n in state.files if n not in files]:
                del state.files[name]
            when = self._tick()
            for name, body in sorted(files.items()):
                old = state.files.get(name)
                if old is None or old.body != body:
                    state.files[name] = _File(body, when)

    def touch_file(self, survey: str, name: str) -> None:
        """Same bytes, newer listed date (BLS republishes unchanged files sometimes)."""
        with self._lock:
            self._surveys[survey].files[name].last_modified = self._tick()

    def redate(self, survey: str, on: str | None = "listing") -> None:
        """An upstream that never settles: the same bytes under a new date on every `listing` of the
        survey (each file), or after each `download` of a file (that file: what a run moved is
        changed again). None: dates change only when told."""
        if on is not None and on not in REDATE_ON:
            raise ValueError(f"redate on must be one of {REDATE_ON} or None")
        with self._lock:
            self._surveys.setdefault(survey, _Survey()).redate_on = on

    def _redated(self, survey: str, name: str | None = None) -> None:
        """The `redate` hook: a listing (name None) or a whole download of `name` was just served."""
        with self._lock:
            state = self._surveys.get(survey)
            if state is None or state.redate_on != ("listing" if name is None else "download"):
                return
            when = self._tick()
            for each, file in state.files.items():
                if name is None or each == name:
                    file.last_modified = when

    def remove_file(self, survey: str, name: str) -> None:
        with self._lock:
            del self._surveys[survey].files[name]

    def add_folder(self, survey: str, name: str) -> None:
        with self._lock:
            self._surveys.setdefault(survey, _Survey()).folders[name] = self._tick()

    def add_survey(self, survey: str, files: Mapping[str, Body]) -> None:
        """A new survey folder at the root holding `files` (dated now); replaces one of that name."""
        with self._lock:
            when = self._tick()
            self._surveys[survey] = _Survey({n: _File(b, when) for n, b in sorted(files.items())})

    def remove_survey(self, survey: str) -> None:
        """The survey's folder disappears: the root no longer lists it, its listing answers 404."""
        with self._lock:
            del self._surveys[survey]

    def add_root_entry(
        self, name: str, size: int | None = None, last_modified: datetime | None = None
    ) -> None:
        """A root-level row that is no survey: a folder (size None) or a file (listed only)."""
        with self._lock:
            self._root_extra[name] = (size, last_modified or self._tick())

    def surveys(self) -> list[str]:
        with self._lock:
            return sorted(self._surveys)

    def files(self, survey: str) -> dict[str, Body]:
        with self._lock:
            return {n: f.body for n, f in self._surveys[survey].files.items()}

    def listed(self, survey: str) -> dict[str, tuple[int, datetime]]:
        """name → (size, listed last-modified, minute resolution) as the listing shows them."""
        with self._lock:
            return {n: (f.size, f.last_modified) for n, f in self._surveys[survey].files.items()}

    def set_population(self, body: bytes | None) -> None:
        with self._lock:
            self.population = body
            self.population_last_modified = self._tick()

    # ------------------------------------------------------------------ fault switches

    def set_listing_mode(self, survey: str, mode: str) -> None:
        """`ok`, `html_error` (200 with an HTML page that is no listing) or `empty` (no entries)."""
        if mode not in LISTING_MODES:
            raise ValueError(f"listing mode must be one of {LISTING_MODES}")
        with self._lock:
            self._surveys.setdefault(survey, _Survey()).listing_mode = mode

    def set_root_listing_mode(self, mode: str) -> None:
        """The root listing: `ok`, `html_error` (200 with an HTML page that is no listing) or `empty`."""
        if mode not in LISTING_MODES:
            raise ValueError(f"listing mode must be one of {LISTING_MODES}")
        with self._lock:
            self._root_mode = mode

    def fail(
        self,
        pattern: str,
        status: int,
        times: int | None = 1,
        retry_after: str | int | None = None,
        body: bytes = ERROR_PAGE,
        content_type: str = "text/html",
    ) -> None:
        """The next `times` requests whose path matches `pattern` (fnmatch) get `status` (None: forever)."""
        with self._lock:
            ra = None if retry_after is None else str(retry_after)
            self._faults.append(_Fault(pattern, status, times, ra, body, content_type))

    def cut(
        self, pattern: str, after_bytes: int, times: int | None = 1, *, announce_length: bool = True
    ) -> None:
        """The next `times` GETs matching `pattern` (files or listings) close after `after_bytes`.

        With `announce_length` the full Content-Length is sent (the client can see the cut); without
        it the body is close-delimited, so the cut is indistinguishable from a normal end.
        """
        with self._lock:
            self._cuts.append(_Cut(pattern, after_bytes, times, announce_length))

    def redirect(self, pattern: str, location: str, status: int = 302, times: int | None = None) -> None:
        """GETs matching `pattern` answer `status` with `Location: location` (relative or absolute)."""
        with self._lock:
            self._redirects.append(_Redirect(pattern, location, status, times))

    def trickle(self, pattern: str, bytes_per_second: int = 1, times: int | None = None) -> None:
        """GETs matching `pattern` send their body at `bytes_per_second` (a slow or hostile peer)."""
        with self._lock:
            self._trickles.append(_Trickle(pattern, max(1, bytes_per_second), times))

    def delay(self, pattern: str, seconds: float, times: int | None = None) -> None:
        """GETs matching `pattern` are taken up `seconds` late: their start is logged, and their
        answer sent, only then (a busy server, a slow network in; what a client cannot see)."""
        with self._lock:
            self._delays.append(_Delay(pattern, seconds, times))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
            self._delays.clear()
            self._cuts.clear()
            self._redirects.clear()
            self._trickles.clear()
            for survey in self._surveys.values():
                survey.listing_mode = "ok"
            self._root_mode = "ok"

    def _take(self, items: list[_RuleT], path: str) -> _RuleT | None:
        for item in items:
            if fnmatch.fnmatchcase(path, item.pattern) and (item.remaining is None or item.remaining > 0):
                if item.remaining is not None:
                    item.remaining -= 1
                return item
        return None

    # ------------------------------------------------------------------ request log

    def _record(self, entry: LoggedRequest, finishing: bool = False) -> None:
        with self._logged:
            self._log.append(entry)
            if finishing:
                self._finishing -= 1
                self._logged.notify_all()

    @property
    def requests(self) -> list[LoggedRequest]:
        with self._logged:
            self._logged.wait_for(lambda: self._finishing == 0, timeout=5.0)
            return list(self._log)

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    def file_gets(self, survey: str | None = None) -> list[LoggedRequest]:
        """GETs of BLS files (not listings)."""
        prefix = BLS_ROOT + (f"{survey}/" if survey else "")
        return [
            r
            for r in self.requests
            if r.method == "GET" and r.path.startswith(prefix) and not r.path.endswith("/")
        ]

    def listing_gets(self, survey: str | None = None) -> list[LoggedRequest]:
        """GETs of survey listings (of `survey`, or of any); the root's are `root_gets`."""
        return [
            r
            for r in self.requests
            if r.method == "GET"
            and r.path.startswith(BLS_ROOT)
            and r.path.endswith("/")
            and r.path != BLS_ROOT
            and (survey is None or r.path == f"{BLS_ROOT}{survey}/")
        ]

    def root_gets(self) -> list[LoggedRequest]:
        """GETs of the `time.series/` root listing (what survey discovery reads)."""
        return [r for r in self.requests if r.method == "GET" and r.path == BLS_ROOT]

    def peak_concurrency(self, prefix: str = BLS_ROOT) -> int:
        """Most requests under `prefix` in flight at one instant (from the logged start/end times)."""
        edges = sorted(
            [(r.started, 1) for r in self.requests if r.path.startswith(prefix)]
            + [(r.ended, -1) for r in self.requests if r.path.startswith(prefix)],
            key=lambda e: (e[0], e[1]),  # an end before a start at the same instant
        )
        peak = current = 0
        for _, step in edges:
            current += step
            peak = max(peak, current)
        return peak

    def peak_rate(self, window: float = 1.0, prefix: str = BLS_ROOT) -> int:
        """Most requests under `prefix` started within any `window` seconds."""
        starts = sorted(r.started for r in self.requests if r.path.startswith(prefix))
        peak = first = 0
        for last, when in enumerate(starts):
            while when - starts[first] >= window:
                first += 1
            peak = max(peak, last - first + 1)
        return peak

    # ------------------------------------------------------------------ rendering

    def _root_html(self) -> bytes:
        """One folder row per survey, dated by its newest file (the clock for an empty one), and
        the root-level entries a test added."""
        with self._lock:
            mode = self._root_mode
            rows: list[tuple[str, int | None, datetime]] = [
                (name, None, max((f.last_modified for f in state.files.values()), default=self._clock))
                for name, state in self._surveys.items()
            ]
            rows += [(name, size, when) for name, (size, when) in self._root_extra.items()]
        if mode == "html_error":
            return ERROR_PAGE
        if mode == "empty":
            rows = []
        return render_iis_listing(BLS_ROOT, rows, one_line=self.one_line_listing)

    def _listing_html(self, survey: str) -> bytes | None:
        self._redated(survey)
        with self._lock:
            state = self._surveys.get(survey)
            if state is None:
                return None
            mode = state.listing_mode
            rows: list[tuple[str, int | None, datetime]] = [
                (n, f.size, f.last_modified) for n, f in state.files.items()
            ]
            rows += [(n, None, when) for n, when in state.folders.items()]
        if mode == "html_error":
            return ERROR_PAGE
        if mode == "empty":
            rows = []
        return render_iis_listing(f"{BLS_ROOT}{survey}/", rows, one_line=self.one_line_listing)


def _iis_date(when: datetime) -> str:
    hour = when.hour % 12 or 12
    ampm = "AM" if when.hour < 12 else "PM"
    date = f"{when.month}/{when.day}/{when.year}"
    return f"{date:>10} {f'{hour}:{when.minute:02d} {ampm}':>8}"


def render_iis_listing(
    directory: str,
    rows: list[tuple[str, int | None, datetime]],
    *,
    one_line: bool = True,
    host: str = HOST_NAME,
) -> bytes:
    """An IIS directory listing as download.bls.gov serves it. A size of None is a folder."""
    parent = directory.rstrip("/").rsplit("/", 1)[0] + "/"
    entries = [f'<A HREF="{parent}">[To Parent Directory]</A><br><br>']
    for name, size, when in sorted(rows, key=lambda r: r[0]):
        size_text = "&lt;dir&gt;" if size is None else str(size)
        href = f"{directory}{name}" + ("/" if size is None else "")
        entries.append(f'{_iis_date(when)} {size_text:>12} <A HREF="{href}">{name}</A><br>')
    sep = "" if one_line else "\r\n"
    html = (
        f"<html><head><title>{host} - {directory}</title></head><body>"
        f"<H1>{host} - {directory}</H1><hr>\r\n\r\n"
        f"<pre>{sep.join(entries)}</pre><hr></body></html>\r\n"
    )
    return html.encode("utf-8")


_CONTACT = re.compile(r"@|https?://")


class _Handler(BaseHTTPRequestHandler):
    upstream: UpstreamServer
    protocol_version = "HTTP/1.1"
    server_version = "Microsoft-IIS/10.0"
    sys_version = ""
    # TCP_NODELAY, as IIS and other production servers send: headers and body go out as separate
    # writes, and with Nagle on, the body waited for the client's delayed ACK of the headers, 40 ms
    # on every keep-alive response (44 ms per 4 KB GET measured, 1 ms without), so a benchmark of
    # small files measured that stall, not the client.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:  # the request log replaces stderr noise
        pass

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        up = self.upstream
        path = urlsplit(self.path).path
        ua = self.headers.get("User-Agent", "")
        with up._lock:
            late = up._take(up._delays, path)
        if late is not None:
            time.sleep(late.seconds)
        started = time.monotonic()
        sent = 0
        status = 500
        self._marked_last = False
        self._ended: float | None = None
        try:
            if up.require_contact and not _CONTACT.search(ua):
                status = self._simple(403, ERROR_PAGE, head=head)
                return
            with up._lock:
                fault = up._take(up._faults, path)
                moved = None if head else up._take(up._redirects, path)
            if moved is not None:
                status = self._simple(moved.status, b"", head=head, headers={"Location": moved.location})
                return
            if fault is not None:
                extra = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
                status = self._simple(fault.status, fault.body, fault.content_type, head, extra)
                return
            if path == POPULATION_PATH:
                with up._lock:
                    body, when = up.population, up.population_last_modified
                if body is None:
                    status = self._simple(404, b'{"error":"not found"}', "application/json", head)
                    return
                status = 200
                sent = self._body(path, [body], len(body), "application/json", when, head)
                return
            if not path.startswith(BLS_ROOT):
                status = self._simple(404, b"<html><body>Not Found</body></html>", head=head)
                return
            rest = path[len(BLS_ROOT) :]
            if rest == "":
                root = up._root_html()
                status = 200
                sent = self._body(path, [root], len(root), "text/html", None, head)
                return
            if rest.endswith("/") and rest.count("/") == 1:
                listing = up._listing_html(rest[:-1])
                if listing is None:
                    status = self._simple(404, b"<html><body>Not Found</body></html>", head=head)
                    return
                status = 200
                sent = self._body(path, [listing], len(listing), "text/html", None, head)
                return
            survey, _, name = rest.partition("/")
            with up._lock:
                state = up._surveys.get(survey)
                file = state.files.get(name) if state else None
            if file is None:
                status = self._simple(404, b"<html><body>Not Found</body></html>", head=head)
                return
            status = 200
            sent = self._body(path, file.chunks(), file.size, "text/plain", file.last_modified, head)
            if not head and sent == file.size:
                up._redated(survey, name)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            sent = sent or self.__dict__.pop("_simple_sent", 0)
            ended = self._ended if self._ended is not None else time.monotonic()
            entry = LoggedRequest(self.command, path, status, sent, ua, started, ended)
            up._record(entry, finishing=self._marked_last)

    def _last_bytes(self) -> None:
        """Called just before a response's last bytes go out: the log is read only once it is logged."""
        if not self._marked_last:
            with self.upstream._logged:
                self.upstream._finishing += 1
            self._marked_last = True

    def _body(
        self,
        path: str,
        chunks: Iterator[bytes] | list[bytes],
        size: int,
        content_type: str,
        last_modified: datetime | None,
        head: bool,
    ) -> int:
        """Send a 200 body, honouring the cut and trickle switches; returns the bytes sent."""
        up = self.upstream
        with up._lock:
            cut = None if head else up._take(up._cuts, path)
            slow = None if head else up._take(up._trickles, path)
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        if cut is None or cut.announce_length:
            self.send_header("Content-Length", str(size))
        else:
            self.send_header("Connection", "close")
        if last_modified is not None:
            self.send_header("Last-Modified", _http_date(last_modified))
        limit = cut.after_bytes if cut is not None else None
        end = size if limit is None else min(limit, size)
        if head or end == 0:
            self._last_bytes()
        self.end_headers()
        if head:
            return 0
        sent = 0
        for chunk in chunks:
            if limit is not None and sent + len(chunk) >= limit:
                chunk = chunk[: limit - sent]
            last = sent + len(chunk) >= end
            if slow is not None:
                sent += self._trickle(chunk, slow.bytes_per_second, last)
            else:
                if last:
                    self._last_bytes()
                self.wfile.write(chunk)
                sent += len(chunk)
            if limit is not None and sent >= limit:
                break
        if cut is not None:
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
        return sent

    def _trickle(self, chunk: bytes, rate: int, last: bool = False) -> int:
        sent = 0
        for start in range(0, len(chunk), rate):
            if self.upstream._stopping.is_set():
                raise BrokenPipeError("server stopping")
            if last and start + rate >= len(chunk):
                self._last_bytes()
            self.wfile.write(chunk[start : start + rate])
            self.wfile.flush()
            sent += len(chunk[start : start + rate])
            if last and start + rate >= len(chunk):
                # The client has the whole body now and may send its next request: the log ends
                # the request here, not after the pause below (which once made the upstream count
                # a request as in flight after the client had given its slot back).
                self._ended = time.monotonic()
            time.sleep(1.0)
        return sent

    def _simple(
        self,
        status: int,
        body: bytes,
        content_type: str = "text/html",
        head: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> int:
        self.send_response(
            status, HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else ""
        )
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self._last_bytes()
        self.end_headers()
        if not head:
            self.wfile.write(body)
            self._simple_sent = len(body)
        return status


def _http_date(when: datetime) -> str:
    return format_datetime(when.astimezone(UTC), usegmt=True)


def load_dir(directory: str | Path) -> dict[str, bytes]:
    """Every regular file of a directory (for serving a real snapshot by hand)."""
    return {p.name: p.read_bytes() for p in sorted(Path(directory).iterdir()) if p.is_file()}


def main(argv: list[str] | None = None) -> int:
    """Serve sample data (or directories) on loopback until interrupted; print the URLs to use."""
    from flows.devkit.samples import sample_upstream

    parser = argparse.ArgumentParser(prog="python -m flows.devkit.upstream_server", description=main.__doc__)
    parser.add_argument("--from-dir", action="append", default=[], metavar="SURVEY=DIR")
    parser.add_argument("--population-file", help="serve this file as the population body")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--require-contact", action="store_true")
    args = parser.parse_args(argv)
    surveys, population = sample_upstream(args.seed)
    if args.from_dir:
        surveys = {}
        for spec in args.from_dir:
            survey, _, directory = spec.partition("=")
            surveys[survey] = load_dir(directory)
    if args.population_file:
        population = Path(args.population_file).read_bytes()
    with UpstreamServer(surveys, population, require_contact=args.require_contact, port=args.port) as up:
        print(f"QUEST_BLS_BASE_URL={up.bls_base_url}")
        print(f"QUEST_POPULATION_URL='{up.population_url}'")
        sys.stdout.flush()
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return 0


if __name__ == "__main__":
    sys.exit(main())
