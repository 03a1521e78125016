"""`quest sync / population / run`: in-process for the outputs, a subprocess for what a user sees."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from flows.cli import main
from flows.devkit.samples import population_body, sample_bls_survey
from flows.devkit.upstream_server import UpstreamServer
from flows.io.store import LocalStore


@pytest.fixture
def upstream():
    with UpstreamServer({"pr": sample_bls_survey("pr", seed=2)}, population_body()) as up:
        yield up


@pytest.fixture
def env(monkeypatch, upstream, tmp_path):
    monkeypatch.setenv("QUEST_BLS_BASE_URL", upstream.bls_base_url)
    monkeypatch.setenv("QUEST_POPULATION_URL", upstream.population_url)
    monkeypatch.setenv("QUEST_STORE", str(tmp_path / "data"))
    monkeypatch.setenv("QUEST_RETRY_DELAY_SECONDS", "0.01")
    return LocalStore(tmp_path / "data")


def test_sync_dry_run_then_sync_then_run(prefect_harness, upstream, env, capsys):
    names = sorted(upstream.files("pr"))
    assert main(["sync", "--dry-run", "--survey", "pr"]) == 0
    out = capsys.readouterr().out
    assert f"would add {len(names)}" in out and all(f"add    {n}" in out for n in names)
    assert env.list_keys() == []

    assert main(["sync"]) == 0
    assert f"pr: {len(names)} added, 0 updated, 0 deleted, 0 kept" in capsys.readouterr().out
    assert len(env.list_keys("bls/pr/")) == len(names)

    assert main(["run"]) == 0
    out = capsys.readouterr().out
    assert f"pr: 0 added, 0 updated, 0 deleted, {len(names)} kept, 0 B" in out
    assert "population snapshot: population/" in out and "(10 years, 2013-2023)" in out

    assert main(["population"]) == 0
    assert "population snapshot: " + str(env.root / "population") in capsys.readouterr().out


def test_mass_delete_guard_exits_1_with_one_line(prefect_harness, upstream, env, capsys):
    assert main(["sync"]) == 0
    for name in sorted(upstream.files("pr"))[:-2]:
        upstream.remove_file("pr", name)
    capsys.readouterr()
    assert main(["sync"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("quest sync: error: pr: the listing would delete")
    assert main(["sync", "--allow-mass-delete"]) == 0
    assert len(env.list_keys("bls/pr/")) == 2


def _quest(args, env_overrides):
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEST_")}
    env.update(env_overrides)
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_cli_subprocess_failures_are_one_line(prefect_harness, upstream, tmp_path):
    from prefect.settings import get_current_settings

    # BLS itself without a contact: refused before anything runs, with the fix in the message.
    done = _quest(["sync"], {"QUEST_STORE": str(tmp_path / "d")})
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert "QUEST_CONTACT" in done.stderr and "download.bls.gov" in done.stderr

    # A refused listing inside the flow: the flow's logs, then one line; no traceback anywhere.
    upstream.fail("/pub/time.series/pr/", 403, times=None)
    env = {
        "QUEST_STORE": str(tmp_path / "d"),
        "QUEST_BLS_BASE_URL": upstream.bls_base_url,
        "PREFECT_API_URL": str(get_current_settings().api.url),
    }
    done = _quest(["sync"], env)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("quest sync: error: GET " + upstream.survey_url("pr")) and "HTTP 403" in last


def test_transfer_progress_reaches_the_sink(prefect_harness, upstream, env):
    import io

    from rich.console import Console

    from flows.ingest import mirror_survey
    from flows.progress import RichProgress, use_sink

    events: list[tuple[str, str, int]] = []

    class Recorder:
        def start(self, name, total):
            events.append(("start", name, total))

        def advance(self, name, n):
            events.append(("advance", name, n))

        def finish(self, name):
            events.append(("finish", name, 0))

    with use_sink(Recorder()):  # the task threads inherit the sink
        mirror_survey("pr")
    sizes = {n: len(b) for n, b in upstream.files("pr").items()}
    assert {(n, t) for kind, n, t in events if kind == "start"} == set(sizes.items())
    assert {n for kind, n, _ in events if kind == "finish"} == set(sizes)
    for name, size in sizes.items():
        assert sum(k for kind, n, k in events if kind == "advance" and n == name) == size

    out = io.StringIO()
    with RichProgress(Console(file=out, force_terminal=True, width=100)) as bars:
        bars.start("pr.x", 10)
        bars.advance("pr.x", 4)
        bars.finish("pr.x")
    assert "pr.x" in out.getvalue()
