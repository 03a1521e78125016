"""The retry policy: what is retried, how long to wait, Retry-After."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import httpx
import pytest

from flows.http import (
    HttpStatusError,
    IncompleteBody,
    RetryPolicy,
    call_with_retries,
    is_retryable,
    parse_retry_after,
)
from flows.store import SizeMismatch


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
