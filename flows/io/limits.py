"""Politeness to BLS: at most N requests in flight and R started per second, across every invocation.

BLS blocks robots that make several requests per second, and with one flow run per survey on
Lambda many processes talk to it at once, so the numbers must hold across processes. Prefect's
global concurrency limits do that: `BLS_CONCURRENCY_LIMIT` (N slots, held for the whole request
including its streamed body) and `BLS_RATE_LIMIT`, the pacer: K slots, each held from before a
request is sent until at least a second after its answer (`flows.core.pacing`: why answers).
Pulumi creates both with the work pool (`infra_pulumi/limits.py`). The process's own numbers
(`QUEST_BLS_*`, the same as the limits' on the stack) hold in-process for every client and thread
in every case, and Prefect's limits on top while the API holds both active and sound: whatever
Prefect answers, a process is never unlimited. A missing or inactive limit leaves the own numbers
alone in force; an active limit of 0, a decaying one, an odd answer, or an API that cannot be read
stops every request with one line (`flows.core.limit_state`: why not the own numbers then).

`limiter_for(settings)` makes one limiter per process and settings (cached) and logs its choice;
a `BlsLimiter` reads the limits again every `RECHECK_SECONDS` and after a failed ask, and logs each
change. `Limiter.acquire(stopped)` waits for its slots, giving up (None) as soon as `stopped()`
says the transfer is being aborted; it returns the request's `Permit`. `settle()` waits for the
pacer slots still to be given back (Lambda freezes a returned handler).

Facts of Prefect 3.8-3.9 this module relies on (`prefect/concurrency/`, `prefect/server/`):
- Prefect's own rate limit (slots decaying at R per second) is not used for R: its decay is timed
  from the row's `updated`, stamped with the database's `now()` (on Postgres the transaction's
  start), so grants land closer than 1/R when the server is loaded; `scale_bench` saw 3 requests
  in one second at R=2 that way, even at 0.85 R. A lease held past the answer has no such clock.
- a missing limit: the server grants the ask with no limits in its answer (Prefect's own
  `concurrency()` then skips it with a warning unless `strict=True`); an inactive one: it grants
  every ask and names the limit in its answer as if taken (`_acquire_concurrency_slots` only counts
  active limits), so only a read of the limit tells. An active limit of 0 answers 422. Here a
  grant without the limit re-reads the limits. Nothing is created automatically (the server's
  `create_if_missing` is deprecated and unused).
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
from flows.core.limit_state import Decision, Local, Refuse, Shared, decide, read_limit
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
RECHECK_SECONDS = 30.0  # the two limits are read again this often (made inactive, deleted, resized)
READ_ATTEMPTS = 3  # reads of the limits before a process refuses to send (never its own R instead)
READ_PAUSE_SECONDS = 1.0  # times the attempt, between two reads
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


def _never() -> bool:
    return False


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


def _grants(body: dict[str, Any], name: str) -> bool:
    """True when the grant answer names limit `name` with at least one slot."""
    limits = body.get("limits")
    if not isinstance(limits, list):
        return False
    for entry in limits:
        if isinstance(entry, dict) and entry.get("name") == name:
            size = entry.get("limit")
            return isinstance(size, int) and not isinstance(size, bool) and size >= 1
    return False


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
        context: contextvars.Context | None = None,
    ):
        self.concurrency_limit, self.rate_limit = concurrency_limit, rate_limit
        self.lease_seconds, self.detail = lease_seconds, detail
        self.max_retry_seconds = max_retry_seconds
        self.pacing = pacing or pacing_for(1.0)
        self._context = context  # the Prefect settings its client is made in (else the asker's)
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
        lease_id = body.get("lease_id") if isinstance(body, dict) else None
        if not isinstance(lease_id, str) or not _grants(body, name):
            if isinstance(lease_id, str):  # a lease on nothing: given back, not left to lapse
                self._client().release_concurrency_slots_with_lease(lease_id)
            # Deleted (no limit in the grant), made 0 while inactive, or an odd answer: never taken
            # as a slot; the caller reads the limits again (`BlsLimiter`).
            raise PolitenessLimitError(f"Prefect's grant of {name!r} names no such limit of 1 slot or more")
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

                def made() -> Any:
                    return get_client(sync_client=True).__enter__()

                self._api = self._context.copy().run(made) if self._context is not None else made()
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


def _read_bodies(names: tuple[str, ...]) -> list[object]:
    """Each limit's JSON as the API answers it (None: 404, not there); raises on any other failure.

    Read raw, not through Prefect's model: an odd answer is classified (`flows.core.limit_state`),
    not turned into a validation traceback.
    """
    from prefect.client.orchestration import get_client

    found: list[object] = []
    with get_client(sync_client=True) as client:
        for name in names:
            try:
                answer = client.request(
                    "GET", "/v2/concurrency_limits/{id_or_name}", path_params={"id_or_name": name}
                )
            except Exception as exc:
                if getattr(getattr(exc, "response", None), "status_code", None) == 404:
                    found.append(None)
                    continue
                raise
            if answer.status_code == 404:
                found.append(None)
                continue
            answer.raise_for_status()
            found.append(answer.json())
    return found


def _settings_only() -> contextvars.Context:
    """A context holding only the caller's Prefect settings.

    Not a copy of the caller's whole context: that holds its flow run's API client, which closes
    when the run ends while the limiter lives on (the next run of a warm Lambda, of a test session),
    and `get_client()` hands the closed one back.
    """
    from prefect.context import SettingsContext

    context = contextvars.Context()
    current = SettingsContext.get()
    if current is not None:
        context.run(SettingsContext(profile=current.profile, settings=current.settings).__enter__)
    return context


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


class BlsLimiter:
    """The process's own limits always, and Prefect's shared ones on top while the API holds both.

    Prefect grants every ask on an inactive limit, and a limit made inactive mid-run looks the same
    from the asks, so the process's own N and R (`QUEST_BLS_*`, on the stack the same numbers as
    the limits) hold whatever Prefect answers: never unlimited. The two limits are read again every
    `recheck_seconds`, and at once when an ask fails (deleted: no limit in the grant; made 0: 422),
    so a change mid-run is taken up the way it would be at the start (`flows.core.limit_state`):
    shared, own only, or no requests. Every change is one line (`requests to BLS use ...`).

    A read that fails even after `READ_ATTEMPTS` (Prefect's client already retries 502/503 and
    timeouts) refuses: the other processes may be keeping to the limits, and this one going on
    its own R would make N processes send N x R. An ask that fails while the limits read sound is
    raised, for the same reason.
    """

    def __init__(self, api_url: str, own: InProcessLimiter, recheck_seconds: float = RECHECK_SECONDS):
        self.api_url, self.own, self.recheck_seconds = api_url, own, recheck_seconds
        self._lock = threading.Lock()
        self._decision: Decision | None = None
        self._shared: PrefectLimiter | None = None
        self._read_at = 0.0  # when the limits were last read
        # Prefect's settings where the limiter was made (the API it was chosen for): a request's
        # thread (a pool's worker) may not carry them, and would ask another server.
        self._context = _settings_only()

    @property
    def description(self) -> str:
        decision = self._decision
        if decision is None:
            return f"{self.own.description} (the Prefect limits not read yet)"
        return self._describe(decision)[0]

    def _describe(self, decision: Decision) -> tuple[str, str]:
        """What is in force, and why."""
        own = f"{self.own.max_concurrent} concurrent, {self.own.per_second:g}/s"
        if isinstance(decision, Shared):
            names = f"{BLS_CONCURRENCY_LIMIT!r} and {BLS_RATE_LIMIT!r}"
            what = f"Prefect global limits {names} ({decision.describe()}) and this process's own ({own})"
            return what, f"at {self.api_url}"
        if isinstance(decision, Local):
            return self.own.description, f"at {self.api_url}: {decision.why}"
        return "no requests", decision.why

    def decided(
        self, stopped: Stopped = _never, force: bool = False
    ) -> tuple[Decision, PrefectLimiter | None] | None:
        """The decision in force, read again when due (or `force`d); None once `stopped()` while waiting."""
        while not self._lock.acquire(timeout=POLL_SECONDS):
            if stopped():
                return None
        try:
            if self._decision is None or force or time.monotonic() - self._read_at >= self.recheck_seconds:
                self._take(self._read())
                self._read_at = time.monotonic()
            assert self._decision is not None
            return self._decision, self._shared
        finally:
            self._lock.release()

    def _read(self) -> Decision:
        error: BaseException | None = None
        for attempt in range(READ_ATTEMPTS):
            if attempt:
                time.sleep(READ_PAUSE_SECONDS * attempt)
            try:
                bodies = self._context.copy().run(_read_bodies, (BLS_CONCURRENCY_LIMIT, BLS_RATE_LIMIT))
            except Exception as exc:  # 5xx, timeout, refused, not JSON: read again, then refuse
                error = exc
                continue
            try:
                conc = read_limit(BLS_CONCURRENCY_LIMIT, bodies[0])
                pacer = read_limit(BLS_RATE_LIMIT, bodies[1])
                return decide(conc, pacer, self.own.per_second)
            except PolitenessLimitError as exc:
                return Refuse(str(exc))
        assert error is not None
        return Refuse(
            f"the Prefect API at {self.api_url} could not be read for the BLS limits in {READ_ATTEMPTS} tries"
            f" ({_one_line(error)}): no request to BLS is sent, since the other processes may be keeping"
            " to those limits and this one would add its own rate to theirs"
        )

    def _take(self, decision: Decision) -> None:
        """Put `decision` in force; said once per change (a warning in the run's log after the first)."""
        if decision == self._decision:
            return
        first = self._decision is None
        self._decision = decision
        self._shared = None
        if isinstance(decision, Shared):
            self._shared = PrefectLimiter(
                detail=decision.describe(), pacing=decision.pacing, context=self._context
            )
        what, why = self._describe(decision)
        if first:
            log.info("requests to BLS use %s (%s)", what, why)
            return
        log.warning("requests to BLS now use %s (%s)", what, why)
        run_log = _run_logger()
        if run_log is not log:
            run_log.warning("requests to BLS now use %s (%s)", what, why)

    def acquire(self, stopped: Stopped) -> Permit | None:
        """The own slots first, then Prefect's while they are in force (a failed ask re-reads them)."""
        decided = self.decided(stopped)
        if decided is None:
            return None
        decision, shared = decided
        if isinstance(decision, Refuse):
            raise PolitenessLimitError(decision.why)
        own = self.own.acquire(stopped)
        if own is None or shared is None:
            return own
        try:
            permit = shared.acquire(stopped)
        except PolitenessLimitError as exc:
            again = self.decided(force=True)
            if again is not None and isinstance(again[0], Local):
                return own  # deleted or made inactive meanwhile: said in the log, own limits hold
            own.release()
            if again is not None and isinstance(again[0], Refuse):
                raise PolitenessLimitError(again[0].why) from exc
            raise
        except BaseException:
            own.release()
            raise
        if permit is None:
            own.release()
            return None
        return Permit(
            partial(_both, own.answered, permit.answered), partial(_both, own.release, permit.release)
        )


def _both(first: Release, second: Release) -> None:
    try:
        first()
    finally:
        second()


_choices: dict[tuple[Any, ...], Limiter] = {}
_choices_lock = threading.Lock()


def limiter_for(settings: Any) -> Limiter:
    """The process's limiter for its Prefect API and numbers: in-process only without an API, else
    a `BlsLimiter` (its own numbers, and Prefect's limits while they are active and sound).

    One per (API, numbers) and process, shared by every client; the choice is logged once, and a
    `BlsLimiter` logs each change it sees later.
    """
    n = int(getattr(settings, "bls_max_concurrent_requests", 4))
    r = float(getattr(settings, "bls_requests_per_second", 2.0))
    api_url = _prefect_api_url()
    key = (api_url, n, r)
    with _choices_lock:
        limiter = _choices.get(key)
        if limiter is not None:
            return limiter
        own = in_process_limiter(n, r)
        if api_url is None:
            limiter = own
            log.info("requests to BLS use %s (%s)", own.description, "no Prefect API configured")
        else:
            limiter = BlsLimiter(api_url, own)
            limiter.decided()  # read and logged now, at the client's making
        _choices[key] = limiter
    return limiter


def reset_choices() -> None:
    """Forget the process's limiters (tests; a process that created or removed the limits)."""
    with _choices_lock:
        _choices.clear()
