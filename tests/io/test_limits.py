"""The politeness limiter in-process: N in flight, R starts per second, across threads and clients.

Server-side numbers come from the loopback upstream's request log (start/end per request). The
rate is read over any 1 s window and must not exceed R: starts are spaced 1/(R x BLS_RATE_HEADROOM)
apart, so a request line read a little late by the server's thread does not make it R + 1; without
the limiter both figures are far higher.
"""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from flows.core.errors import TransfersCancelled
from flows.core.pacing import pacing_for
from flows.devkit.upstream_server import GeneratedFile, UpstreamServer
from flows.io import limits
from flows.io.http import DEADLINE_EXTENSION, GuardedTransport, guarded_transport, make_client
from flows.io.limits import InProcessLimiter, Permit, in_process_limiter, is_bls_url, limiter_for
from flows.settings import Settings

N, R = 3, 8.0


@pytest.fixture
def no_prefect_api(monkeypatch):
    """This process has no Prefect API: the in-process limiter is the one chosen."""
    monkeypatch.setattr(limits, "_prefect_api_url", lambda: None)
    limits.reset_choices()
    yield
    limits.reset_choices()


def _settings(up: UpstreamServer, n: int = N, r: float = R) -> Settings:
    return Settings(
        bls_base_url=up.bls_base_url,
        population_url=up.population_url,
        contact="tests@example.com",
        bls_max_concurrent_requests=n,
        bls_requests_per_second=r,
        retries=0,
    )


def test_in_process_limiter_holds_n_and_r_across_threads():
    limiter = InProcessLimiter(3, 20.0)  # 20 pacer slots, each freed 1 s after its answer
    lock = threading.Lock()
    in_flight = peak = 0
    starts: list[float] = []

    def one() -> None:
        nonlocal in_flight, peak
        permit = limiter.acquire(lambda: False)
        assert permit is not None
        with lock:
            starts.append(time.monotonic())
            in_flight += 1
            peak = max(peak, in_flight)
        time.sleep(0.02)
        permit.answered()
        time.sleep(0.03)
        with lock:
            in_flight -= 1
        permit.release()
        permit.release()  # idempotent: a second call gives nothing back twice

    with ThreadPoolExecutor(12) as pool:
        list(pool.map(lambda _: one(), range(25)))
    assert peak <= 3
    starts.sort()
    assert starts[20] - starts[0] >= 1.0  # the 21st waits a second after the first one's answer
    assert max(sum(1 for t in starts if s <= t < s + 1.0) for s in starts) <= 20
    assert limiter._slots.acquire(blocking=False)  # every slot came back
    limiter._slots.release()


def test_a_permit_released_unanswered_counts_as_answered():
    limiter = InProcessLimiter(1, 1.0)
    permit = limiter.acquire(lambda: False)
    assert permit is not None
    permit.release()  # a request that failed before its answer
    began = time.monotonic()
    again = limiter.acquire(lambda: False)
    assert again is not None and time.monotonic() - began >= 0.9  # the pacer's hold still applies
    again.release()
    stopped = limiter.acquire(lambda: True)  # the pacer is held: a stopped wait gives up at once
    assert stopped is None and limiter._slots.acquire(blocking=False)  # and keeps no slot
    limiter._slots.release()


def test_one_limiter_per_process_and_numbers():
    assert in_process_limiter(4, 2.0) is in_process_limiter(4, 2)
    assert in_process_limiter(4, 2.0) is not in_process_limiter(3, 2.0)
    with pytest.raises(ValueError):
        InProcessLimiter(0, 1.0)


def test_only_the_bls_host_is_limited():
    s = Settings(contact="t@example.com")
    assert is_bls_url(s, s.bls_base_url + "pr/")
    assert is_bls_url(s, "https://download.bls.gov/pub/other/")  # the host, not only the path
    assert not is_bls_url(s, s.population_url)
    with UpstreamServer() as up:  # one loopback host serves both: the path tells them apart
        s = _settings(up)
        assert is_bls_url(s, up.survey_url("pr")) and is_bls_url(s, up.bls_base_url)
        assert not is_bls_url(s, up.population_url)


def test_parallel_gets_through_make_client_hold_n_in_flight(no_prefect_api):
    # Bodies big enough to overlap on loopback; the server's end is its last write, which is
    # before the client has read it all, so its spans sit inside the client's slots.
    files = {f"f{i}.bin": GeneratedFile(8 * 1024 * 1024, seed=i) for i in range(6)}
    with UpstreamServer({"aa": files, "bb": files}) as up:
        settings = _settings(up, n=N, r=1000.0)
        # Two clients (two surveys, as two syncs in one process) share the process's limits.
        with make_client(settings, up.survey_url("aa")) as a, make_client(settings, up.survey_url("bb")) as b:
            assert guarded_transport(a).limiter is guarded_transport(b).limiter  # type: ignore[union-attr]
            jobs = [(c, up.survey_url(s) + n) for c, s in ((a, "aa"), (b, "bb")) for n in files]
            with ThreadPoolExecutor(len(jobs)) as pool:
                sizes = list(pool.map(lambda job: len(job[0].get(job[1]).content), jobs))
        assert sizes == [8 * 1024 * 1024] * 12
        assert up.peak_concurrency() <= N


def _all_at_once(up: UpstreamServer, r: float) -> list[float]:
    """GET every file of survey `aa` at once through one client at R = `r`; the upstream's starts."""
    names = sorted(up.files("aa"))
    with (
        make_client(_settings(up, n=4, r=r), up.survey_url("aa")) as client,
        ThreadPoolExecutor(len(names)) as pool,
    ):
        list(pool.map(lambda n: client.get(up.survey_url("aa") + n).raise_for_status(), names))
    return sorted(q.started for q in up.requests)


def test_parallel_gets_through_make_client_start_at_most_r_per_second(no_prefect_api):
    with UpstreamServer({"aa": {f"f{i}.txt": b"x" * 100 for i in range(12)}}) as up:
        starts = _all_at_once(up, R)
        assert len(starts) == 12
        assert up.peak_rate() <= R  # in any second, at the upstream
        assert starts[8] - starts[0] >= 1.0  # R pacer slots: the 9th a second after an answer


@pytest.mark.parametrize("r", [2.0, 1.5])
def test_a_request_taken_up_late_does_not_bunch_with_the_next(no_prefect_api, r):
    """The server takes the first request line up 0.9/R late (what a client cannot see). Paced by
    grants (a token bucket, even 15% under R) it reaches the site just before the next two:
    R + 1 in one second. Paced by answers, the next waits for the late one's answer."""
    with UpstreamServer({"aa": {f"f{i}.txt": b"x" * 100 for i in range(5)}}) as up:
        up.delay("*", 0.9 / r, times=1)
        starts = _all_at_once(up, r)
        assert len(starts) == 5
        assert up.peak_rate() <= math.ceil(r)
        pacing = pacing_for(r)
        assert starts[pacing.slots] - starts[0] >= pacing.hold_seconds


def test_the_population_host_is_not_limited(no_prefect_api):
    with UpstreamServer({"aa": {"a.txt": b"a" * 100_000}}, population=b'{"data": []}') as up:
        settings = _settings(up, n=1, r=1000.0)
        bls, pop = make_client(settings, up.survey_url("aa")), make_client(settings, up.population_url)
        with bls, pop:
            assert guarded_transport(pop).limiter is None  # type: ignore[union-attr]
            with bls.stream("GET", up.survey_url("aa") + "a.txt") as held:
                next(held.iter_raw(1024))  # BLS's only slot is taken
                got: list[int] = []
                other = threading.Thread(target=lambda: got.append(pop.get(up.population_url).status_code))
                other.start()
                other.join(timeout=30)
                assert got == [200]


def test_the_slot_is_held_until_the_streamed_body_is_closed(no_prefect_api):
    with UpstreamServer({"aa": {"big.txt": b"y" * 100_000}}) as up:
        settings = _settings(up, n=1, r=1000.0)
        with make_client(settings, up.survey_url("aa")) as client:
            limiter = guarded_transport(client).limiter  # type: ignore[union-attr]
            assert isinstance(limiter, InProcessLimiter)
            with client.stream("GET", up.survey_url("aa") + "big.txt") as response:
                next(response.iter_raw(1024))
                assert not limiter._slots.acquire(blocking=False)  # held while the body is open
            assert limiter._slots.acquire(blocking=False)  # given back on close
            limiter._slots.release()


class CountingLimiter:
    """A real in-process limiter that counts what the transport takes and gives back."""

    def __init__(self) -> None:
        self.inner = InProcessLimiter(4, 1000.0)
        self.acquired = self.released = 0
        self.description = "counting"

    def acquire(self, stopped):  # noqa: ANN001, ANN201 - the Limiter protocol
        permit = self.inner.acquire(stopped)
        assert permit is not None
        self.acquired += 1

        def counted() -> None:
            self.released += 1
            permit.release()

        return Permit(permit.answered, counted)


def test_each_redirect_hop_and_each_failed_request_takes_and_returns_a_slot():
    with UpstreamServer({"aa": {"a.txt": b"a"}}) as up:
        up.redirect("*/old.txt", up.survey_url("aa") + "a.txt")
        counting = CountingLimiter()
        transport = GuardedTransport(up.base_url, default_deadline=30, limiter=counting)
        with httpx.Client(transport=transport, follow_redirects=True) as client:
            assert client.get(up.survey_url("aa") + "old.txt").content == b"a"
            assert (counting.acquired, counting.released) == (2, 2)
            assert client.get(up.survey_url("aa") + "missing.txt").status_code == 404
            assert (counting.acquired, counting.released) == (3, 3)
        refused = GuardedTransport("http://127.0.0.1:9/", default_deadline=5, limiter=counting)
        with httpx.Client(transport=refused) as client, pytest.raises(httpx.ConnectError):
            client.get("http://127.0.0.1:9/x")
        assert (counting.acquired, counting.released) == (4, 4)


def test_waiting_for_a_slot_does_not_eat_the_request_deadline(no_prefect_api):
    with UpstreamServer({"aa": {"a.txt": b"a" * 50_000, "b.txt": b"b"}}) as up:
        settings = _settings(up, n=1, r=1000.0)
        with make_client(settings, up.survey_url("aa")) as client:
            with client.stream("GET", up.survey_url("aa") + "a.txt") as held:
                waiter = ThreadPoolExecutor(1)
                second = waiter.submit(
                    client.get, up.survey_url("aa") + "b.txt", extensions={DEADLINE_EXTENSION: 1.0}
                )
                time.sleep(1.5)  # longer than the second request's whole deadline
                assert not second.done()
                held.read()
            assert second.result(timeout=30).content == b"b"
            waiter.shutdown()


def test_an_aborted_transport_does_not_hang_waiting_for_a_slot(no_prefect_api):
    with UpstreamServer({"aa": {"a.txt": b"a" * 50_000, "b.txt": b"b"}}) as up:
        settings = _settings(up, n=1, r=1000.0)
        with make_client(settings, up.survey_url("aa")) as client:
            guard = guarded_transport(client)
            assert guard is not None
            errors: list[BaseException] = []

            def wait_for_slot() -> None:
                try:
                    client.get(up.survey_url("aa") + "b.txt")
                except BaseException as exc:
                    errors.append(exc)

            with client.stream("GET", up.survey_url("aa") + "a.txt") as held:
                next(held.iter_raw(1024))
                waiting = threading.Thread(target=wait_for_slot)
                waiting.start()
                time.sleep(0.3)
                assert waiting.is_alive()  # queued behind the held slot
                guard.abort("the run is stopping")
                waiting.join(timeout=30)
                assert not waiting.is_alive()
            assert len(errors) == 1 and isinstance(errors[0], TransfersCancelled)
            assert "stopping" in str(errors[0])
        assert [r.path for r in up.requests].count("/pub/time.series/aa/b.txt") == 0


def test_the_choice_is_in_process_without_a_prefect_api(no_prefect_api, caplog):
    with UpstreamServer() as up:
        caplog.set_level("INFO", logger="flows.io.limits")
        first = limiter_for(_settings(up))
        assert first is in_process_limiter(N, R)
        assert limiter_for(_settings(up)) is first  # cached: decided and logged once
        logged = [r.getMessage() for r in caplog.records if "requests to BLS use" in r.getMessage()]
        expected = f"in-process limits: {N} concurrent, {R:g}/s (no Prefect API configured)"
        assert logged == [f"requests to BLS use {expected}"]
