"""HTTP policy for the upstream sites: which failures are retried, how long to wait, the client.

The retry loop is ours rather than Prefect's task retries because the wait depends on each
response (429/503 carry `Retry-After`), while Prefect fixes a task's retry delays when the task
is defined. Each retry is still logged to the run logger by the caller's `on_retry`. The policy
(`RetryPolicy.delay`, `is_retryable`, `parse_retry_after`) is pure and tested directly.
"""

from __future__ import annotations

import contextlib
import math
import random
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx

from flows.core.content_coding import content_codings, decode_body
from flows.core.errors import (
    BodyTooLarge,
    DeadlineExceeded,
    HttpStatusError,
    IncompleteBody,
    RedirectRefused,
    SizeMismatch,
    TransfersCancelled,
)
from flows.io.limits import Limiter, Permit, Release, is_bls_url, limiter_for

T = TypeVar("T")

# 408 and 429 are the only 4xx worth repeating: the others will answer the same way again.
RETRYABLE_4XX = frozenset({408, 429})
RETRY_AFTER_STATUSES = frozenset({429, 503})


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None if absent/bad."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def is_retryable(exc: BaseException) -> bool:
    """Transient: transport errors, cut or short bodies, 5xx, 408, 429. Everything else fails at once."""
    if isinstance(exc, HttpStatusError):
        return exc.status >= 500 or exc.status in RETRYABLE_4XX
    if isinstance(exc, TransfersCancelled):
        return False
    return isinstance(exc, httpx.TransportError | IncompleteBody | SizeMismatch | DeadlineExceeded)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter; a server's Retry-After is honoured (up to `max_delay`)."""

    retries: int = 4
    base_delay: float = 1.0
    max_delay: float = 60.0
    jitter: float = 0.5  # the backoff is scaled by a factor drawn from [1 - jitter, 1]
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    @classmethod
    def from_settings(cls, settings: Any) -> RetryPolicy:
        return cls(settings.retries, settings.retry_delay_seconds, settings.retry_max_delay_seconds)

    def backoff(self, attempt: int) -> float:
        """Delay before retry number `attempt` (1-based), without Retry-After."""
        raw = self.base_delay * 2.0 ** (attempt - 1)
        return float(min(self.max_delay, raw) * (1 - self.jitter * self.rng.random()))

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        backoff = self.backoff(attempt)
        if retry_after is not None:
            return min(self.max_delay, max(retry_after, backoff))
        return backoff


OnRetry = Callable[[int, BaseException, float], None]


def call_with_retries(
    fn: Callable[[], T],
    policy: RetryPolicy,
    on_retry: OnRetry | None = None,
    sleep: Callable[[float], None] = time.sleep,
    stopped: Callable[[], bool] = lambda: False,
) -> T:
    """Call `fn` until it succeeds, a non-retryable error occurs, the retries are spent or `stopped()`."""
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as exc:
            attempt += 1
            if attempt > policy.retries or not is_retryable(exc) or stopped():
                raise
            retry_after = exc.retry_after if isinstance(exc, HttpStatusError) else None
            wait = policy.delay(attempt, retry_after)
            if on_retry is not None:
                on_retry(attempt, exc, wait)
            sleep(wait)


def check_status(response: Any, url: str) -> None:
    """Raise HttpStatusError (with Retry-After for 429/503) unless the response is a success."""
    if 200 <= response.status_code < 300:
        return
    retry_after = None
    if response.status_code in RETRY_AFTER_STATUSES:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
    raise HttpStatusError(url, response.status_code, retry_after)


def request_deadline(floor_seconds: float, min_rate: float, size: int | None = None) -> float:
    """Seconds one request may take in all: a floor, plus the size at the slowest rate we accept.

    A read timeout alone never ends a peer that sends one byte a second; this bound does.
    """
    return floor_seconds + max(0, size or 0) / min_rate


def origin(url: str | httpx.URL) -> tuple[str, str, int]:
    """(scheme, host, port) with the scheme's default port filled in, host lower-cased without a final dot."""
    parts = urlsplit(str(url))
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    try:
        port = parts.port or {"http": 80, "https": 443}.get(scheme, 0)
    except ValueError:
        port = -1
    return scheme, host, port


def same_site(allowed: tuple[str, str, int], url: str | httpx.URL) -> bool:
    """True for the allowed origin itself, or its https upgrade on the same host (never a downgrade)."""
    scheme, host, port = origin(url)
    if host != allowed[1]:
        return False
    if (scheme, port) == (allowed[0], allowed[2]):
        return True
    return allowed[0] == "http" and scheme == "https" and port == 443


DEADLINE_EXTENSION = "quest.deadline"  # request extension: seconds this request may take in all


def _nothing() -> None:
    return None


class _GuardedStream(httpx.SyncByteStream):
    """A response body that stops at the request's deadline, or at once when the transport aborts.

    A Content-Encoding is undone here, in bounded steps (`flows.core.content_coding`), so httpx's
    own decoder (a whole raw chunk at a time, without bound) never sees it. Closing the stream
    also gives back the request's politeness slot (`release`).
    """

    def __init__(
        self,
        inner: httpx.SyncByteStream,
        url: str,
        ends_at: float,
        guard: GuardedTransport,
        release: Release = _nothing,
        codings: tuple[str, ...] = (),
    ):
        self._inner, self._url, self._ends_at, self._guard = inner, url, ends_at, guard
        self._release, self._codings = release, codings

    def __iter__(self) -> Iterator[bytes]:
        if not self._codings:
            yield from self._raw()
            return
        for piece in decode_body(self._raw(), self._codings, f"GET {self._url}"):
            self._guard.check(self._url, self._ends_at)
            yield piece

    def _raw(self) -> Iterator[bytes]:
        chunks = iter(self._inner)
        while True:
            try:
                chunk = next(chunks)
            except StopIteration:
                return
            except httpx.TransportError as exc:
                self._guard.check(self._url, self._ends_at, exc)  # an abort or a deadline says so
                raise
            self._guard.check(self._url, self._ends_at)
            yield chunk

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            self._release()


class GuardedTransport(httpx.BaseTransport):
    """httpx transport for one upstream site: same-site requests only, a deadline per request, abortable.

    - A request to another host (a redirect elsewhere, a hostile URL) is refused before it is sent,
      so the function cannot be turned into a proxy and foreign bytes never land under `bls/`.
    - Every request has an overall deadline (the `quest.deadline` extension, else `default_deadline`);
      the socket read timeout is cut to what is left of it.
    - `abort()` (a signal, a cancelled run, a failed sibling) shuts down every open socket, so
      transfers blocked in a read end now instead of after their read timeout.
    - With a `limiter` (requests to BLS), every request (each retry, each redirect hop) first takes
      a concurrency slot, held until its body is closed, and a pacer slot, freed a moment after
      its answer (`flows.core.pacing`). The deadline starts once
      the slot is held, so waiting in line does not eat the request's own budget; an abort ends
      the wait at once.
    """

    def __init__(
        self,
        site_url: str,
        default_deadline: float,
        inner: httpx.BaseTransport | None = None,
        limiter: Limiter | None = None,
    ):
        self.allowed = origin(site_url)
        self.default_deadline = default_deadline
        self.limiter = limiter
        self._inner = inner or httpx.HTTPTransport()
        self._aborted: str | None = None
        self._sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self._lock = threading.Lock()

    @property
    def aborted(self) -> str | None:
        return self._aborted

    def abort(self, reason: str) -> None:
        """Stop every request of this transport now; later requests are refused."""
        with self._lock:
            if self._aborted is None:
                self._aborted = reason
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def check(self, url: str, ends_at: float, cause: BaseException | None = None) -> None:
        """Raise if this transport was aborted or the request is past its deadline."""
        if self._aborted is not None:
            raise TransfersCancelled(f"GET {url} aborted: {self._aborted}") from cause
        if time.monotonic() > ends_at:
            raise DeadlineExceeded(f"GET {url} did not finish within its deadline") from cause

    def _trace(self, event: str, info: dict[str, Any]) -> None:
        if event in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            stream = info.get("return_value")
            sock = stream.get_extra_info("socket") if stream is not None else None
            if isinstance(sock, socket.socket):
                with self._lock:
                    self._sockets.add(sock)
                if self._aborted is not None:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        if not same_site(self.allowed, request.url):
            raise RedirectRefused(
                f"refusing to request {url}: only {self.allowed[0]}://{self.allowed[1]} is read "
                "(a redirect to another host, or from https to http?)"
            )
        self.check(url, math.inf)  # an aborted transport does not queue for a slot
        permit = self._take_slot(url)
        try:
            response, ends_at = self._send(request, url)
        except BaseException:
            permit.release()
            raise
        permit.answered()  # the headers are in: the request has reached the site
        assert isinstance(response.stream, httpx.SyncByteStream)
        try:
            codings = _take_codings(response, url)
        except BaseException:
            response.close()  # the raw stream's close gives the slot back
            permit.release()
            raise
        response.stream = _GuardedStream(response.stream, url, ends_at, self, permit.release, codings)
        return response

    def _take_slot(self, url: str) -> Permit:
        """The limiter's permit (an empty one without); TransfersCancelled on an abort meanwhile."""
        if self.limiter is None:
            return Permit()
        permit = self.limiter.acquire(lambda: self._aborted is not None)
        if permit is None:
            self.check(url, math.inf)
            raise TransfersCancelled(f"GET {url} aborted while waiting for a request slot")
        return permit

    def _send(self, request: httpx.Request, url: str) -> tuple[httpx.Response, float]:
        budget = float(request.extensions.get(DEADLINE_EXTENSION) or self.default_deadline)
        ends_at = time.monotonic() + budget
        self.check(url, ends_at)
        timeout = dict(request.extensions.get("timeout") or {})
        for phase in ("connect", "read", "write", "pool"):
            limit = timeout.get(phase)
            timeout[phase] = budget if limit is None else min(float(limit), budget)
        request.extensions = {**request.extensions, "timeout": timeout, "trace": self._trace}
        try:
            return self._inner.handle_request(request), ends_at
        except httpx.TransportError as exc:
            self.check(url, ends_at, exc)  # an aborted or overdue request says so, not "connection reset"
            raise

    def close(self) -> None:
        self._inner.close()


def _take_codings(response: httpx.Response, url: str) -> tuple[str, ...]:
    """The body's content codings, taken off its headers: the stream decodes them in bounded
    steps, and the Content-Length (of the coded bytes, which h11 has checked) no longer applies."""
    codings = content_codings(response.headers.get_list("content-encoding"), f"GET {url}")
    if codings or "content-encoding" in response.headers:
        del response.headers["content-encoding"]
        if codings and "content-length" in response.headers:
            del response.headers["content-length"]
    return codings


@dataclass(frozen=True)
class BodyCap:
    """The most bytes (decoded) a body read whole may have, and the setting that says so."""

    max_bytes: int
    setting: str


def read_body(response: httpx.Response, url: str, cap: BodyCap) -> bytes:
    """The whole body of a streamed response (`client.stream`), decoded, refused with one line as
    soon as it passes `cap`: decoded in bounded steps from the raw bytes, so memory stays within
    the cap even for a gzip bomb, with any client (the guarded transport has decoded already)."""
    where = f"GET {url}"
    codings = content_codings(response.headers.get_list("content-encoding"), where)
    declared = response.headers.get("content-length", "").strip()
    if not codings and declared.isdigit() and int(declared) > cap.max_bytes:
        raise BodyTooLarge(
            f"{where}: Content-Length {int(declared):,} bytes exceeds the {cap.max_bytes:,}-byte limit "
            f"({cap.setting}); refused, nothing is deleted or replaced"
        )
    parts: list[bytes] = []
    received = 0
    for piece in decode_body(response.iter_raw(), codings, where):
        received += len(piece)
        if received > cap.max_bytes:
            raise BodyTooLarge(
                f"{where}: the body exceeds the {cap.max_bytes:,}-byte limit ({cap.setting}) once decoded; "
                "refused, nothing is deleted or replaced"
            )
        parts.append(piece)
    return b"".join(parts)


def _refuse_foreign_redirect(allowed: tuple[str, str, int], response: httpx.Response) -> None:
    """Name the redirect itself in the error (the transport would refuse the next hop anyway)."""
    if not response.has_redirect_location:
        return
    target = response.url.join(response.headers["location"])
    if not same_site(allowed, target):
        raise RedirectRefused(
            f"GET {response.request.url} answered {response.status_code} redirecting to {target}: "
            "another host (or a downgrade to http); refused"
        )


def make_client(settings: Any, url: str) -> httpx.Client:
    """An httpx client for the site of `url`: User-Agent naming the contact, guarded transport.

    Bodies are requested uncompressed so the bytes counted are the bytes the listing sizes.
    Redirects are followed only on the same site; `response.url` is the URL actually read.
    Requests to BLS go through the process's politeness limiter (`flows.io.limits.limiter_for`).
    """
    headers = {"User-Agent": settings.user_agent(url), "Accept-Encoding": "identity"}
    timeout = httpx.Timeout(settings.http_timeout_seconds, connect=min(10.0, settings.http_timeout_seconds))
    limits = httpx.Limits(max_connections=max(4, settings.concurrency * 2))
    transport = GuardedTransport(
        url,
        default_deadline=settings.http_deadline_floor_seconds,
        inner=httpx.HTTPTransport(limits=limits),
        limiter=limiter_for(settings) if is_bls_url(settings, url) else None,
    )

    return httpx.Client(
        headers=headers,
        timeout=timeout,
        transport=transport,
        follow_redirects=True,
        max_redirects=5,
        event_hooks={"response": [lambda response: _refuse_foreign_redirect(transport.allowed, response)]},
    )


def guarded_transport(client: httpx.Client) -> GuardedTransport | None:
    transport = client._transport  # httpx keeps the mounted transport here; no public accessor
    return transport if isinstance(transport, GuardedTransport) else None
