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
from pathlib import Path

import httpx
import pytest
from lambda_pool import prefect_server, quiet_env

from flows.core.names import BLS_CONCURRENCY_LIMIT, BLS_RATE_LIMIT
from flows.devkit.upstream_server import GeneratedFile, UpstreamServer
from flows.io import limits
from flows.io.limits import InProcessLimiter, PrefectLimiter, limiter_for
from flows.settings import Settings

N, R = 2, 4.0
FILES = 7  # per survey; with the listing, 8 requests each


@pytest.fixture(scope="module")
def api_url(tmp_path_factory):
    with prefect_server(tmp_path_factory.mktemp("prefect-home")) as url:
        yield url


def _create_limits(api_url: str) -> None:
    for body in (
        {"name": BLS_CONCURRENCY_LIMIT, "limit": N},
        {"name": BLS_RATE_LIMIT, "limit": 1, "slot_decay_per_second": R},
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
            assert up.peak_rate() <= R + 1  # one more for the window's edge
            # Both processes were in flight together, and every slot came back.
            spans = {s: [r for r in gets if f"/{s}/" in r.path] for s in surveys}
            assert min(r.started for r in spans["bb"]) < max(r.ended for r in spans["aa"])
            assert min(r.started for r in spans["aa"]) < max(r.ended for r in spans["bb"])
        held = httpx.get(f"{api_url}/v2/concurrency_limits/{BLS_CONCURRENCY_LIMIT}").json()["active_slots"]
        assert held == 0
        for survey, files in surveys.items():
            folder = tmp_path / "data" / "bls" / survey
            stored = [p.name for p in folder.iterdir() if not p.name.startswith(".")]  # not the lease
            assert sorted(stored) == sorted(files)
    finally:
        _delete_limits(api_url)


def test_the_choice_follows_what_the_api_holds(api_url, monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    settings = Settings(
        contact="tests@example.com", bls_max_concurrent_requests=3, bls_requests_per_second=1.5
    )
    limits.reset_choices()
    try:
        with temporary_settings({PREFECT_API_URL: api_url}):
            absent = limiter_for(settings)
            assert isinstance(absent, InProcessLimiter) and (absent.max_concurrent, absent.per_second) == (
                3,
                1.5,
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


def test_an_unreachable_api_falls_back_to_the_in_process_limiter(tmp_path: Path):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    limits.reset_choices()
    try:
        with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
            assert isinstance(limiter_for(Settings(contact="tests@example.com")), InProcessLimiter)
    finally:
        limits.reset_choices()
