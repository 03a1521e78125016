"""The retry policy: what is retried, how long to wait, Retry-After."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import httpx
import pytest

from flows.core.errors import HttpStatusError, IncompleteBody, QuestError, SizeMismatch
from flows.io.http import RetryPolicy, call_with_retries, is_retryable, parse_retry_after


def test_parse_retry_after():
    now = datetime(2024, 6, 6, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Thu, 06 Jun 2024 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("Thu, 06 Jun 2024 11:00:00 GMT", now) == 0.0
    assert (
        parse_retry_after(None) is None
        and parse_retry_after("soon") is None
        and parse_retry_after("") is None
    )


@pytest.mark.parametrize(
    ("exc", "retry"),
    [
        (HttpStatusError("u", 503), True),
        (HttpStatusError("u", 500), True),
        (HttpStatusError("u", 429), True),
        (HttpStatusError("u", 408), True),
        (HttpStatusError("u", 403), False),
        (HttpStatusError("u", 404), False),
        (httpx.RemoteProtocolError("cut"), True),
        (httpx.ConnectError("refused"), True),
        (IncompleteBody("short"), True),
        (SizeMismatch("short"), True),
        (ValueError("bug"), False),
    ],
)
def test_is_retryable(exc, retry):
    assert is_retryable(exc) is retry


def test_backoff_is_exponential_with_jitter_and_capped():
    policy = RetryPolicy(retries=5, base_delay=1.0, max_delay=5.0, jitter=0.5, rng=random.Random(1))
    delays = [policy.backoff(n) for n in range(1, 6)]
    for n, d in enumerate(delays, start=1):
        assert min(5.0, 2 ** (n - 1)) * 0.5 <= d <= min(5.0, 2 ** (n - 1))
    assert len(set(delays)) == 5
    assert policy.delay(1, retry_after=3.0) == 3.0  # the server's wait wins over a shorter backoff
    assert policy.delay(1, retry_after=100.0) == 5.0  # but never beyond the cap


def test_call_with_retries_honours_retry_after_and_gives_up():
    waits: list[float] = []
    calls = iter([HttpStatusError("u", 429, retry_after=2.0), HttpStatusError("u", 503), "ok"])

    def fn():
        item = next(calls)
        if isinstance(item, Exception):
            raise item
        return item

    policy = RetryPolicy(retries=3, base_delay=0.1, max_delay=10.0, rng=random.Random(0))
    assert call_with_retries(fn, policy, on_retry=lambda a, e, w: None, sleep=waits.append) == "ok"
    assert waits[0] == 2.0 and 0.1 <= waits[1] <= 0.2

    count = 0

    def forbidden():
        nonlocal count
        count += 1
        raise HttpStatusError("u", 403)

    with pytest.raises(HttpStatusError):
        call_with_retries(forbidden, policy, sleep=waits.append)
    assert count == 1

    def always_503():
        nonlocal count
        count += 1
        raise HttpStatusError("u", 503)

    count = 0
    with pytest.raises(HttpStatusError):
        call_with_retries(always_503, policy, sleep=lambda s: None)
    assert count == 4


# --------------------------------------------------------------------------- the guarded transport


@pytest.mark.parametrize(
    ("url", "same"),
    [
        ("https://download.bls.gov/pub/x", True),
        ("https://DOWNLOAD.BLS.GOV:443/pub/x", True),
        ("https://download.bls.gov./pub/x", True),
        ("http://download.bls.gov/pub/x", False),  # a downgrade
        ("https://download.bls.gov:8443/pub/x", False),
        ("https://www.bls.gov/pub/x", False),
        ("https://download.bls.gov.evil.example/pub/x", False),
        ("https://evil.example/pub/x", False),
        ("https://download.bls.gov@evil.example/pub/x", False),
    ],
)
def test_same_site(url, same):
    from flows.io.http import origin, same_site

    assert same_site(origin("https://download.bls.gov/pub/time.series/"), url) is same


def test_http_site_may_be_upgraded_to_https_on_the_same_host():
    from flows.io.http import origin, same_site

    assert same_site(origin("http://example.org/"), "https://example.org/x")
    assert not same_site(origin("http://example.org/"), "https://other.org/x")


class _Silent:
    """A loopback peer that accepts connections and never answers (or answers headers, then stalls)."""

    def __init__(self, headers: bytes = b""):
        import socket
        import threading

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/pub/time.series/pr/"
        self.headers = headers
        self.conns: list = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            if self.headers:
                conn.recv(65536)
                conn.sendall(self.headers)

    def close(self):
        self.sock.close()
        for conn in self.conns:
            conn.close()


@pytest.mark.parametrize(
    "headers", [b"", b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nContent-Type: text/plain\r\n\r\nabc"]
)
def test_abort_ends_a_blocked_request_at_once(headers):
    """A read blocked on a silent peer ends when the run stops, not after the read timeout."""
    import threading
    import time

    from flows.core.errors import TransfersCancelled
    from flows.io.http import GuardedTransport

    peer = _Silent(headers)
    transport = GuardedTransport(peer.url, default_deadline=60)
    client = httpx.Client(transport=transport, timeout=60)
    outcome: list[BaseException] = []

    def get():
        try:
            client.get(peer.url)
        except BaseException as exc:  # noqa: BLE001 - the test inspects whatever ended the request
            outcome.append(exc)

    worker = threading.Thread(target=get)
    worker.start()
    time.sleep(0.5)
    started = time.monotonic()
    transport.abort("test stop")
    worker.join(10)
    try:
        assert not worker.is_alive() and time.monotonic() - started < 5
        assert isinstance(outcome[0], TransfersCancelled) and "test stop" in str(outcome[0])
        with pytest.raises(TransfersCancelled):  # and nothing new starts
            client.get(peer.url)
    finally:
        client.close()
        peer.close()


def test_deadline_ends_a_silent_peer():
    import time

    from flows.core.errors import DeadlineExceeded
    from flows.io.http import DEADLINE_EXTENSION, GuardedTransport

    peer = _Silent(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nabc")
    client = httpx.Client(transport=GuardedTransport(peer.url, default_deadline=60), timeout=60)
    started = time.monotonic()
    try:
        with pytest.raises((DeadlineExceeded, httpx.ReadTimeout)):
            client.get(peer.url, extensions={DEADLINE_EXTENSION: 1.0})
        assert time.monotonic() - started < 5
    finally:
        client.close()
        peer.close()


def test_the_transport_refuses_other_hosts_before_sending():
    from flows.core.errors import RedirectRefused
    from flows.io.http import GuardedTransport

    client = httpx.Client(transport=GuardedTransport("http://127.0.0.1:9/", default_deadline=5))
    with pytest.raises(RedirectRefused, match="only http://127.0.0.1"):
        client.get("http://127.0.0.2:9/x")
    client.close()


# --------------------------------------------------------------------------- bodies in bounded memory

_BOMB_BYTES = 64 * 1024 * 1024  # what each bomb below decodes to; the listing cap is 8 MiB by default
_LISTING = "/pub/time.series/pr/"


def _coded(data: bytes, stack: tuple[str, ...]) -> bytes:
    import gzip
    import zlib

    for coding in stack:
        if coding == "gzip":
            data = gzip.compress(data, 9)
        elif coding == "deflate":
            data = zlib.compress(data, 9)
        else:  # raw deflate, served as `deflate`
            packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
            data = packer.compress(data) + packer.flush()
    return data


# name: (codings applied, Content-Encoding header lines)
_BOMBS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "gzip": (("gzip",), ("gzip",)),
    "deflate": (("deflate",), ("deflate",)),
    "raw deflate": (("raw",), ("deflate",)),
    "gzip, gzip": (("gzip", "gzip"), ("gzip, gzip",)),
    "x-gzip and gzip on two header lines": (("gzip", "gzip"), ("x-gzip", "gzip")),
}


@pytest.fixture(scope="module")
def bombs() -> dict[str, tuple[bytes, tuple[str, ...]]]:
    zeros = b"\0" * _BOMB_BYTES
    return {name: (_coded(zeros, stack), lines) for name, (stack, lines) in _BOMBS.items()}


@pytest.fixture
def raw():
    from raw_server import raw_server

    with raw_server() as server:
        yield server


def _headers(lines: tuple[str, ...], content_type: str = "text/html") -> list[tuple[str, str]]:
    return [("Content-Type", content_type), *(("Content-Encoding", line) for line in lines)]


def _client(kind: str, url: str) -> httpx.Client:
    from flows.io.http import make_client
    from flows.settings import Settings

    if kind == "plain httpx":
        return httpx.Client()
    return make_client(Settings(contact="tests@example.com"), url)


def _peak(fn) -> tuple[BaseException | None, int]:
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
    except BaseException as exc:  # noqa: BLE001 - the caller asserts on it
        return exc, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return None, 0


@pytest.mark.parametrize("client_kind", ["project", "plain httpx"])
@pytest.mark.parametrize("bomb", list(_BOMBS))
def test_a_listing_bomb_is_refused_in_bounded_memory(raw, bombs, bomb, client_kind):
    """64 MiB of zeros in at most 64 KiB (stacked: 1 KiB) is refused at the 8 MiB listing cap, with
    one line naming the URL, the cap and the setting; memory never holds the bomb, with our client
    (whose transport decodes) or a plain one (`read_body` decodes)."""
    from flows.io.fetch import fetch_listing_page

    body, lines = bombs[bomb]
    url = raw.serve(_LISTING, body, _headers(lines))
    with _client(client_kind, url) as client:
        error, peak = _peak(lambda: fetch_listing_page(client, url))
    assert isinstance(error, QuestError), f"a {len(body):,}-byte bomb was read, {peak:,} bytes at peak"
    assert peak < 24 * 1024 * 1024, f"{peak:,} bytes at peak for a {len(body):,}-byte bomb"
    message = str(error)
    assert "\n" not in message
    assert url in message and "8,388,608" in message and "QUEST_LISTING_MAX_BYTES" in message, message


def test_the_population_cap_counts_decoded_bytes(raw, bombs):
    from flows.core.errors import PopulationBodyTooLarge
    from flows.io.fetch import fetch_population

    body, lines = bombs["gzip, gzip"]
    url = raw.serve("/tesseract/data.jsonrecords", body, _headers(lines, "application/json"))
    with httpx.Client() as client:
        error, peak = _peak(lambda: fetch_population(client, url, 1024 * 1024))
    assert peak < 8 * 1024 * 1024, f"{peak:,} bytes at peak for a {len(body):,}-byte bomb"
    assert isinstance(error, PopulationBodyTooLarge), repr(error)
    assert "1,048,576" in str(error) and "QUEST_POPULATION_MAX_BYTES" in str(error), error


@pytest.mark.parametrize("client_kind", ["project", "plain httpx"])
@pytest.mark.parametrize(
    ("stack", "lines"),
    [
        (("gzip",), ("gzip",)),
        (("deflate",), ("deflate",)),
        (("raw",), ("deflate",)),
        (("gzip", "deflate"), ("gzip, deflate",)),
        (("gzip",), ("x-gzip",)),
        ((), ("identity",)),
    ],
)
def test_a_coded_listing_reads_as_the_plain_one(raw, stack, lines, client_kind):
    from flows.core.listing import parse_listing
    from flows.devkit.upstream_server import render_iis_listing
    from flows.io.fetch import fetch_listing

    page = render_iis_listing(_LISTING, [("pr.txt", 1234, datetime(2024, 6, 6, tzinfo=UTC))])
    url = raw.serve(_LISTING, _coded(page, stack), _headers(lines))
    with _client(client_kind, url) as client:
        assert fetch_listing(client, url) == parse_listing(page.decode(), url)


@pytest.mark.parametrize("lines", [("br",), ("zstd",), ("compress",), ("gzip, br",), ("bogus",)])
def test_a_coding_we_cannot_bound_is_refused_with_one_line(raw, lines):
    from flows.core.errors import UndecodableBody
    from flows.io.fetch import fetch_listing_page

    url = raw.serve(_LISTING, b"\x1b\x00\x00", _headers(lines))
    with _client("project", url) as client, pytest.raises(UndecodableBody) as info:
        fetch_listing_page(client, url)
    assert url in str(info.value) and "\n" not in str(info.value)


def test_a_listing_past_its_cap_is_refused_by_its_content_length_or_while_read(raw):
    from flows.core.errors import BodyTooLarge
    from flows.devkit.upstream_server import render_iis_listing
    from flows.io.fetch import fetch_listing_page

    when = datetime(2024, 6, 6, tzinfo=UTC)
    page = render_iis_listing(_LISTING, [(f"pr.{n}", n, when) for n in range(40)])
    url = raw.serve(_LISTING, page, _headers(()))
    coded = raw.serve("/gz" + _LISTING, _coded(page, ("gzip",)), _headers(("gzip",)))
    for kind in ("project", "plain httpx"):
        with _client(kind, url) as client:
            assert fetch_listing_page(client, url, len(page))[0].encode() == page
            assert fetch_listing_page(client, coded, len(page))[0].encode() == page
            with pytest.raises(
                BodyTooLarge, match=rf"Content-Length {len(page):,} bytes exceeds the 1,024-byte"
            ):
                fetch_listing_page(client, url, 1024)
            with pytest.raises(BodyTooLarge, match="exceeds the 1,024-byte limit"):
                fetch_listing_page(client, coded, 1024)


def _transfer(client, store, url: str, size: int):
    from flows.core.plan import Action, PlanItem
    from flows.mirror import transfer_once
    from flows.settings import Settings

    name = url.rsplit("/", 1)[1]
    item = PlanItem(Action.ADD, name, size, "new", url=url, last_modified="x")
    return transfer_once(client, store, "pr", item, Settings(contact="tests@example.com"))


def test_a_file_served_coded_is_stored_as_its_listed_bytes(raw, tmp_path):
    import gzip

    from flows.io.store import LocalStore

    store = LocalStore(tmp_path / "data")
    text = b"series_id\tyear\tperiod\tvalue\n" * 2000
    url = raw.serve(_LISTING + "pr.coded", gzip.compress(text), _headers(("gzip",), "text/plain"))
    with _client("project", url) as client:
        assert _transfer(client, store, url, len(text)) == len(text)
    assert store.read_bytes("bls/pr/pr.coded") == text


def test_a_file_bomb_stops_at_the_listed_size_in_bounded_memory(raw, bombs, tmp_path):
    """Files stream into the store: a bomb stops once past its listed size, without ever holding
    the bomb, and nothing is published."""
    from flows.io.store import LocalStore

    store = LocalStore(tmp_path / "data")
    body, lines = bombs["gzip, gzip"]
    url = raw.serve(_LISTING + "pr.bomb", body, _headers(lines, "text/plain"))
    with _client("project", url) as client:
        # listed at its coded size, so its Content-Length agrees with the listing
        error, peak = _peak(lambda: _transfer(client, store, url, len(body)))
    assert peak < 16 * 1024 * 1024, f"{peak:,} bytes at peak for a {len(body):,}-byte bomb"
    assert isinstance(error, IncompleteBody), repr(error)
    assert store.list_keys("bls/") == []
