"""Politeness to BLS: at most N requests in flight and R started per second, across every invocation.

BLS blocks robots that make several requests per second, and with one flow run per survey on
Lambda many processes talk to it at once, so the numbers must hold across processes. Prefect's
global concurrency limits do that: `BLS_CONCURRENCY_LIMIT` (N slots, held for the whole request
including its streamed body) and `BLS_RATE_LIMIT`, the pacer: K slots, each held from before a
request is sent until at least a second after its answer (`flows.core.pacing`: why answers).
Pulumi creates both with the work pool (`infra_pulumi/limits.py`). Without them (no Prefect API, or
an API without the two limits: `quest run` on a laptop, tests) the same rule holds in-process for
every client and thread of this process.

`limiter_for(settings)` makes the choice once per process and settings (cached) and logs it once.
`Limiter.acquire(stopped)` waits for a slot and a pacer slot, giving up (None) as soon as
`stopped()` says the transfer is being aborted; it returns the request's `Permit`.
`settle()` waits for the pacer slots still to be given back (Lambda freezes a returned handler).

Facts of Prefect 3.8-3.9 this module relies on (`prefect/concurrency/`, `prefect/server/`):
- Prefect's own rate limit (slots decaying at R per second) is not used for R: its decay is timed
  from the row's `updated`, stamped with the database's `now()` (on Postgres the transaction's
  start), so grants land closer than 1/R when the server is loaded; `scale_bench` saw 3 requests
  in one second at R=2 that way, even at 0.85 R. A lease held past the answer has no such clock.
- a missing limit: the server grants the ask with no limits in its answer (Prefect's own
  `concurrency()` then skips it with a warning unless `strict=True`). Here that raises
  `PolitenessLimitError`: never run unlimited by accident. Nothing is created automatically (the
  server's `create_if_missing` is deprecated and unused).
- waiting: the server answers 423 with `Retry-After` (`prefect/server/api/concurrency_limits_v2.py`,
  `_generate_concurrency_locked_response`): the average occupancy times the queue, capped at 30 s,
  times up to 1.3 for jitter (`clamped_poisson_interval`). Prefect's client sleeps that long and
  asks again. With slots held for whole file bodies (a 300 MB file holds one for minutes) and
  dozens of waiters, that is a 30-40 s sleep while a slot may free a second later: a survey's one
  listing GET then waited out its run's whole budget (issue 12, `scale_bench`). So this module asks
  through the client itself, one request an ask (`increment-with-lease`; `concurrency(max_retries=0)`
  would log an ERROR line in Prefect's service for every denial), and sleeps
  `min(Retry-After, cap)` with jitter between asks, watching `stopped()`; the cap is
  `max_retry_seconds` for a slot and half the hold for the pacer, whose slots free every hold.
  Granting depends only on the slots held, so asking sooner costs the server a request, not fairness.
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
from functools import partial
from typing import Any, Protocol, TypeVar

from flows.core.errors import PolitenessLimitError
from flows.core.names import BLS_CONCURRENCY_LIMIT, BLS_RATE_LIMIT
from flows.core.pacing import PacerBook, Pacing, pacing_for

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
SETTLE_SECONDS = 5.0  # the longest `settle()` waits for pacer slots to be given back


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


def _nothing() -> None:
    pass


class Permit:
    """One request's hold on the limits.

    `answered()` when its answer's headers are in, or it failed: from then on its pacer slot frees
    after the hold. `release()` when its body is closed: the concurrency slot frees now (and it
    counts as answered if it was not yet). Both idempotent.
    """

    def __init__(self, on_answer: Release = _nothing, on_release: Release = _nothing):
        self._answer, self._release = _once(on_answer), _once(on_release)

    def answered(self) -> None:
        self._answer()

    def release(self) -> None:
        try:
            self._answer()
        finally:
            self._release()


class Limiter(Protocol):
    """Takes one concurrency slot and one pacer slot per request."""

    @property
    def description(self) -> str: ...

    def acquire(self, stopped: Stopped) -> Permit | None:
        """Wait for both slots; the request's permit, or None when `stopped()` while waiting."""
        ...


class InProcessLimiter:
    """A semaphore of N and a pacer of K slots, each freed a hold after its answer (`flows.core.pacing`)."""

    def __init__(self, max_concurrent: int, per_second: float):
        if max_concurrent < 1 or not per_second > 0:
            raise ValueError(f"need N >= 1 and R > 0, got N={max_concurrent}, R={per_second}")
        self.max_concurrent, self.per_second = max_concurrent, per_second
        self.pacing = pacing_for(per_second)
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self._pace = threading.Lock()
        self._book = PacerBook(self.pacing)

    @property
    def description(self) -> str:
        return f"in-process limits: {self.max_concurrent} concurrent, {self.per_second:g}/s"

    def acquire(self, stopped: Stopped) -> Permit | None:
        while not self._slots.acquire(timeout=POLL_SECONDS):
            if stopped():
                return None
        if not self._take_pacer(stopped):
            self._slots.release()
            return None
        return Permit(self._answered, self._slots.release)

    def _take_pacer(self, stopped: Stopped) -> bool:
        while True:
            with self._pace:
                left = self._book.take(time.monotonic())
            if left == 0.0:
                return True
            if stopped():
                return False
            time.sleep(min(max(left, 0.001), POLL_SECONDS))

    def _answered(self) -> None:
        with self._pace:
            self._book.answered(time.monotonic())


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


_freeing: set[threading.Thread] = set()
_freeing_lock = threading.Lock()


def _free_later(release: Release, after: float) -> None:
    """`release()` in `after` seconds, in a thread the interpreter waits for at exit (not a daemon):
    a pacer slot of an exiting process comes back now, not when its lease lapses a minute on."""

    def run() -> None:
        try:
            time.sleep(after)
            release()
        finally:
            with _freeing_lock:
                _freeing.discard(thread)

    thread = threading.Thread(target=run, name="quest-bls-pacer", daemon=False)
    with _freeing_lock:
        _freeing.add(thread)
    thread.start()


def settle(timeout: float = SETTLE_SECONDS) -> bool:
    """Wait until the pacer slots this process holds are given back; False if some were not in time.

    Lambda freezes the process once the handler returns: a slot it still held would be lost to
    every invocation until its lease lapses.
    """
    ends = time.monotonic() + timeout
    while True:
        with _freeing_lock:
            pending = list(_freeing)
        if not pending:
            return True
        left = ends - time.monotonic()
        if left <= 0:
            log.warning("%d BLS pacer slot(s) not given back within %g s", len(pending), timeout)
            return False
        pending[0].join(timeout=left)


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
    permit: Permit | None = None
    error: BaseException | None = None
    abandoned: bool = False


class PrefectLimiter:
    """Prefect's global concurrency limit (held until the body is closed) and its pacer limit."""

    def __init__(
        self,
        concurrency_limit: str = BLS_CONCURRENCY_LIMIT,
        rate_limit: str = BLS_RATE_LIMIT,
        lease_seconds: float = LEASE_SECONDS,
        detail: str = "",
        max_retry_seconds: float = MAX_RETRY_SECONDS,
        pacing: Pacing | None = None,
    ):
        self.concurrency_limit, self.rate_limit = concurrency_limit, rate_limit
        self.lease_seconds, self.detail = lease_seconds, detail
        self.max_retry_seconds = max_retry_seconds
        self.pacing = pacing or pacing_for(1.0)
        self._api: Any = None
        self._client_lock = threading.Lock()

    @property
    def description(self) -> str:
        names = f"{self.concurrency_limit!r} and {self.rate_limit!r}"
        return f"Prefect global limits {names}" + (f" ({self.detail})" if self.detail else "")

    def _take(self, abandoned: Stopped) -> Permit | None:
        """Slot first, then the pacer slot, so a request is sent right after it is paced.

        Each ask is one request to the API; `_asking` sleeps between them. The requests of one
        process wait in one line and only its head asks, as Prefect's own acquisition queue does:
        otherwise every waiting thread of every invocation asks the API several times a second.
        None when `abandoned()` while waiting (a slot already held is released).
        """
        waited = _Waited(time.monotonic())
        permit: Permit | None = None
        line = _line(self.concurrency_limit, self.rate_limit)
        pacer_cap = max(MIN_RETRY_SECONDS, min(self.max_retry_seconds, self.pacing.hold_seconds / 2))
        while not line.acquire(timeout=POLL_SECONDS):
            if abandoned():
                break
        else:
            slot: Release | None = None
            try:
                slot = self._asking(
                    lambda: self._lease(self.concurrency_limit), abandoned, waited, self.max_retry_seconds
                )
                if slot is not None:
                    pacer = self._asking(lambda: self._lease(self.rate_limit), abandoned, waited, pacer_cap)
                    if pacer is None:
                        slot()
                    else:
                        permit = Permit(partial(_free_later, pacer, self.pacing.hold_seconds), slot)
            except BaseException:
                if slot is not None and permit is None:
                    slot()
                raise
            finally:
                line.release()
        waited.report(self, granted=permit is not None)
        return permit

    def _lease(self, name: str) -> Release:
        """One ask for a slot of `name` under a lease, renewed while held; its release.

        A lease, as Prefect's `concurrency()` takes: a process killed mid-request (Lambda's limit)
        holds its slot only until the lease lapses. Renewed every 0.75 x the lease, as Prefect does.
        A failed renewal or release is logged, never raised into a stream: the lease lapses anyway.
        """
        answer = self._client().increment_concurrency_slots_with_lease(
            names=[name], slots=1, mode="concurrency", lease_duration=self.lease_seconds
        )
        body = answer.json()
        if not body.get("limits"):  # strict: never run unlimited because the limit went away
            raise PolitenessLimitError(f"the Prefect concurrency limit {name!r} does not exist")
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

    def _client(self) -> Any:
        """One API client for the limiter's life (thread-safe, as httpx's), not a connection an ask."""
        with self._client_lock:
            if self._api is None:
                from prefect.client.orchestration import get_client

                self._api = get_client(sync_client=True).__enter__()
            return self._api

    def _asking(self, ask: Callable[[], T], abandoned: Stopped, waited: _Waited, cap: float) -> T | None:
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
            pause = max(MIN_RETRY_SECONDS, min(told, cap) * random.uniform(0.5, 1.0))
            until = time.monotonic() + pause
            while (left := until - time.monotonic()) > 0:
                if abandoned():
                    return None
                time.sleep(min(left, POLL_SECONDS))

    def acquire(self, stopped: Stopped) -> Permit | None:
        pending = _Pending()
        context = contextvars.copy_context()  # the caller's Prefect settings and run logger

        def work() -> None:
            try:
                permit = context.run(self._take, lambda: pending.abandoned)
            except BaseException as exc:
                pending.error = exc
            else:
                if permit is None:
                    return
                with pending.lock:
                    pending.permit = permit
                    abandoned = pending.abandoned
                if abandoned:
                    permit.release()
            finally:
                pending.done.set()

        threading.Thread(target=work, name="quest-bls-slot", daemon=True).start()
        while not pending.done.wait(POLL_SECONDS):
            if stopped():
                with pending.lock:
                    pending.abandoned = True
                    permit = pending.permit
                if permit is not None:
                    permit.release()
                return None
        if pending.error is not None:
            raise PolitenessLimitError(
                f"could not take a BLS request slot from Prefect ({self.description}): {pending.error}"
            ) from pending.error
        assert pending.permit is not None
        return pending.permit


class MisfitLimiter:
    """Prefect holds a pacer this process cannot keep R with: every request fails, naming the fix."""

    def __init__(self, why: str):
        self.why = why

    @property
    def description(self) -> str:
        return f"no requests: {self.why}"

    def acquire(self, stopped: Stopped) -> Permit | None:
        raise PolitenessLimitError(self.why)


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


def _prefect_limiter(conc: dict[str, Any], pacer: dict[str, Any], per_second: float) -> Limiter:
    """The limiter for the two limits as read, or a `MisfitLimiter` naming what to fix.

    The pacer must not decay: a decaying slot frees before its answer's hold (an older stack's
    rate limit); `pulumi up` makes it the pacer. Its size is the most requests in any second, for
    every process, whatever R each was given (`pacing_for`).
    """
    fix = "`pulumi up` sets it from the stack's config"
    if float(pacer.get("slot_decay_per_second") or 0.0) > 0:
        return MisfitLimiter(
            f"the Prefect limit {BLS_RATE_LIMIT!r} decays ({pacer['slot_decay_per_second']:g} slots/s):"
            f" it must be a plain limit of slots held after each answer; {fix}"
        )
    pacing = pacing_for(per_second, int(pacer["limit"]))  # the limit's size bounds every second
    active = "" if conc["active"] and pacer["active"] else "; INACTIVE in Prefect"
    detail = f"{conc['limit']} concurrent, {pacing.describe()}{active}"
    return PrefectLimiter(detail=detail, pacing=pacing)


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
                    limiter = _prefect_limiter(limits[0], limits[1], r)
                    why = f"at {api_url}"
        _choices[key] = _Choice(limiter, time.monotonic() + CHOICE_TTL_SECONDS)
    log.info("requests to BLS use %s (%s)", limiter.description, why)
    return limiter


def reset_choices() -> None:
    """Forget the cached choices (tests; a process that created or removed the limits)."""
    with _choices_lock:
        _choices.clear()
