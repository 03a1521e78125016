"""HTTP policy for the upstream sites: which failures are retried, how long to wait, the client.

The retry loop is ours rather than Prefect's task retries because the wait depends on each
response (429/503 carry `Retry-After`), while Prefect fixes a task's retry delays when the task
is defined. Each retry is still logged to the run logger by the caller's `on_retry`. The policy
(`RetryPolicy.delay`, `is_retryable`, `parse_retry_after`) is pure and tested directly.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

from flows.errors import QuestError

T = TypeVar("T")

# 408 and 429 are the only 4xx worth repeating: the others will answer the same way again.
RETRYABLE_4XX = frozenset({408, 429})
RETRY_AFTER_STATUSES = frozenset({429, 503})


class HttpStatusError(QuestError):
    """The server answered with a non-success status."""

    def __init__(self, url: str, status: int, retry_after: float | None = None, detail: str = ""):
        self.url, self.status, self.retry_after = url, status, retry_after
        extra = f" ({detail})" if detail else ""
        super().__init__(f"GET {url} answered HTTP {status}{extra}")


class IncompleteBody(QuestError):
    """The body's length disagrees with Content-Length or the listed size; worth retrying."""


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
    import httpx

    from flows.store import SizeMismatch

    if isinstance(exc, HttpStatusError):
        return exc.status >= 500 or exc.status in RETRYABLE_4XX
    return isinstance(exc, httpx.TransportError | IncompleteBody | SizeMismatch)


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
        raw = self.base_delay * (2 ** (attempt - 1))
        return min(self.max_delay, raw) * (1 - self.jitter * self.rng.random())

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
) -> T:
    """Call `fn` until it succeeds, a non-retryable error occurs, or the retries are spent."""
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as exc:
            attempt += 1
            if attempt > policy.retries or not is_retryable(exc):
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


def make_client(settings: Any, url: str) -> Any:
    """An httpx client whose User-Agent names the contact (BLS refuses anonymous clients).

    Bodies are requested uncompressed so the bytes counted are the bytes the listing sizes.
    """
    import httpx

    headers = {"User-Agent": settings.user_agent(url), "Accept-Encoding": "identity"}
    timeout = httpx.Timeout(settings.http_timeout_seconds, connect=min(10.0, settings.http_timeout_seconds))
    limits = httpx.Limits(max_connections=max(4, settings.concurrency * 2))
    return httpx.Client(headers=headers, timeout=timeout, limits=limits, follow_redirects=True)
