"""Politeness to BLS across processes: Prefect's global limits hold N and R for every process at once.

A real `prefect server` holds the two limits (created through its REST API, as Pulumi does); two
`quest sync` processes mirror two surveys from one loopback upstream at the same time, each with
its own in-process numbers set far above N and R, so only the shared Prefect limits can keep the
upstream's figures down. The figures are the upstream's own (request start/end times). Without the
limits the API is asked once and the in-process limiter is chosen.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from lambda_pool import prefect_server, quiet_env

from flows.core.names import BLS_CONCURRENCY_LIMIT, BLS_RATE_LIMIT
from flows.core.pacing import pacing_for
from flows.devkit.upstream_server import GeneratedFile, UpstreamServer
from flows.io import limits
from flows.io.http import make_client
from flows.io.limits import BlsLimiter, Permit, PrefectLimiter, in_process_limiter, limiter_for
from flows.settings import Settings

N, R = 2, 4.0
FILES = 7  # per survey; with the listing, 8 requests each


@pytest.fixture(scope="module")
def api_url(tmp_path_factory):
    with prefect_server(tmp_path_factory.mktemp("prefect-home")) as url:
        yield url


@pytest.fixture(autouse=True)
def _pacer_slots_given_back():
    """Each test's pacer slots come back while its limits and the server are still there."""
    yield
    assert limits.settle(timeout=10)


def _create_limits(api_url: str) -> None:
    for body in (
        {"name": BLS_CONCURRENCY_LIMIT, "limit": N},
        {"name": BLS_RATE_LIMIT, "limit": pacing_for(R).slots},  # the pacer, as Pulumi makes it
    ):
        httpx.post(f"{api_url}/v2/concurrency_limits/", json=body).raise_for_status()


def _delete_limits(api_url: str) -> None:
    for name in (BLS_CONCURRENCY_LIMIT, BLS_RATE_LIMIT):
        httpx.delete(f"{api_url}/v2/concurrency_limits/{name}")


def test_two_processes_mirroring_at_once_stay_within_n_and_r(api_url, tmp_path):
    _create_limits(api_url)
    surveys = {
        s: {f"{s}.f{i}": GeneratedFile(2 * 1024 * 1024, seed=i) for i in range(FILES)} for s in ("aa", "bb")
    }
    try:
        with UpstreamServer(surveys) as up:
            # Each file taken up 1 s late: a survey's transfers then last >= 3.5 s alone, beyond the
            # two processes' start-up skew on a loaded machine (without it a CI once saw one end
            # before the other began).
            up.delay("*.f*", 1.0)
            procs = []
            for survey in surveys:
                env = quiet_env(
                    tmp_path / f"home-{survey}",
                    PREFECT_API_URL=api_url,
                    QUEST_BLS_BASE_URL=up.bls_base_url,
                    QUEST_POPULATION_URL=up.population_url,
                    QUEST_CONTACT="tests@example.com",
                    QUEST_STORE=str(tmp_path / "data"),
                    QUEST_CONCURRENCY="8",
                    # Far above N and R: only the shared limits can hold the upstream's figures.
                    QUEST_BLS_MAX_CONCURRENT_REQUESTS="64",
                    QUEST_BLS_REQUESTS_PER_SECOND="1000",
                )
                (tmp_path / f"home-{survey}").mkdir()
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "flows.cli", "sync", "--survey", survey],
                        env=env,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT,
                        text=True,
                    )
                )
            outputs = [p.communicate(timeout=600)[0] for p in procs]
            assert [p.returncode for p in procs] == [0, 0], outputs
            gets = [r for r in up.requests if r.method == "GET"]
            assert len(up.file_gets()) == 2 * FILES and len(gets) == 2 * FILES + 2
            assert up.peak_concurrency() <= N
            assert up.peak_rate() <= R  # paced by answers: no window's edge to allow for
            # Both processes were in flight together, and every slot came back.
            spans = {s: [r for r in gets if f"/{s}/" in r.path] for s in surveys}
            assert min(r.started for r in spans["bb"]) < max(r.ended for r in spans["aa"])
            assert min(r.started for r in spans["aa"]) < max(r.ended for r in spans["bb"])
        for name in (BLS_CONCURRENCY_LIMIT, BLS_RATE_LIMIT):  # the exited processes held nothing
            assert httpx.get(f"{api_url}/v2/concurrency_limits/{name}").json()["active_slots"] == 0
        for survey, files in surveys.items():
            folder = tmp_path / "data" / "bls" / survey
            stored = [p.name for p in folder.iterdir() if not p.name.startswith(".")]  # not the lease
            assert sorted(stored) == sorted(files)
    finally:
        _delete_limits(api_url)


def test_the_choice_follows_what_the_api_holds(api_url, caplog):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    settings = Settings(contact="tests@example.com", bls_max_concurrent_requests=3, bls_requests_per_second=R)
    caplog.set_level("INFO", logger="flows.io.limits")
    limits.reset_choices()
    try:
        with temporary_settings({PREFECT_API_URL: api_url}):
            limiter = limiter_for(settings)
            assert isinstance(limiter, BlsLimiter) and limiter.own is in_process_limiter(3, R)
            assert limiter.description == f"in-process limits: 3 concurrent, {R:g}/s"
            _create_limits(api_url)
            assert limiter_for(settings) is limiter  # one per process and numbers
            assert limiter.description.startswith("in-process")  # read again every RECHECK_SECONDS
            limiter.decided(force=True)
            assert limiter.description.startswith(f"Prefect global limits {BLS_CONCURRENCY_LIMIT!r}")
            assert f"({N} concurrent, {R:g}/s" in limiter.description
            assert limiter.description.endswith(f"and this process's own (3 concurrent, {R:g}/s)")
        said = [r.getMessage() for r in caplog.records if "requests to BLS" in r.getMessage()]
        missing = f"{BLS_CONCURRENCY_LIMIT!r} is missing and {BLS_RATE_LIMIT!r} is missing in Prefect"
        assert said == [
            f"requests to BLS use in-process limits: 3 concurrent, {R:g}/s (at {api_url}: {missing})",
            f"requests to BLS now use {limiter.description} (at {api_url})",
        ]
    finally:
        _delete_limits(api_url)
        limits.reset_choices()


@pytest.mark.parametrize(
    ("pacer", "said"),
    [
        ({"limit": 1, "slot_decay_per_second": R}, "decays"),  # an older stack's rate limit
    ],
)
def test_limits_that_cannot_keep_r_refuse_every_request_naming_the_fix(api_url, pacer, said):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.core.errors import PolitenessLimitError

    limits.reset_choices()
    try:
        httpx.post(f"{api_url}/v2/concurrency_limits/", json={"name": BLS_CONCURRENCY_LIMIT, "limit": N})
        httpx.post(f"{api_url}/v2/concurrency_limits/", json={"name": BLS_RATE_LIMIT, **pacer})
        with temporary_settings({PREFECT_API_URL: api_url}):
            limiter = limiter_for(Settings(contact="tests@example.com", bls_requests_per_second=R))
            with pytest.raises(PolitenessLimitError, match="pulumi up") as raised:
                limiter.acquire(lambda: False)
            assert said in str(raised.value)
    finally:
        _delete_limits(api_url)
        limits.reset_choices()


def test_an_unreachable_api_stops_the_requests_in_one_line(tmp_path: Path, monkeypatch):
    """Not the process's own limits: with the API down for every process, N of them would send N x R."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.core.errors import PolitenessLimitError

    monkeypatch.setattr(limits, "READ_PAUSE_SECONDS", 0.05)
    limits.reset_choices()
    try:
        with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
            limiter = limiter_for(Settings(contact="tests@example.com"))
            with pytest.raises(PolitenessLimitError, match="could not be read for the BLS limits in 3 tries"):
                limiter.acquire(lambda: False)
            assert limiter.description == "no requests"
    finally:
        limits.reset_choices()


# --------------------------------------------------------------------------- waiting for a slot
# Prefect's 423 asks a waiter to sleep `Retry-After` seconds, which grows with every denial (up to
# 39 s for a concurrency limit, without bound for a rate limit) while the slot may free a second
# later. Each test first drives that figure up with denials and checks the server now says so, then
# frees the slot: the limiter must take it within about its own retry cap, not Prefect's figure.


def _limit(api_url: str, name: str, **body: float) -> None:
    httpx.delete(f"{api_url}/v2/concurrency_limits/{name}")
    httpx.post(f"{api_url}/v2/concurrency_limits/", json={"name": name, **body}).raise_for_status()


def _post(url: str, body: dict) -> httpx.Response:
    """A POST to the test server, asked again while it answers 503 (its SQLite busy under the
    suite's load, as Prefect's own client retries it); any other answer is returned as it is."""
    for _ in range(50):
        answer = httpx.post(url, json=body)
        if answer.status_code != 503:
            return answer
        time.sleep(0.2)
    return answer


def _long_held(api_url: str, name: str) -> None:
    """A history of slots held for 5 minutes each (whole big-file bodies): Prefect's average."""
    for _ in range(4):
        body = {"names": [name], "slots": 1}
        limits_url = f"{api_url}/v2/concurrency_limits"
        _post(f"{limits_url}/increment", {**body, "mode": "concurrency"}).raise_for_status()
        _post(f"{limits_url}/decrement", {**body, "occupancy_seconds": 300}).raise_for_status()


def _deny(api_url: str, name: str, mode: str, times: int) -> float:
    """`times` asks that the server refuses; the Retry-After it gave the last."""
    told = 0.0
    for _ in range(times):
        body = {"names": [name], "slots": 1, "mode": mode}
        answer = _post(f"{api_url}/v2/concurrency_limits/increment", body)
        assert answer.status_code == 423, answer.text
        told = float(answer.headers["Retry-After"])
    return told


def _held_elsewhere_with_a_long_retry_after(api_url: str, conc: str, rate: str) -> httpx.Response:
    """A one-slot limit whose slot another process holds, and a server that now says "retry in
    10+ s"; the holder's lease (its answer)."""
    _limit(api_url, conc, limit=1)
    _limit(api_url, rate, limit=10, slot_decay_per_second=10)
    _long_held(api_url, conc)
    held = _post(
        f"{api_url}/v2/concurrency_limits/increment-with-lease",
        {"names": [conc], "slots": 1, "mode": "concurrency", "lease_duration": 60},
    )
    held.raise_for_status()
    assert _deny(api_url, conc, "concurrency", 40) >= 10  # Prefect would have us sleep that long
    return held


def _acquire_in_thread(limiter: PrefectLimiter, stopped=lambda: False):
    """`acquire` in a thread with this thread's context (its Prefect settings: the API URL)."""
    import contextvars
    import threading

    got: dict[str, object] = {}
    context = contextvars.copy_context()

    def run() -> None:
        got["release"] = limiter.acquire(stopped)
        got["at"] = time.monotonic()

    thread = threading.Thread(target=context.run, args=(run,), daemon=True)
    thread.start()
    return thread, got


def test_a_freed_slot_is_taken_at_once_whatever_the_retry_after(api_url, monkeypatch):
    import logging

    from prefect.settings import PREFECT_API_URL, temporary_settings

    conc, rate = "test-wait-conc", "test-wait-rate"
    monkeypatch.setattr(limits, "LOG_WAIT_SECONDS", 0.5)
    said: list[str] = []

    class Said(logging.Logger):  # what the run log is given, whatever logging's config is now
        def info(self, msg, *args, **kwargs):  # type: ignore[no-untyped-def, override]
            said.append(msg % args)

    monkeypatch.setattr(limits, "_run_logger", lambda: Said("said"))
    held = _held_elsewhere_with_a_long_retry_after(api_url, conc, rate)
    try:
        with temporary_settings({PREFECT_API_URL: api_url}):
            limiter = PrefectLimiter(conc, rate, max_retry_seconds=0.5)
            thread, got = _acquire_in_thread(limiter)
            time.sleep(2.0)
            assert "release" not in got  # the slot is held elsewhere
            freed = time.monotonic()
            httpx.post(
                f"{api_url}/v2/concurrency_limits/decrement-with-lease",
                json={"lease_id": held.json()["lease_id"]},
            ).raise_for_status()
            thread.join(timeout=30)
            permit = got["release"]
            assert isinstance(permit, Permit)
            assert got["at"] - freed < 3.0  # about the cap, not Prefect's figure
            assert httpx.get(f"{api_url}/v2/concurrency_limits/{conc}").json()["active_slots"] == 1
            permit.release()
            assert httpx.get(f"{api_url}/v2/concurrency_limits/{conc}").json()["active_slots"] == 0
        assert any("took its BLS request slot after" in line for line in said), said
    finally:
        for name in (conc, rate):
            httpx.delete(f"{api_url}/v2/concurrency_limits/{name}")


def test_the_pacer_slot_is_waited_for_and_comes_back_a_hold_after_the_answer(api_url):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    conc, pacer = "test-pacer-conc", "test-pacer-rate"
    _limit(api_url, conc, limit=4)
    _limit(api_url, pacer, limit=1)
    limits_url = f"{api_url}/v2/concurrency_limits"

    def held(name: str) -> int:
        return int(httpx.get(f"{limits_url}/{name}").json()["active_slots"])

    try:
        other = _post(
            f"{limits_url}/increment-with-lease",
            {"names": [pacer], "slots": 1, "mode": "concurrency", "lease_duration": 60},
        )
        other.raise_for_status()  # another invocation's request, not answered yet
        with temporary_settings({PREFECT_API_URL: api_url}):
            limiter = PrefectLimiter(conc, pacer, max_retry_seconds=0.5, pacing=pacing_for(2.0, 1))
            thread, got = _acquire_in_thread(limiter)
            time.sleep(1.0)
            assert "release" not in got  # paced behind the other request
            freed = time.monotonic()
            _post(
                f"{limits_url}/decrement-with-lease", {"lease_id": other.json()["lease_id"]}
            ).raise_for_status()
            thread.join(timeout=30)
            permit = got["release"]
            assert isinstance(permit, Permit) and got["at"] - freed < 1.5
            assert (held(conc), held(pacer)) == (1, 1)
            permit.answered()
            assert held(pacer) == 1  # held on for the hold (0.5 s) after the answer
            assert limits.settle(timeout=10)
            assert (held(conc), held(pacer)) == (1, 0)
            permit.release()
            assert held(conc) == 0
    finally:
        for name in (conc, pacer):
            httpx.delete(f"{limits_url}/{name}")


def test_a_stopped_request_stops_waiting_and_holds_nothing(api_url):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    conc, rate = "test-stop-conc", "test-stop-rate"
    _held_elsewhere_with_a_long_retry_after(api_url, conc, rate)
    try:
        stop_at = time.monotonic() + 1.5
        with temporary_settings({PREFECT_API_URL: api_url}):
            thread, got = _acquire_in_thread(PrefectLimiter(conc, rate), lambda: time.monotonic() > stop_at)
            thread.join(timeout=30)
        assert got["release"] is None and got["at"] - stop_at < 1.0
        time.sleep(3.0)  # the helper thread asks no more and takes nothing later
        assert httpx.get(f"{api_url}/v2/concurrency_limits/{conc}").json()["active_slots"] == 1
    finally:
        for name in (conc, rate):
            httpx.delete(f"{api_url}/v2/concurrency_limits/{name}")


def test_one_thread_of_a_process_asks_at_a_time(api_url, monkeypatch):
    """Eight requests waiting in one process ask the API one at a time, each ask after a pause:
    eight threads asking on their own overloaded the server of `scale_bench` until runs crashed."""
    import threading

    from prefect.settings import PREFECT_API_URL, temporary_settings

    conc, rate = "test-line-conc", "test-line-rate"
    held = _held_elsewhere_with_a_long_retry_after(api_url, conc, rate)
    asking, most, asks = 0, 0, 0
    lock = threading.Lock()
    real_lease = PrefectLimiter._lease

    def counted_slot(self, name):
        nonlocal asking, most, asks
        if name != conc:
            return real_lease(self, name)
        with lock:
            asking, asks = asking + 1, asks + 1
            most = max(most, asking)
        try:
            return real_lease(self, name)
        finally:
            with lock:
                asking -= 1

    monkeypatch.setattr(PrefectLimiter, "_lease", counted_slot)
    try:
        with temporary_settings({PREFECT_API_URL: api_url}):
            limiter = PrefectLimiter(conc, rate, max_retry_seconds=0.5)
            waiting = [_acquire_in_thread(limiter) for _ in range(8)]
            time.sleep(3.0)
            assert most == 1 and asks <= 3.0 / 0.25 + 2, (most, asks)
            httpx.post(
                f"{api_url}/v2/concurrency_limits/decrement-with-lease",
                json={"lease_id": held.json()["lease_id"]},
            ).raise_for_status()
            done: set[int] = set()
            deadline = time.monotonic() + 60
            while len(done) < len(waiting) and time.monotonic() < deadline:  # one slot: each in turn
                for i, (_, got) in enumerate(waiting):
                    if i not in done and "release" in got:
                        permit = got["release"]
                        assert isinstance(permit, Permit)
                        permit.release()
                        done.add(i)
                time.sleep(0.05)
            assert len(done) == len(waiting)
    finally:
        for name in (conc, rate):
            httpx.delete(f"{api_url}/v2/concurrency_limits/{name}")


# --------------------------------------------------------------------------- limits not in force
# Prefect grants every ask on an inactive limit and answers an ask on a deleted one with no limit:
# neither may leave a process unlimited. The process's own numbers (here 1 at a time, 1/s) hold
# in every such case, at the start or mid-run; a limit that would stop every request, or limits
# that cannot be read, stop the requests with one line. Counted at the loopback upstream.

OWN_N, OWN_R = 1, 1.0


def _own_settings(up: UpstreamServer, n: int = OWN_N, r: float = OWN_R) -> Settings:
    return Settings(
        bls_base_url=up.bls_base_url,
        population_url=up.population_url,
        contact="tests@example.com",
        bls_max_concurrent_requests=n,
        bls_requests_per_second=r,
        retries=0,
    )


def _set_limits(api_url: str, conc: dict, rate: dict) -> None:
    """The two BLS limits as given (created afresh), e.g. `{"limit": 1, "active": False}`."""
    for name, body in ((BLS_CONCURRENCY_LIMIT, conc), (BLS_RATE_LIMIT, rate)):
        httpx.delete(f"{api_url}/v2/concurrency_limits/{name}")
        _post(f"{api_url}/v2/concurrency_limits/", {"name": name, **body}).raise_for_status()


def _patch(api_url: str, name: str, **body: object) -> None:
    httpx.patch(f"{api_url}/v2/concurrency_limits/{name}", json=body).raise_for_status()


def _files(count: int) -> dict:
    return {"aa": {f"f{i}.txt": b"x" * 100 for i in range(count)}}


def _get_all(client: httpx.Client, up: UpstreamServer, names: list[str]) -> list[object]:
    """GET each name at once (one thread each); each status code, or the exception raised."""
    from concurrent.futures import ThreadPoolExecutor

    def one(name: str) -> object:
        try:
            return client.get(up.survey_url("aa") + name).status_code
        except Exception as exc:
            return exc

    import contextvars

    with ThreadPoolExecutor(len(names)) as pool:  # each thread with this one's Prefect settings
        jobs = [pool.submit(contextvars.copy_context().run, one, name) for name in names]
        return [job.result() for job in jobs]


def _most_in_a_second(up: UpstreamServer, since: float = 0.0) -> int:
    starts = sorted(r.started for r in up.requests if r.started >= since)
    first = most = 0
    for last, when in enumerate(starts):
        while when - starts[first] >= 1.0:
            first += 1
        most = max(most, last - first + 1)
    return most


@pytest.fixture
def prefect_at(api_url):
    """This process on the test server, its BLS limiters made afresh; the limits removed after."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    limits.reset_choices()
    try:
        with temporary_settings({PREFECT_API_URL: api_url}):
            yield api_url
    finally:
        _delete_limits(api_url)
        limits.reset_choices()


@pytest.mark.parametrize(
    ("conc", "rate"),
    [
        ({"limit": 1, "active": False}, {"limit": 1, "active": False}),  # the case
        ({"limit": 1}, {"limit": 1, "active": False}),  # only the pacer inactive: 1 at a time, unpaced
        ({"limit": 1, "active": False}, {"limit": 1}),
        ({"limit": 0, "active": False}, {"limit": 0, "active": False}),  # ignored by Prefect: not a pause
        ({"limit": 1000}, {"limit": 1000, "active": False}),
    ],
)
def test_inactive_limits_leave_the_own_limits_in_force(prefect_at, caplog, conc, rate):
    _set_limits(prefect_at, conc, rate)
    caplog.set_level("INFO", logger="flows.io.limits")
    with UpstreamServer(_files(6)) as up, make_client(_own_settings(up), up.survey_url("aa")) as client:
        got = _get_all(client, up, sorted(up.files("aa")))
        assert got == [200] * 6
        assert up.peak_concurrency() <= OWN_N and up.peak_rate() <= OWN_R, up.peak_rate()
    said = [r.getMessage() for r in caplog.records if "requests to BLS use" in r.getMessage()]
    assert len(said) == 1 and "in-process limits: 1 concurrent, 1/s" in said[0] and "INACTIVE" in said[0], (
        said
    )


def test_limits_made_inactive_mid_run_leave_the_own_limits_in_force(prefect_at, caplog):
    _set_limits(prefect_at, {"limit": 1}, {"limit": 1})
    caplog.set_level("INFO", logger="flows.io.limits")
    with UpstreamServer(_files(10)) as up:
        settings = _own_settings(up, n=2, r=2.0)
        names = sorted(up.files("aa"))
        with make_client(settings, up.survey_url("aa")) as client:
            assert _get_all(client, up, names[:2]) == [200, 200]  # through Prefect's limits
            _patch(prefect_at, BLS_CONCURRENCY_LIMIT, active=False)
            _patch(prefect_at, BLS_RATE_LIMIT, active=False)
            since = time.monotonic()
            # Not read again yet (every 30 s): Prefect grants every ask, the own limits hold.
            assert _get_all(client, up, names[2:8]) == [200] * 6
            assert _most_in_a_second(up, since) <= 2
            limiter = limiter_for(settings)
            limiter.recheck_seconds = 0.0  # type: ignore[union-attr]  # read again at the next request
            assert _get_all(client, up, names[8:]) == [200, 200]
        assert up.peak_concurrency() <= 2
    said = [r.getMessage() for r in caplog.records if "requests to BLS" in r.getMessage()]
    assert "Prefect global limits" in said[0] and "1 concurrent" in said[0], said
    assert said[-1].startswith("requests to BLS now use in-process limits: 2 concurrent, 2/s"), said
    assert "INACTIVE" in said[-1]


def test_limits_deleted_mid_run_leave_the_own_limits_in_force(prefect_at, caplog):
    _set_limits(prefect_at, {"limit": 1}, {"limit": 1})
    caplog.set_level("INFO", logger="flows.io.limits")
    with UpstreamServer(_files(6)) as up:
        names = sorted(up.files("aa"))
        with make_client(_own_settings(up), up.survey_url("aa")) as client:
            assert _get_all(client, up, names[:1]) == [200]
            assert limits.settle(timeout=10)
            _delete_limits(prefect_at)  # the ask now names no limit: read again at once
            assert _get_all(client, up, names[1:]) == [200] * 5
        assert up.peak_concurrency() <= OWN_N and up.peak_rate() <= OWN_R
    said = [r.getMessage() for r in caplog.records if "requests to BLS now use" in r.getMessage()]
    assert len(said) == 1 and "in-process limits: 1 concurrent, 1/s" in said[0] and "missing" in said[0], said


@pytest.mark.parametrize(
    ("conc", "rate", "said"),
    [
        ({"limit": 0}, {"limit": 1}, f"{BLS_CONCURRENCY_LIMIT!r} is active with 0 slots"),  # 422 each ask
        ({"limit": 1}, {"limit": 0}, f"{BLS_RATE_LIMIT!r} is active with 0 slots"),  # a traceback before
        ({"limit": 0}, {"limit": 1, "active": False}, "is active with 0 slots"),
        ({"limit": 1, "slot_decay_per_second": 2.0}, {"limit": 1}, "decays"),
    ],
)
def test_a_limit_that_stops_every_request_is_one_line_and_nothing_is_sent(prefect_at, conc, rate, said):
    from flows.core.errors import PolitenessLimitError

    _set_limits(prefect_at, conc, rate)
    with UpstreamServer(_files(3)) as up, make_client(_own_settings(up), up.survey_url("aa")) as client:
        got = _get_all(client, up, sorted(up.files("aa")))
        assert all(isinstance(g, PolitenessLimitError) for g in got), got
        assert all(said in str(g) and "\n" not in str(g) for g in got), got
        assert up.requests == []


def test_a_limit_set_to_zero_mid_run_stops_the_requests_in_one_line(prefect_at):
    from flows.core.errors import PolitenessLimitError

    _set_limits(prefect_at, {"limit": 1}, {"limit": 1})
    with UpstreamServer(_files(2)) as up, make_client(_own_settings(up), up.survey_url("aa")) as client:
        first, second = sorted(up.files("aa"))
        assert client.get(up.survey_url("aa") + first).status_code == 200
        _patch(prefect_at, BLS_CONCURRENCY_LIMIT, limit=0)  # an operator's pause
        with pytest.raises(PolitenessLimitError, match="is active with 0 slots: no request") as raised:
            client.get(up.survey_url("aa") + second)
        assert "\n" not in str(raised.value)
        assert len(up.requests) == 1


def test_huge_limits_are_the_operators_choice_and_the_own_rate_holds(prefect_at):
    _set_limits(prefect_at, {"limit": 10**9}, {"limit": 10**9})
    with (
        UpstreamServer(_files(6)) as up,
        make_client(_own_settings(up, n=2, r=2.0), up.survey_url("aa")) as client,
    ):
        assert _get_all(client, up, sorted(up.files("aa"))) == [200] * 6
        assert up.peak_concurrency() <= 2 and up.peak_rate() <= 2
    started = time.monotonic()
    assert limits.settle(timeout=10)  # each pacer slot back a second after its answer, not in years
    assert time.monotonic() - started < 5


class _Proxy:
    """A loopback proxy in front of the test server that answers `fault` instead for paths
    containing `match` (a Prefect API in trouble: 5xx, a login page, a denial)."""

    def __init__(self, target: str):
        import http.server
        import threading

        self.target, self.fault, self.match = target.rstrip("/"), None, "/v2/concurrency_limits/"
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                path = self.path.removeprefix("/api")
                retry_after: str | None = None
                if proxy.fault is not None and proxy.match in path and self.command == "GET":
                    status, content_type, text = proxy.fault
                    answer = text.encode()
                    retry_after = "0"  # Prefect's client retries a 503 at once: the fault stays fast
                else:
                    with httpx.Client(timeout=30) as client:
                        got = client.request(
                            self.command,
                            proxy.target + path,
                            content=body,
                            headers={"Content-Type": self.headers.get("Content-Type", "application/json")},
                        )
                    status, content_type, answer = (
                        got.status_code,
                        got.headers.get("Content-Type", ""),
                        got.content,
                    )
                    retry_after = got.headers.get("Retry-After")  # a busy server's own 503
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                if retry_after is not None:
                    self.send_header("Retry-After", retry_after)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_GET = do_POST = do_PATCH = do_DELETE = _any

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize(
    ("fault", "said"),
    [
        ((500, "application/json", '{"detail": "boom"}'), "could not be read for the BLS limits in 3 tries"),
        ((503, "text/plain", "down for maintenance"), "could not be read"),
        ((401, "application/json", '{"detail": "bad key"}'), "could not be read"),
        ((200, "text/html", "<html>sign in</html>"), "could not be read"),  # not JSON
        ((200, "application/json", '{"limit": 1}'), "does not read as a limit"),
    ],
)
def test_limits_that_cannot_be_read_stop_the_requests_never_the_own_rate(api_url, monkeypatch, fault, said):
    """The other processes may be keeping to the limits: this one going on its own R would make N
    processes send N x R. The reads are retried; once the API answers again, the limits hold."""
    from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES, temporary_settings

    from flows.core.errors import PolitenessLimitError

    monkeypatch.setattr(limits, "READ_PAUSE_SECONDS", 0.05)
    proxy = _Proxy(api_url)
    proxy.fault = fault
    limits.reset_choices()
    _set_limits(api_url, {"limit": 1}, {"limit": 1})
    try:
        with (
            # Prefect's own retries stay on (a loaded server answers 503 to the asks after the
            # recovery too); the faults carry Retry-After: 0, so they cost no backoff.
            temporary_settings({PREFECT_API_URL: proxy.url, PREFECT_CLIENT_MAX_RETRIES: 3}),
            UpstreamServer(_files(3)) as up,
        ):
            settings = _own_settings(up, n=4, r=4.0)
            with make_client(settings, up.survey_url("aa")) as client:
                first, *rest = sorted(up.files("aa"))
                with pytest.raises(PolitenessLimitError) as raised:
                    client.get(up.survey_url("aa") + first)
                assert said in str(raised.value) and "\n" not in str(raised.value)
                assert up.requests == []
                proxy.fault = None
                limiter_for(settings).recheck_seconds = 0.0  # type: ignore[union-attr]
                assert _get_all(client, up, rest) == [200, 200]
            assert up.peak_concurrency() <= 1  # Prefect's limit of 1, not the own 4
    finally:
        assert limits.settle(timeout=10)  # the pacer slot goes back through the proxy
        proxy.close()
        _delete_limits(api_url)
        limits.reset_choices()
