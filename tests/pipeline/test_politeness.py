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
from flows.io.limits import InProcessLimiter, Permit, PrefectLimiter, limiter_for
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


def test_the_choice_follows_what_the_api_holds(api_url, monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    settings = Settings(contact="tests@example.com", bls_max_concurrent_requests=3, bls_requests_per_second=R)
    limits.reset_choices()
    try:
        with temporary_settings({PREFECT_API_URL: api_url}):
            absent = limiter_for(settings)
            assert isinstance(absent, InProcessLimiter) and (absent.max_concurrent, absent.per_second) == (
                3,
                R,
            )
            _create_limits(api_url)
            assert limiter_for(settings) is absent  # decided once (cached)
            limits.reset_choices()
            present = limiter_for(settings)
            assert isinstance(present, PrefectLimiter)
            assert f"{N} concurrent, {R:g}/s" in present.description
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


def test_an_unreachable_api_falls_back_to_the_in_process_limiter(tmp_path: Path):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    limits.reset_choices()
    try:
        with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
            assert isinstance(limiter_for(Settings(contact="tests@example.com")), InProcessLimiter)
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
