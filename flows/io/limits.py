"""Politeness to BLS: at most N requests in flight and R started per second, across every invocation.

BLS blocks robots that make several requests per second, and with one flow run per survey on
Lambda many processes talk to it at once, so the numbers must hold across processes. Prefect's
global concurrency limits do that: `BLS_CONCURRENCY_LIMIT` (N slots, held for the whole request
including its streamed body) and `BLS_RATE_LIMIT` (a rate limit: slots that decay at R per second,
one taken before each request). Pulumi creates both with the work pool (`infra_pulumi/limits.py`).
Without them (no Prefect API, or an API without the two limits: `quest run` on a laptop, tests)
the same numbers hold in-process for every client and thread of this process.

`limiter_for(settings)` makes the choice once per process and settings (cached) and logs it once.
`Limiter.acquire(stopped)` waits for a rate token and a slot, giving up (None) as soon as
`stopped()` says the transfer is being aborted; it returns the release, which is idempotent.

Facts of Prefect 3.8.8 this module relies on (`prefect/concurrency/`):
- a missing limit: with `strict=False` the acquisition is skipped with a warning; `strict=True`
  (used here: never run unlimited by accident) raises `ConcurrencySlotAcquisitionError`. Nothing
  is created automatically (the server's `create_if_missing` is deprecated and unused).
- waiting: the server answers 423 with `Retry-After` (for a rate limit `(1 + denied) / decay`;
  for a concurrency limit the average occupancy times the queue, capped at 30 s) and the client
  sleeps that long and asks again, without a limit unless `timeout_seconds`/`max_retries` are
  given. Acquisitions for one set of names go through one queue per process, one at a time.
- the sync `concurrency()` blocks the calling thread (`run_coro_as_sync` on Prefect's loop
  thread), so it works from worker threads; it cannot be interrupted, hence the helper thread
  here, which lets an aborted transfer stop waiting (a slot granted later is released at once).
- a lease (`lease_duration`, at least 60 s) frees the slot of a process killed mid-request; a
  renewal thread renews it at once and every 0.75 x duration.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from flows.core.errors import PolitenessLimitError
from flows.core.names import BLS_CONCURRENCY_LIMIT, BLS_RATE_LIMIT

log = logging.getLogger(__name__)

Release = Callable[[], None]
Stopped = Callable[[], bool]

POLL_SECONDS = 0.05  # how often a waiting request looks at `stopped()`
LEASE_SECONDS = 60.0  # Prefect's minimum: a killed process's slot comes back after a minute
CHOICE_TTL_SECONDS = 300.0  # a warm Lambda container sees limits created after it started


class Limiter(Protocol):
    """Takes one rate token and one concurrency slot per request."""

    @property
    def description(self) -> str: ...

    def acquire(self, stopped: Stopped) -> Release | None:
        """Wait for a token and a slot; the release, or None when `stopped()` while waiting."""
        ...


def _once(release: Callable[[], None]) -> Release:
    lock = threading.Lock()
    done = False

    def run() -> None:
        nonlocal done
        with lock:
            if done:
                return
            done = True
        release()

    return run


class InProcessLimiter:
    """A semaphore of N and starts spaced 1/R apart (a token bucket holding one token)."""

    def __init__(self, max_concurrent: int, per_second: float):
        if max_concurrent < 1 or not per_second > 0:
            raise ValueError(f"need N >= 1 and R > 0, got N={max_concurrent}, R={per_second}")
        self.max_concurrent, self.per_second = max_concurrent, per_second
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self._lock = threading.Lock()
        self._next_start = 0.0

    @property
    def description(self) -> str:
        return f"in-process limits: {self.max_concurrent} concurrent, {self.per_second:g}/s"

    def acquire(self, stopped: Stopped) -> Release | None:
        while not self._slots.acquire(timeout=POLL_SECONDS):
            if stopped():
                return None
        release = _once(self._slots.release)
        if not self._wait_for_token(stopped):
            release()
            return None
        return release

    def _wait_for_token(self, stopped: Stopped) -> bool:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next_start)
            self._next_start = start + 1.0 / self.per_second
        while (left := start - time.monotonic()) > 0:
            if stopped():
                return False
            time.sleep(min(left, POLL_SECONDS))
        return True


_shared: dict[tuple[int, float], InProcessLimiter] = {}
_shared_lock = threading.Lock()


def in_process_limiter(max_concurrent: int, per_second: float) -> InProcessLimiter:
    """The one limiter of this process for these numbers: every client and thread shares it."""
    key = (int(max_concurrent), float(per_second))
    with _shared_lock:
        limiter = _shared.get(key)
        if limiter is None:
            limiter = _shared[key] = InProcessLimiter(*key)
        return limiter


@dataclass
class _Pending:
    """One acquisition running in a helper thread; abandoned when the request stops waiting."""

    done: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    release: Release | None = None
    error: BaseException | None = None
    abandoned: bool = False


class PrefectLimiter:
    """Prefect's global concurrency limit (held until the body is closed) and rate limit."""

    def __init__(
        self,
        concurrency_limit: str = BLS_CONCURRENCY_LIMIT,
        rate_limit: str = BLS_RATE_LIMIT,
        lease_seconds: float = LEASE_SECONDS,
        detail: str = "",
    ):
        self.concurrency_limit, self.rate_limit = concurrency_limit, rate_limit
        self.lease_seconds, self.detail = lease_seconds, detail

    @property
    def description(self) -> str:
        names = f"{self.concurrency_limit!r} and {self.rate_limit!r}"
        return f"Prefect global limits {names}" + (f" ({self.detail})" if self.detail else "")

    def _take(self) -> Release:
        """Slot first, then the rate token, so a request starts right after its token."""
        from prefect.concurrency.sync import concurrency, rate_limit

        stack = contextlib.ExitStack()
        try:
            stack.enter_context(
                concurrency(
                    self.concurrency_limit,
                    occupy=1,
                    lease_duration=self.lease_seconds,
                    strict=True,
                    raise_on_lease_renewal_failure=False,  # no exception injected into a stream
                )
            )
            rate_limit(self.rate_limit, occupy=1, strict=True)
        except BaseException:
            stack.close()
            raise
        return _once(stack.close)

    def acquire(self, stopped: Stopped) -> Release | None:
        pending = _Pending()
        context = contextvars.copy_context()  # the caller's Prefect settings and run logger

        def work() -> None:
            try:
                release = context.run(self._take)
            except BaseException as exc:
                pending.error = exc
            else:
                with pending.lock:
                    pending.release = release
                    abandoned = pending.abandoned
                if abandoned:
                    release()
            finally:
                pending.done.set()

        threading.Thread(target=work, name="quest-bls-slot", daemon=True).start()
        while not pending.done.wait(POLL_SECONDS):
            if stopped():
                with pending.lock:
                    pending.abandoned = True
                    release = pending.release
                if release is not None:
                    release()
                return None
        if pending.error is not None:
            raise PolitenessLimitError(
                f"could not take a BLS request slot from Prefect ({self.description}): {pending.error}"
            ) from pending.error
        assert pending.release is not None
        return pending.release


# --------------------------------------------------------------------------- the choice


def is_bls_url(settings: Any, url: str) -> bool:
    """True for a URL on the BLS host (`settings.bls_base_url`'s).

    When one host also serves the population URL (the loopback upstream of tests and `quest demo`),
    only URLs under `bls_base_url` count, so the population snapshot is never limited.
    """
    from flows.io.http import origin

    base = getattr(settings, "bls_base_url", None)
    if not base:
        return False
    host = origin(base)[1]
    if origin(url)[1] != host:
        return False
    population = getattr(settings, "population_url", None)
    if population and origin(population)[1] == host:
        return str(url).startswith(str(base))
    return True


def _prefect_api_url() -> str | None:
    try:
        from prefect.settings import get_current_settings

        url = get_current_settings().api.url
    except Exception:  # Prefect absent or misconfigured: no server to share limits through
        return None
    return str(url) if url else None


def _read_limits(names: tuple[str, str]) -> list[dict[str, Any]] | None:
    """The two limits as the API holds them; None when either is missing."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    found = []
    with get_client(sync_client=True) as client:
        for name in names:
            try:
                limit = client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                return None
            found.append(limit.model_dump(mode="json"))
    return found


@dataclass
class _Choice:
    limiter: Limiter
    until: float


_choices: dict[tuple[Any, ...], _Choice] = {}
_choices_lock = threading.Lock()


def limiter_for(settings: Any) -> Limiter:
    """Prefect's limits when this process has a Prefect API holding both, else the in-process ones.

    Decided once per (API, numbers) and process for `CHOICE_TTL_SECONDS`, and logged once.
    """
    n = int(getattr(settings, "bls_max_concurrent_requests", 4))
    r = float(getattr(settings, "bls_requests_per_second", 2.0))
    api_url = _prefect_api_url()
    key = (api_url, n, r)
    with _choices_lock:
        choice = _choices.get(key)
        if choice is not None and choice.until > time.monotonic():
            return choice.limiter
        limiter: Limiter = in_process_limiter(n, r)
        why = "no Prefect API configured"
        if api_url is not None:
            try:
                limits = _read_limits((BLS_CONCURRENCY_LIMIT, BLS_RATE_LIMIT))
            except Exception as exc:  # unreachable, refused: this process still limits itself
                why = f"the Prefect API at {api_url} could not be read ({type(exc).__name__}: {exc})"
            else:
                if limits is None:
                    names = f"{BLS_CONCURRENCY_LIMIT!r}/{BLS_RATE_LIMIT!r}"
                    why = f"the Prefect API at {api_url} has no {names} limits"
                else:
                    conc, rate = limits
                    detail = (
                        f"{conc['limit']} concurrent, {rate['slot_decay_per_second']:g}/s"
                        f"{'' if conc['active'] and rate['active'] else '; INACTIVE in Prefect'}"
                    )
                    limiter = PrefectLimiter(detail=detail)
                    why = f"at {api_url}"
        _choices[key] = _Choice(limiter, time.monotonic() + CHOICE_TTL_SECONDS)
    log.info("requests to BLS use %s (%s)", limiter.description, why)
    return limiter


def reset_choices() -> None:
    """Forget the cached choices (tests; a process that created or removed the limits)."""
    with _choices_lock:
        _choices.clear()
