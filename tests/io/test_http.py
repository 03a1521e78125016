"""The retry policy: what is retried, how long to wait, Retry-After."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import httpx
import pytest

from flows.core.errors import HttpStatusError, IncompleteBody, SizeMismatch
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
