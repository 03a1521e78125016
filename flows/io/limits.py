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
- a missing limit: the server grants the ask with no limits in its answer (Prefect's own
  `concurrency()` then skips it with a warning unless `strict=True`). Here that raises
  `PolitenessLimitError`: never run unlimited by accident. Nothing is created automatically (the
  server's `create_if_missing` is deprecated and unused).
- waiting: the server answers 423 with `Retry-After` (`prefect/server/api/concurrency_limits_v2.py`,
  `_generate_concurrency_locked_response`): for a rate limit `(1 + denied) / decay`, uncapped, for
  a concurrency limit the average occupancy times the queue, capped at 30 s; both times up to 1.3
  for jitter (`clamped_poisson_interval`). Every denial adds to `denied`. Prefect's client sleeps
  that long and asks again. With slots held for whole file bodies (a 300 MB file holds one for
  minutes) and dozens of waiters, that is a 30-40 s sleep while a slot may free a second later:
  a survey's one listing GET then waited out its run's whole budget (issue 12, `scale_bench`).
  So this module asks through the client itself, one request an ask (`increment-with-lease` for
  the slot, `increment` for the token; `concurrency(max_retries=0)` would log an ERROR line in
  Prefect's service for every denial, and `rate_limit()` has no such knob), and sleeps
  `min(Retry-After, max_retry_seconds)` with jitter between asks, watching `stopped()`. Granting
  depends only on the slots held (`denied` only sets Retry-After), so asking sooner costs the
  server a request, not fairness.
- a lease (`lease_duration`, at least 60 s) frees the slot of a process killed mid-request; it is
  renewed every 0.75 x duration while held, as Prefect's own renewal thread does.
- each acquisition runs in a helper thread, so an aborted transfer stops waiting at once (a slot
  granted after that is released at once).
"""

from __future__ import annotations

import contextvars
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from flows.core.errors import PolitenessLimitError
from flows.core.names import BLS_CONCURRENCY_LIMIT, BLS_RATE_HEADROOM, BLS_RATE_LIMIT

log = logging.getLogger(__name__)

Release = Callable[[], None]
T = TypeVar("T")
Stopped = Callable[[], bool]

POLL_SECONDS = 0.05  # how often a waiting request looks at `stopped()`
LEASE_SECONDS = 60.0  # Prefect's minimum: a killed process's slot comes back after a minute
MAX_RETRY_SECONDS = 2.0  # the longest sleep between two asks for a Prefect slot, whatever it says
MIN_RETRY_SECONDS = 0.1  # and the shortest (jittered below Retry-After, so waiters do not herd)
LOG_WAIT_SECONDS = 5.0  # a request that waited longer than this for its slot says so in the run log
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
    """A semaphore of N and starts spaced 1/(R x BLS_RATE_HEADROOM) apart (a token bucket holding
    one token, as the Prefect rate limit Pulumi creates)."""

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
            self._next_start = start + 1.0 / (self.per_second * BLS_RATE_HEADROOM)
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


_lines: dict[tuple[str, str], threading.Lock] = {}
_lines_lock = threading.Lock()


def _line(concurrency_limit: str, rate_limit: str) -> threading.Lock:
    """The one line of this process for these limits (shared by every limiter made for them)."""
    with _lines_lock:
        return _lines.setdefault((concurrency_limit, rate_limit), threading.Lock())


def _retry_after(exc: BaseException) -> float | None:
    """The seconds Prefect's 423 ("no slot now") asks to wait; None for any other error."""
    response = getattr(exc, "response", None)
    if response is None or getattr(response, "status_code", None) != 423:
        return None
    try:
        return max(0.0, float(response.headers.get("Retry-After", "1")))
    except ValueError:
        return 1.0


@dataclass
class _Waited:
    """How long one request waited for its slot and token, and what Prefect said meanwhile."""

    started: float
    denials: int = 0
    longest_told: float = 0.0

    def denied(self, told: float) -> None:
        self.denials += 1
        self.longest_told = max(self.longest_told, told)

    def report(self, limiter: PrefectLimiter, granted: bool) -> None:
        """Into the run's log (the UI) when the wait was long enough for a user to wonder."""
        seconds = time.monotonic() - self.started
        if seconds < LOG_WAIT_SECONDS:
            return
        what = "took its BLS request slot" if granted else "stopped waiting for a BLS request slot"
        _run_logger().info(
            "a request %s after %.1f s (%d denials from %r/%r; Prefect suggested up to %.1f s,"
            " asked again after at most %.1f s)",
            what,
            seconds,
            self.denials,
            limiter.concurrency_limit,
            limiter.rate_limit,
            self.longest_told,
            limiter.max_retry_seconds,
        )


def _run_logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    try:
        from prefect import get_run_logger

        return get_run_logger()
    except Exception:  # no run (a plain process): the module's logger
        return log


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
        max_retry_seconds: float = MAX_RETRY_SECONDS,
    ):
        self.concurrency_limit, self.rate_limit = concurrency_limit, rate_limit
        self.lease_seconds, self.detail = lease_seconds, detail
        self.max_retry_seconds = max_retry_seconds
        self._api: Any = None
        self._client_lock = threading.Lock()

    @property
    def description(self) -> str:
        names = f"{self.concurrency_limit!r} and {self.rate_limit!r}"
        return f"Prefect global limits {names}" + (f" ({self.detail})" if self.detail else "")

    def _take(self, abandoned: Stopped) -> Release | None:
        """Slot first, then the rate token, so a request starts right after its token.

        Each ask is one request to the API; `_asking` sleeps between them. The requests of one
        process wait in one line and only its head asks, as Prefect's own acquisition queue does:
        otherwise every waiting thread of every invocation asks the API several times a second.
        None when `abandoned()` while waiting (a slot already held is released).
        """
        waited = _Waited(time.monotonic())
        release: Release | None = None
        line = _line(self.concurrency_limit, self.rate_limit)
        while not line.acquire(timeout=POLL_SECONDS):
            if abandoned():
                break
        else:
            try:
                release = self._asking(self._slot, abandoned, waited)
                if release is not None and self._asking(self._rate_token, abandoned, waited) is None:
                    release()
                    release = None
            except BaseException:
                if release is not None:
                    release()
                raise
            finally:
                line.release()
        waited.report(self, granted=release is not None)
        return release

    def _slot(self) -> Release:
        """One ask for a concurrency slot under a lease, renewed while held; its release.

        A lease, as Prefect's `concurrency()` takes: a process killed mid-request (Lambda's limit)
        holds its slot only until the lease lapses. Renewed every 0.75 x the lease, as Prefect does.
        A failed renewal or release is logged, never raised into a stream: the lease lapses anyway.
        """
        answer = self._client().increment_concurrency_slots_with_lease(
            names=[self.concurrency_limit], slots=1, mode="concurrency", lease_duration=self.lease_seconds
        )
        body = answer.json()
        if not body.get("limits"):  # strict: never run unlimited because the limit went away
            raise PolitenessLimitError(
                f"the Prefect concurrency limit {self.concurrency_limit!r} does not exist"
            )
        lease_id = body["lease_id"]
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(self.lease_seconds * 0.75):
                try:
                    self._client().renew_concurrency_lease(lease_id, self.lease_seconds)
                except Exception as exc:
                    log.warning("could not renew the BLS slot's lease %s: %s", lease_id, exc)

        threading.Thread(target=renew, name="quest-bls-lease", daemon=True).start()

        def release() -> None:
            stop.set()
            try:
                self._client().release_concurrency_slots_with_lease(lease_id)
            except Exception as exc:
                log.warning(
                    "could not return the BLS slot of lease %s (%s); it is freed when the lease lapses"
                    " within %g s",
                    lease_id,
                    exc,
                    self.lease_seconds,
                )

        return _once(release)

    def _rate_token(self) -> bool:
        """One ask for a rate-limit token: True when granted; Prefect's 423 raised as it comes."""
        granted = self._client().increment_concurrency_slots(
            names=[self.rate_limit], slots=1, mode="rate_limit"
        )
        if not granted.json():  # strict: never run unlimited because the limit went away
            raise PolitenessLimitError(f"no Prefect rate limit {self.rate_limit!r}")
        return True

    def _client(self) -> Any:
        """One API client for the limiter's life (thread-safe, as httpx's), not a connection an ask."""
        with self._client_lock:
            if self._api is None:
                from prefect.client.orchestration import get_client

                self._api = get_client(sync_client=True).__enter__()
            return self._api

    def _asking(self, ask: Callable[[], T], abandoned: Stopped, waited: _Waited) -> T | None:
        """`ask()` until granted (its value), sleeping between denials; None once `abandoned()`."""
        while True:
            if abandoned():
                return None
            try:
                return ask()
            except BaseException as exc:
                told = _retry_after(exc)
                if told is None:
                    raise
            waited.denied(told)
            pause = max(MIN_RETRY_SECONDS, min(told, self.max_retry_seconds) * random.uniform(0.5, 1.0))
            until = time.monotonic() + pause
            while (left := until - time.monotonic()) > 0:
                if abandoned():
                    return None
                time.sleep(min(left, POLL_SECONDS))

    def acquire(self, stopped: Stopped) -> Release | None:
        pending = _Pending()
        context = contextvars.copy_context()  # the caller's Prefect settings and run logger

        def work() -> None:
            try:
                release = context.run(self._take, lambda: pending.abandoned)
            except BaseException as exc:
                pending.error = exc
            else:
                if release is None:
                    return
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
